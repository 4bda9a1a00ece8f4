"""Data-parallel runs (torchrun, accelerate launch): rank, world size, a scratch directory every rank shares.

Under a launcher every rank trains and only rank 0 writes the output; these helpers are what finetune and
prune's recovery need for that, and nothing in them runs (or imports torch.distributed state) in a plain run.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from edgesent.artifacts import atomic_output_dir, check_output_dir, scratch_dir
from edgesent.config.train import TrainConfig


def process_group(device: str) -> tuple[int, int]:
    """(rank, world size): (0, 1) for a plain run; under torchrun or accelerate launch the process group is
    started here (gloo on CPU, nccl on CUDA, through accelerate as the Trainer would) so ranks can agree on a
    checkpoint directory before training."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    from accelerate import PartialState

    state = PartialState(cpu=device == "cpu")
    return state.process_index, state.num_processes


def barrier(world: int) -> None:
    if world > 1:
        torch.distributed.barrier()


@contextlib.contextmanager
def no_output() -> Iterator[None]:
    """What ranks other than 0 write: nothing."""
    yield None


def rank_output(
    out_dir: Path, overwrite: bool, sources: Iterable[str | Path], rank: int
) -> contextlib.AbstractContextManager[Path | None]:
    """Rank 0's atomic output directory, nothing for the other ranks.

    Every rank checks the directory first, so an output that may not be written (it exists without --overwrite)
    ends every rank with the same one-line error, rather than rank 0 alone while the others die in a collective.
    """
    sources = list(sources)
    check_output_dir(out_dir, overwrite, sources)
    return atomic_output_dir(out_dir, overwrite=overwrite, sources=sources) if rank == 0 else no_output()


def rank0_says(value: bool, world: int) -> bool:
    """Rank 0's ``value``, on every rank: a decision taken on one clock (a search's deadline) that every rank
    must act on together, or their collectives stop matching and the job hangs."""
    if world == 1:
        return value
    holder: list[Any] = [bool(value)]
    torch.distributed.broadcast_object_list(holder, src=0)
    return bool(holder[0])


@contextlib.contextmanager
def shared_scratch(purpose: str, rank: int, world: int) -> Iterator[Path]:
    """A scratch directory every rank uses: rank 0 makes it (and removes it), the others learn its path.

    The Trainer saves checkpoints on rank 0 and every rank loads the best one at the end, so they must share it.
    """
    if world == 1:
        with scratch_dir(purpose) as path:
            yield path
        return
    holder: list[Any] = [None]
    with scratch_dir(purpose) if rank == 0 else contextlib.nullcontext(None) as path:
        holder[0] = str(path) if path is not None else None
        torch.distributed.broadcast_object_list(holder, src=0)
        try:
            yield Path(holder[0])
        finally:
            torch.distributed.barrier()  # every rank is done with it before rank 0 removes it


def distributed_info(cfg: TrainConfig, world: int) -> dict[str, Any]:
    """World size, backend and batch sizes, so a run launched on N devices says so."""
    backend = torch.distributed.get_backend() if world > 1 else None
    return {
        "world_size": world,
        "backend": backend,
        "per_device_batch_size": cfg.batch_size,
        "global_batch_size": cfg.batch_size * world * cfg.grad_accum,
        "launcher": "torchrun" if "TORCHELASTIC_RUN_ID" in os.environ else ("env" if world > 1 else None),
    }
