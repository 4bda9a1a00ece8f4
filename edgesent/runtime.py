"""The embeddable predictor: ONNX Runtime + tokenizers + numpy, and nothing heavier.

An app ships an export directory (``edgesent export``) and this module. Importing it and predicting never
imports torch or transformers, so a process that only classifies text starts in a fraction of a second and
stays around 100 MB. Tokenization uses the ``tokenizers`` library on the directory's ``tokenizer.json`` with
the training tokenizer's truncation, padding and special tokens, so the ONNX model sees the same token ids
the PyTorch model was trained on.

Both tasks of the manifest are served: a classifier (``text-classification``) returns a label per text; a span
model (``token-classification``, BIO tags per token) returns per text a list of spans in character offsets of
the original string, decoded from the tokenizer's offsets and word ids by :func:`edgesent.tasks.spans.decode_spans`.
Batching, padding and length-sorting are shared; only the decoding of a batch's outputs differs.

Typical use::

    predictor = Predictor.load("models/sst2-int8")
    predictor.predict("a charming and often affecting journey")   # Prediction(label='positive', ...)
    Predictor.load("models/aspects").predict("great battery, awful screen").spans
    # [{'text': 'battery', 'start': 6, 'end': 13, 'label': 'positive', 'score': 0.93}, ...]
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np
from tokenizers import Encoding, Tokenizer

from edgesent.artifacts import KIND_ONNX, TASK_CLASSIFY, TASK_SPANS, read_model_dir
from edgesent.config.predictor import MAX_BATCH_SIZE, PredictorConfig
from edgesent.errors import ConfigError, DataError, ModelError
from edgesent.metrics import softmax
from edgesent.predictor_tokenizer import load_predictor_tokenizer
from edgesent.sessions import (
    Session,
    choose_provider,
    create_session,
    run_on_device,
    session_device,
    session_runtime,
)
from edgesent.tasks.spans import decode_spans, extend_cut_word


logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 32
# Texts are tokenized and length-sorted this many batches at a time: enough for batches of similar lengths,
# small enough that a million-text call never holds a million encodings at once.
SORT_WINDOW_BATCHES = 16
EMPTY_TEXT = "empty text"
_TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_INT_DTYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}
# One decoded row: (label, score, scores, spans), the per-task part of a Prediction.
_Decoded = tuple[str | None, float | None, dict[str, float], list[dict[str, Any]] | None]


@dataclass(frozen=True)
class Prediction:
    """One text's result.

    Attributes:
        label: the most probable label (classification; None for a span model).
        score: its probability (None for a span model).
        scores: label -> probability; every label in class-id order, or with ``top_k`` the k most
            probable labels, most probable first (empty for a span model).
        truncated: the text was longer than ``max_length`` tokens and only its start was classified.
        unknown_tokens: tokens the vocabulary does not know (``[UNK]``): a rising count in production means
            the input language or domain moved away from what the model was trained on.
        error: why the input got no prediction (:meth:`Predictor.predict_stream` only: empty text, not a
            string); label and score are then None, and a span model's ``spans`` is empty.
        spans: a span model's spans in text order, each ``{"text", "start", "end", "label", "score"}`` with
            ``text == original[start:end]`` (character offsets of the string given, not of the normalised or
            tokenized text); None for a classifier, whose rows have no spans.
    """

    label: str | None
    score: float | None
    scores: dict[str, float]
    truncated: bool = False
    unknown_tokens: int = 0
    error: str | None = None
    spans: list[dict[str, Any]] | None = None

    @classmethod
    def failed(cls, error: str, spans: bool = False) -> Prediction:
        """The row of an input that could not be predicted; ``spans=True`` for a span model's (empty spans)."""
        return cls(None, None, {}, error=error, spans=[] if spans else None)

    def to_dict(self) -> dict[str, Any]:
        """The prediction as a JSON-able dict (a copy: mutating it leaves the prediction alone).

        A classifier's row is ``{label, score, scores, truncated, unknown_tokens}``; a span model's is
        ``{spans, truncated, unknown_tokens}``. ``error`` appears only on a row that has one, as in
        ``edgesent predict --json``.
        """
        row: dict[str, Any]
        if self.spans is None:
            row = {"label": self.label, "score": self.score, "scores": dict(self.scores)}
        else:
            row = {"spans": [dict(span) for span in self.spans]}
        row["truncated"] = self.truncated
        row["unknown_tokens"] = self.unknown_tokens
        if self.error is not None:
            row["error"] = self.error
        return row


