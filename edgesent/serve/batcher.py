"""Dynamic batching: concurrent requests for one model are merged into one model call, then split back.

One worker task per model takes the oldest waiting request, lets others join it for up to ``max_wait_ms`` (or
until ``max_batch`` texts), runs the merged texts through the model in a dedicated thread, and hands each request
exactly its own slice of the results. The model call runs in that thread, never on the event loop, so health
checks and metrics answer while the model computes; and one thread per model means one model call at a time, which
is what lets requests pile up into the next batch while the current one runs. The number of waiting texts is
bounded: past ``max_queue`` a request is refused with :class:`QueueFullError` (429) instead of growing memory.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any


logger = logging.getLogger(__name__)

PredictFn = Callable[[list[str]], list[dict[str, Any]]]
ObserveFn = Callable[[int, float, Sequence[dict[str, Any]]], None]


class QueueFullError(Exception):
    """The model's queue holds ``max_queue`` texts already; the caller should retry later (HTTP 429)."""


class BatcherClosedError(Exception):
    """The server is shutting down and takes no new work (HTTP 503)."""


@dataclass
class _Job:
    texts: list[str]
    future: asyncio.Future[list[dict[str, Any]]]


class DynamicBatcher:
    """Merges concurrent :meth:`submit` calls for one model into model calls of at most ``max_batch`` texts.

    Args:
        name: the model's name (thread name, logs).
        predict: texts -> one result dict per text, in order; called in the batcher's thread.
        max_batch: most texts per model call; a single request with more texts runs alone, as one call.
        max_wait_ms: how long the oldest waiting request waits for others to join (0: take what is queued now).
        max_queue: most texts waiting (not yet in a model call); beyond it :meth:`submit` raises QueueFullError.
        merge: False runs each request as its own model call (batching off), still one call at a time.
        observe: called after each model call with (texts in the call, seconds it took, its results).
        on_queue: called with the number of waiting texts whenever it changes.
    """

    def __init__(
        self,
        name: str,
        predict: PredictFn,
        max_batch: int = 64,
        max_wait_ms: float = 5.0,
        max_queue: int = 2048,
        merge: bool = True,
        observe: ObserveFn | None = None,
        on_queue: Callable[[int], None] | None = None,
    ) -> None:
        self.name = name
        self._predict = predict
        self._max_batch = max_batch
        self._max_wait_s = max_wait_ms / 1000.0
        self._max_queue = max_queue
        self._merge = merge
        self._observe = observe
        self._on_queue = on_queue
        self._pending: collections.deque[_Job] = collections.deque()
        self._queued = 0
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        # One thread per model: the model runs off the event loop, one call at a time.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"edgesent-model-{name}")

    @property
    def queued(self) -> int:
        """Texts waiting for a model call."""
        return self._queued

    def start(self) -> None:
        """Start the worker task on the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._work(), name=f"batcher-{self.name}")

    async def run_direct(self, texts: list[str]) -> list[dict[str, Any]]:
        """Run texts through the model in the batcher's thread, bypassing the queue (the warm-up call)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._predict, texts)

    def submit(self, texts: list[str]) -> asyncio.Future[list[dict[str, Any]]]:
        """Queue texts for the next batch; the future resolves to one result per text, in order.

        Raises:
            QueueFullError: the queue holds ``max_queue`` texts already (or these would overflow it).
            BatcherClosedError: the batcher is shutting down.
        """
        if self._closing:
            raise BatcherClosedError(f"model {self.name!r} is shutting down")
        if self._queued + len(texts) > self._max_queue:
            raise QueueFullError(f"model {self.name!r} has {self._queued} texts waiting (limit {self._max_queue})")
        future: asyncio.Future[list[dict[str, Any]]] = asyncio.get_running_loop().create_future()
        if not texts:  # nothing to predict: no model call, and no batch of size 0 in the metrics
            future.set_result([])
            return future
        self._pending.append(_Job(texts, future))
        self._set_queued(self._queued + len(texts))
        self._wakeup.set()
        return future

    async def stop(self) -> None:
        """Finish every queued request, then stop the worker and its thread."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
            self._task = None
        self._executor.shutdown(wait=True)

    def _set_queued(self, value: int) -> None:
        self._queued = value
        if self._on_queue is not None:
            self._on_queue(value)

    def _head(self) -> _Job | None:
        """The oldest job whose caller still waits, left in the queue.

        Jobs of callers that gave up (timed out or cancelled) are dropped on the way, so the job whose size
        decides whether it fits a batch is the one that is then taken.
        """
        while self._pending and self._pending[0].future.done():
            self._set_queued(self._queued - len(self._pending.popleft().texts))
        return self._pending[0] if self._pending else None

    def _pop(self) -> _Job:
        """Take the head job (checked live by :meth:`_head` just before) out of the queue."""
        job = self._pending.popleft()
        self._set_queued(self._queued - len(job.texts))
        return job

    async def _collect(self) -> list[_Job]:
        """Jobs for one model call: the oldest one, plus those that fit and arrive within max_wait_ms."""
        if self._head() is None:
            return []
        first = self._pop()
        batch, size = [first], len(first.texts)
        if not self._merge:
            return batch
        deadline = time.perf_counter() + self._max_wait_s
        while size < self._max_batch:
            head = self._head()
            if head is None:
                remaining = deadline - time.perf_counter()
                if remaining <= 0 or self._closing:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except asyncio.TimeoutError:
                    break
                continue
            if size + len(head.texts) > self._max_batch:
                break  # it leads the next batch instead
            batch.append(self._pop())
            size += len(head.texts)
        return batch

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            # callers that gave up while the batch gathered are not predicted for
            batch = [job for job in await self._collect() if not job.future.done()]
            if not batch:
                continue
            texts = [text for job in batch for text in job.texts]
            started = time.perf_counter()
            try:
                rows = await loop.run_in_executor(self._executor, self._predict, texts)
            except Exception as err:  # every caller of the batch gets the error; the worker lives on
                logger.exception("model %r failed on a batch of %d texts", self.name, len(texts))
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(err)
                continue
            if self._observe is not None:
                self._observe(len(texts), time.perf_counter() - started, rows)
            start = 0
            for job in batch:
                end = start + len(job.texts)
                if not job.future.done():  # a caller that timed out is gone; its rows are dropped
                    job.future.set_result(rows[start:end])
                start = end