class Predictor:
    """Predicts with an exported ONNX model (classifier or span model); safe to call from several threads at once.

    Build one with :meth:`Predictor.load`. Every attribute is fixed after loading: the tokenizer's truncation
    is set once (mutating it per call would race between threads) and padding is done here in numpy, per
    batch, so concurrent calls share nothing mutable. ``InferenceSession.run`` is thread-safe and
    ``Tokenizer.encode_batch`` releases the GIL, so threads overlap tokenization and inference.

    Attributes:
        labels: label names, index = class id; a span model's span labels (sorted).
        tags: a span model's BIO tags, index = output id; None for a classifier.
        task: ``"text-classification"`` or ``"token-classification"`` (spans).
        max_length: tokens per text, special tokens included; longer texts are truncated.
        session: the ``onnxruntime.InferenceSession``, or an ``edgesent.sessions.OpenVINOSession``.
        provider: the device that runs the model (``"cuda"`` or ``"cpu"``).
        runtime: the runtime that runs it (``"onnxruntime"`` or ``"openvino"``).
        model_dir: the export directory.
        manifest: its ``edgesent.json``.
    """

    def __init__(
        self,
        session: Session,
        tokenizer: Tokenizer,
        labels: list[str],
        max_length: int,
        pad_id: int = 0,
        pad_right: bool = True,
        model_dir: Path | None = None,
        manifest: dict[str, Any] | None = None,
        tags: Sequence[str] | None = None,
    ) -> None:
        """Wrap a ready session and tokenizer; most callers want :meth:`Predictor.load` instead.

        Args:
            session: an ONNX Runtime (or OpenVINO) session whose inputs are among input_ids, attention_mask, token_type_ids.
            tokenizer: a ``tokenizers.Tokenizer`` with truncation already set and padding off.
            labels: label names, index = class id.
            max_length: the tokenizer's truncation length.
            pad_id: token id written into padding positions.
            pad_right: pad at the end of each row (False: at the start, for left-padding tokenizers).
            model_dir: where the model came from (for messages).
            manifest: the directory's manifest.
            tags: a span model's BIO tags, index = output id (default None: a classifier, outputs = labels).

        Raises:
            ModelError: the session needs an input this predictor cannot make, or its output width
                disagrees with the number of labels (tags).
        """
        self.session = session
        self.labels = list(labels)
        self.tags = None if tags is None else list(tags)
        self.task = TASK_CLASSIFY if tags is None else TASK_SPANS
        units = self.labels if self.tags is None else self.tags  # what the output columns mean
        self.max_length = int(max_length)
        self.model_dir = model_dir
        self.manifest = manifest or {}
        self._tokenizer = tokenizer
        self._pad_id = pad_id
        self._pad_right = pad_right
        unk_token = getattr(tokenizer.model, "unk_token", None)
        self._unk_id = tokenizer.token_to_id(unk_token) if isinstance(unk_token, str) else None
        where = model_dir or "model"
        self._inputs: list[tuple[str, type]] = []
        for node in session.get_inputs():
            if node.name not in _TEXT_INPUTS or node.type not in _INT_DTYPES:
                raise ModelError(
                    f"{where}: model input {node.name!r} ({node.type}) is not one of "
                    f"{', '.join(_TEXT_INPUTS)} as int64/int32; re-export it with edgesent export"
                )
            self._inputs.append((node.name, _INT_DTYPES[node.type]))
        outputs = session.get_outputs()
        logits = next((node for node in outputs if node.name == "logits"), outputs[0])
        width = logits.shape[-1] if logits.shape else None
        if isinstance(width, int) and width != len(units):
            what = "labels" if self.tags is None else "tags"
            raise ModelError(f"{where}: the model outputs {width} classes but the manifest lists {len(units)} {what}")
        self._output_names = [logits.name]
        self.provider = session_device(session)
        self.runtime = session_runtime(session)
        # On CUDA, bind inputs and outputs to device buffers ourselves (one copy each way per batch);
        # on CPU the plain run() already works on the numpy arrays in place.
        self._io_binding = self.provider == "cuda"

    @classmethod
    def load(
        cls,
        path: str | Path,
        provider: str = "auto",
        threads: int | None = None,
        graph_optimization: str = "all",
        verify: bool = True,
        spinning: bool = True,
    ) -> Predictor:
        """Load an export directory (``model.onnx``, ``tokenizer.json``, ``edgesent.json``).

        Args:
            path: the directory written by ``edgesent export``.
            provider: ``"auto"`` (default: OpenVINO for a model exported for it, when the ``openvino`` extra is
                installed, else ONNX Runtime with one warning; otherwise CUDA when onnxruntime-gpu and a GPU are
                present, else CPU), ``"cpu"``, ``"cuda"`` (fails if CUDA is not available rather than silently
                running on CPU) or ``"openvino"`` (OpenVINO on the CPU, any export; fails without the extra).
            threads: ONNX Runtime intra-op threads (default None: ONNX Runtime's choice, one per core).
            graph_optimization: ``"disable"``, ``"basic"``, ``"extended"`` or ``"all"`` (default).
            verify: check every file's sha256 and the manifest's own content hash (labels included) against
                the manifest (default True). Skip it only for a model you changed on purpose; a modified or
                truncated file, or an edited label map, is refused.
            spinning: ONNX Runtime threads spin-wait between calls (default True: lowest latency); False on a
                shared machine.

        Returns:
            A ready predictor for the manifest's task (classification, or spans for ``token-classification``).

        Raises:
            ConfigError: a bad setting, or ``provider="cuda"`` without a usable CUDA provider.
            MissingDependencyError: ``provider="openvino"`` without the ``openvino`` extra.
            ModelError: not an ONNX export directory, a file is missing, modified or truncated, or ONNX Runtime
                cannot load the model.
        """
        cfg = PredictorConfig(provider, threads, graph_optimization, verify, spinning)
        info = read_model_dir(path, kind=KIND_ONNX, verify=cfg.verify)
        if info.manifest.get("verified") is False:  # kept by export --keep-unverified, for inspection
            logger.warning("%s failed its parity gate (manifest: verified false): inspect it, do not ship it", path)
        model_dir, manifest, labels, max_length = info.path, info.manifest, list(info.labels), info.max_length
        tokenizer, pad_id, pad_right = load_predictor_tokenizer(model_dir, max_length)
        provider = choose_provider(cfg.provider, info.runtime)
        session = create_session(info.model_path, provider, cfg.threads, cfg.graph_optimization, cfg.spinning)
        predictor = cls(session, tokenizer, labels, max_length, pad_id, pad_right, model_dir, manifest, info.tags)
        logger.info(
            "loaded %s (%s, %s, %d labels, max_length %d) on %s (%s)",
            model_dir,
            info.task,
            info.precision,
            len(labels),
            max_length,
            predictor.provider,
            predictor.runtime,
        )
        return predictor

    @overload
    def predict(self, texts: str, batch_size: int = ..., top_k: int | None = ...) -> Prediction: ...  # type: ignore[overload-overlap]

    @overload
    def predict(self, texts: Sequence[str], batch_size: int = ..., top_k: int | None = ...) -> list[Prediction]: ...

    def predict(
        self, texts: str | Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE, top_k: int | None = None
    ) -> Prediction | list[Prediction]:
        """Classify one text or many, or find a span model's spans in them.

        Args:
            texts: a string (returns one Prediction) or a sequence of strings (returns a list, in input order).
            batch_size: texts per ONNX Runtime call (default 32). Texts are sorted by length first so each batch
                pads only to its own longest text; the results come back in input order.
            top_k: keep only the k most probable labels in ``scores``, most probable first (default None: every
                label, in class-id order). Values above the number of labels mean every label. A span model
                refuses it (its rows have no label scores).

        Returns:
            A Prediction for a string, else a list of Predictions; a span model's have ``spans`` set.

        Raises:
            ConfigError: a bad batch_size or top_k, or any top_k for a span model.
            DataError: an item of ``texts`` is not a string, or holds lone surrogates (not valid Unicode).
        """
        single = isinstance(texts, str)
        batch = [texts] if isinstance(texts, str) else _as_text_list(texts)
        k = self._check_top_k(top_k)
        preds: list[Prediction] = [None] * len(batch)  # type: ignore[list-item]  # every slot is filled below
        for rows, encodings, outputs in self._batches(batch, batch_size):
            flags = zip(self._truncated(encodings).tolist(), self._unknown(encodings).tolist())
            if self.tags is None:
                decoded = self._decode_labels(outputs, k)
            else:
                decoded = self._decode_spans([batch[i] for i in rows], encodings, outputs)
            for i, (label, score, scores, spans), (cut, unk) in zip(rows, decoded, flags):
                preds[i] = Prediction(label, score, scores, cut, unk, spans=spans)
        return preds[0] if single else preds

    def predict_stream(
        self, texts: Iterable[Any], batch_size: int = DEFAULT_BATCH_SIZE, top_k: int | None = None
    ) -> Iterator[Prediction]:
        """Predict a stream of untrusted inputs: one Prediction per input, in input order, in constant memory.

        The one prediction loop behind ``edgesent predict``, the server and the distributed engines. Inputs are
        read a window at a time (``batch_size * SORT_WINDOW_BATCHES``), length-sorted and batched inside it
        as :meth:`predict` does, so a billion-row iterator never sits in memory. An input that cannot be
        classified (None, not a string, empty or whitespace only, lone surrogates) gets a Prediction with
        ``error`` set and no label, and never reaches the model; it does not stop the stream.

        Args:
            texts: any iterable (a generator, a file reader, a pandas column).
            batch_size: texts per ONNX Runtime call (default 32).
            top_k: as in :meth:`predict`.

        Yields:
            One Prediction per input.

        Raises:
            ConfigError: a bad batch_size or top_k (before anything is read).
        """
        self._check_top_k(top_k)
        _check_batch_size(batch_size)
        for window in _windows(texts, batch_size * SORT_WINDOW_BATCHES):
            problems = [input_problem(text) for text in window]
            usable = [text for text, problem in zip(window, problems) if problem is None]
            predictions = iter(self.predict(usable, batch_size, top_k) if usable else [])
            for problem in problems:
                yield Prediction.failed(problem, spans=self.tags is not None) if problem else next(predictions)

    def predict_logits(self, texts: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """A classifier's raw outputs, for parity checks and calibration.

        Args:
            texts: the texts.
            batch_size: texts per ONNX Runtime call (default 32); length-sorted as in :meth:`predict`.

        Returns:
            (N, C) float32 logits in input order.

        Raises:
            ConfigError: a bad batch_size.
            DataError: an item of ``texts`` is not a string.
            ModelError: a span model, whose outputs are per token (use :meth:`predict`, or :meth:`encode` and
                ``session.run`` for the (B, T, K) logits of one batch).
        """
        if self.tags is not None:
            raise ModelError(
                f"{self.model_dir or 'model'}: a token-classification model has per-token outputs, not one row "
                "of logits per text; use predict() for its spans"
            )
        batch = _as_text_list(texts)
        logits = np.empty((len(batch), len(self.labels)), dtype=np.float32)
        for rows, _, outputs in self._batches(batch, batch_size):
            logits[rows] = outputs
        return logits

    def encode(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Tokenize texts into one batch of ONNX inputs, padded to its longest text.

        Args:
            texts: the texts (at least one).

        Returns:
            ONNX input name -> (B, T) integer array, exactly what :meth:`predict` feeds the session.

        Raises:
            DataError: ``texts`` is empty or holds a non-string.
        """
        batch = _as_text_list(texts)
        if not batch:
            raise DataError("encode() needs at least one text")
        return self._pad(self._tokenize(batch))

    def __repr__(self) -> str:
        return (
            f"Predictor({str(self.model_dir)!r}, provider={self.provider!r}, runtime={self.runtime!r}, task={self.task!r}, "
            f"labels={self.labels!r}, max_length={self.max_length})"
        )

    def _check_top_k(self, top_k: int | None) -> int | None:
        if top_k is None:
            return None
        if self.tags is not None:
            raise ConfigError(
                f"top_k={top_k!r}: a token-classification model returns spans, not label scores; leave top_k unset"
            )
        if not _is_positive_int(top_k):
            raise ConfigError(f"top_k={top_k!r} must be a positive integer or None")
        return min(top_k, len(self.labels))

    def _batches(self, texts: list[str], batch_size: int) -> Iterator[tuple[list[int], list[Encoding], np.ndarray]]:
        """The one batching loop: (input positions, their encodings, the model's outputs) per ONNX Runtime call.

        Texts are tokenized a window at a time and length-sorted inside it, so a batch pads only to its own
        longest text. Outputs are (B, C) for a classifier, (B, T, K) for a span model (T: the batch's longest
        encoding, padded on the tokenizer's padding side).
        """
        _check_batch_size(batch_size)
        if len(texts) == 1:  # the latency path: no sorting
            encodings = self._tokenize(texts)
            yield [0], encodings, self._run(self._pad(encodings))
            return
        window = batch_size * SORT_WINDOW_BATCHES
        for start in range(0, len(texts), window):
            encodings = self._tokenize(texts[start : start + window], start)
            for rows in length_sorted_batches([len(e) for e in encodings], batch_size):
                batch = [encodings[i] for i in rows]
                yield [start + i for i in rows], batch, self._run(self._pad(batch))

    def _decode_labels(self, logits: np.ndarray, k: int | None) -> list[_Decoded]:
        """A classifier's batch: (label, score, scores, no spans) per row of (B, C) logits."""
        probs = softmax(logits.astype(np.float32, copy=False))
        if k is None:
            best = probs.argmax(axis=1).tolist()
            return [
                (self.labels[b], row[b], dict(zip(self.labels, row)), None) for b, row in zip(best, probs.tolist())
            ]
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        top = np.take_along_axis(probs, order, axis=1).tolist()
        return [
            (self.labels[idx[0]], vals[0], {self.labels[i]: v for i, v in zip(idx, vals)}, None)
            for idx, vals in zip(order.tolist(), top)
        ]

    def _decode_spans(self, texts: list[str], encodings: list[Encoding], logits: np.ndarray) -> list[_Decoded]:
        """A span model's batch: (no label, no score, no scores, spans) per row of (B, T, K) logits.

        Each row is cut back to its own tokens (padding removed on the side it was added), softmaxed over the
        tags and decoded against its encoding's character offsets and word ids: offsets into the string as given,
        so accents, emoji and CJK keep their positions even though the tokenizer normalised them.
        """
        assert self.tags is not None
        width = logits.shape[1]
        decoded: list[_Decoded] = []
        for text, enc, row in zip(texts, encodings, logits):
            size = len(enc)
            mine = row[:size] if self._pad_right else row[width - size :]
            scores = softmax(mine.astype(np.float32, copy=False))  # (T, K)
            spans = decode_spans(text, scores, _whole_word_offsets(enc), enc.word_ids, self.tags)
            decoded.append((None, None, {}, [span.to_dict() for span in spans]))
        return decoded

    def _tokenize(self, texts: list[str], offset: int = 0) -> list[Encoding]:
        """Unpadded, truncated encodings; DataError (not a bare TypeError) for text that is not valid Unicode."""
        try:
            return [self._tokenizer.encode(texts[0])] if len(texts) == 1 else self._tokenizer.encode_batch(texts)
        except TypeError as err:  # tokenizers' answer to lone surrogates (undecodable bytes kept by Python)
            index = next((i for i, text in enumerate(texts) if not _is_utf8_encodable(text)), None)
            if index is None:
                raise
            raise DataError(
                f"texts[{offset + index}] is not valid Unicode (lone surrogate characters, e.g. from undecodable "
                "bytes); decode the input with errors='replace'"
            ) from err

    def _unknown(self, encodings: list[Encoding]) -> np.ndarray:
        if self._unk_id is None:
            return np.zeros(len(encodings), dtype=np.int64)
        return np.array([e.ids.count(self._unk_id) for e in encodings], dtype=np.int64)

    def _truncated(self, encodings: list[Encoding]) -> np.ndarray:
        # Only a text that fills max_length can have been cut; overflowing is built only for those.
        return np.array([len(e) == self.max_length and bool(e.overflowing) for e in encodings], dtype=bool)

    def _pad(self, encodings: list[Encoding]) -> dict[str, np.ndarray]:
        """(B, T) ONNX inputs, T = the longest encoding; padding with pad_id / mask 0 / type 0."""
        if len(encodings) == 1:  # nothing to pad: the batch-1 latency path skips the row loop
            return {name: np.array([_row(encodings[0], name)], dtype=dtype) for name, dtype in self._inputs}
        width = max(len(e) for e in encodings)
        feed = {}
        for name, dtype in self._inputs:
            array: np.ndarray = np.full(
                (len(encodings), width), self._pad_id if name == "input_ids" else 0, dtype=dtype
            )
            for row, enc in enumerate(encodings):
                size = len(enc)
                array[row, slice(0, size) if self._pad_right else slice(width - size, width)] = _row(enc, name)
            feed[name] = array
        return feed

    def _run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        """(B, C) logits for one batch; (B, T, K) for a span model."""
        if not self._io_binding:
            return self.session.run(self._output_names, feed)[0]
        return run_on_device(self.session, feed, self._output_names)[0]


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Positions of one window of texts, grouped as the predictor batches them: sorted by token count, then cut.

    A batch pads only to its own longest text. The sort is stable (equal lengths keep input order), so results
    do not depend on the window size.
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return [order[first : first + batch_size] for first in range(0, len(order), batch_size)]


def predictor_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Positions of all texts, batched exactly as :meth:`Predictor.predict` batches them (window by window).

    For whoever must see the batches the predictor runs, e.g. the parity gate: dynamic int8 takes one
    activation range per batch, so a label can depend on the batch a text is in.
    """
    window = batch_size * SORT_WINDOW_BATCHES
    return [
        [start + i for i in rows]
        for start in range(0, len(lengths), window)
        for rows in length_sorted_batches(lengths[start : start + window], batch_size)
    ]


def _row(encoding: Encoding, name: str) -> list[int]:
    """The values of one ONNX input for one unpadded encoding."""
    if name == "input_ids":
        return encoding.ids
    return encoding.attention_mask if name == "attention_mask" else encoding.type_ids


def _whole_word_offsets(enc: Encoding) -> list[tuple[int, int]]:
    """``enc``'s offsets with the word truncation cut extended to its end (``extend_cut_word``), read from the
    overflowing tokens the tokenizer keeps for a truncated text."""
    if not enc.overflowing:
        return list(enc.offsets)
    rest = [(word, offset) for o in enc.overflowing[:1] for word, offset in zip(o.word_ids, o.offsets)]
    return extend_cut_word(enc.offsets, enc.word_ids, rest)


def _is_utf8_encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def input_problem(text: Any) -> str | None:
    """Why an input cannot be classified (None when it can): the per-item rule of every untrusted stream."""
    if text is None:
        return "no text"
    if not isinstance(text, str):
        return f"not a string ({type(text).__name__})"
    if not text.strip():
        return EMPTY_TEXT
    if not _is_utf8_encodable(text):
        return "not valid Unicode (lone surrogates)"
    return None


def _windows(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive lists of at most ``size`` items, reading the iterable lazily."""
    iterator = iter(items)
    while window := list(itertools.islice(iterator, size)):
        yield window


def _check_batch_size(batch_size: Any) -> None:
    """A positive integer up to MAX_BATCH_SIZE: beyond it a batch could never fit in memory, and the sort window
    (``batch_size * SORT_WINDOW_BATCHES``) would overflow what itertools can count."""
    if not _is_positive_int(batch_size) or batch_size > MAX_BATCH_SIZE:
        raise ConfigError(f"batch_size={batch_size!r} must be an integer from 1 to {MAX_BATCH_SIZE}")


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _as_text_list(texts: Iterable[str]) -> list[str]:
    """A list of the texts; DataError naming the first item that is not a string."""
    if isinstance(texts, str):
        raise DataError("expected a sequence of texts, got a single string; wrap it in a list")
    batch = texts if isinstance(texts, list) else list(texts)
    if not all(isinstance(text, str) for text in batch):
        index, bad = next((i, t) for i, t in enumerate(batch) if not isinstance(t, str))
        raise DataError(f"texts[{index}] is a {type(bad).__name__}, not a string")
    return batch
