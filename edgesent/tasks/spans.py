"""The span task: every token gets a BIO tag whose type is the span's label, and one pass returns every span.

For aspect-based sentiment the label is the polarity (``B-positive``, ``I-negative``, ...), so one forward pass
returns every aspect term with its sentiment; any other span labels (opinion terms, product names, entity types)
work the same way, since the label set comes from the data.

Words are labelled on their first sub-token and the rest are ignored in the loss (-100). Everything here works
from what a fast tokenizer's ``Encoding`` gives, character ``offsets`` and ``word_ids``, so training (the
Transformers fast tokenizer) and the torch-free runtime (``tokenizers``) share one alignment and one decoder.
Light: stdlib and numpy only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgesent.metrics import classification_metrics


OUTSIDE = "O"
IGNORE_INDEX = -100  # the label the loss skips (PyTorch CrossEntropyLoss' ignore_index)
# Prefixes the readers accept: B/I/O (IOB2, and IOB1 where I- may start a span), E/S (BIOES) and L/U (BILOU).
# The model itself is always trained on BIO.
_BEGIN, _INSIDE, _END, _SINGLE = {"B"}, {"I"}, {"E", "L"}, {"S", "U"}
TAG_PREFIXES = frozenset(_BEGIN | _INSIDE | _END | _SINGLE)


@dataclass(frozen=True)
class Span:
    """A labelled span of a text, in character offsets of the original string (``text[start:end]``).

    Attributes:
        start: first character (0-based, inclusive).
        end: one past the last character.
        label: the span's label, e.g. a polarity.
        text: the covered text (``""`` when not filled in).
        score: the model's confidence (mean first-sub-token probability of its words), None for gold spans.
    """

    start: int
    end: int
    label: str
    text: str = ""
    score: float | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """``{text, start, end, label, score}``: the Predictor's per-span output."""
        return {"text": self.text, "start": self.start, "end": self.end, "label": self.label, "score": self.score}


@dataclass
class SpanExample:
    """One text with its gold spans (sorted, non-overlapping) and the 1-based line where it starts."""

    text: str
    spans: list[Span]
    line: int = 0


def tag_names(labels: Iterable[str]) -> list[str]:
    """The BIO tags for a label set, in a stable order: ``["O", "B-a", "I-a", "B-b", "I-b", ...]``, labels sorted.

    Args:
        labels: the span labels (duplicates are ignored).

    Returns:
        Tag names; the index of a name is its tag id (``id2label`` of the model).
    """
    names = [OUTSIDE]
    for label in sorted(set(labels)):
        names += [f"B-{label}", f"I-{label}"]
    return names


def tag_ids(tags: Sequence[str]) -> dict[str, int]:
    """Tag name to id (``label2id`` of the model)."""
    return {tag: i for i, tag in enumerate(tags)}


def split_tag(tag: str) -> tuple[str, str]:
    """``"B-positive"`` -> ``("B", "positive")``; ``"O"`` -> ``("O", "")``.

    Raises:
        ValueError: a tag outside the BIO/IOB1/BIOES/BILOU schemes (the readers turn it into a DataError).
    """
    if tag == OUTSIDE:
        return OUTSIDE, ""
    prefix, sep, label = tag.partition("-")
    if not sep or prefix not in TAG_PREFIXES or not label:
        raise ValueError(f"unknown tag {tag!r}")
    return prefix, label


def spans_from_tags(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """Group per-word tags into spans of word indices, repairing invalid sequences.

    ``B-`` starts a span; ``I-`` continues a span of the same label and otherwise starts one (the repair, which
    is also how IOB1 reads); ``E-``/``L-`` continue and close; ``S-``/``U-`` make a one-word span.

    Args:
        tags: one tag per word.

    Returns:
        ``(first_word, last_word, label)`` per span, inclusive word indices.

    Raises:
        ValueError: a tag outside the schemes (see :func:`split_tag`).
    """
    spans: list[tuple[int, int, str]] = []
    open_label: str | None = None  # the label of the span the previous word belongs to, if still open
    for i, tag in enumerate(tags):
        prefix, label = split_tag(tag)
        if prefix == OUTSIDE:
            open_label = None
            continue
        if prefix in _INSIDE | _END and open_label == label:
            first, _, _ = spans[-1]
            spans[-1] = (first, i, label)
        else:
            spans.append((i, i, label))
        open_label = None if prefix in _END | _SINGLE else label
    return spans


def _word_ranges(offsets: Sequence[Sequence[int]], word_ids: Sequence[int | None]) -> dict[int, tuple[int, int]]:
    """Each word's character range: from its first sub-token's start to its last sub-token's end."""
    ranges: dict[int, tuple[int, int]] = {}
    for (start, end), word in zip(offsets, word_ids):
        if word is None:
            continue
        start, end = int(start), int(end)  # numpy offsets (return_tensors="np") would leak np.int64 into spans
        if word in ranges:
            first, last = ranges[word]
            ranges[word] = (min(first, start), max(last, end))
        else:
            ranges[word] = (start, end)
    return ranges


def first_token_mask(word_ids: Sequence[int | None]) -> list[bool]:
    """True at each word's first sub-token: the positions that carry a label, a prediction and a parity vote."""
    mask, previous = [], None
    for word in word_ids:
        mask.append(word is not None and word != previous)
        previous = word
    return mask


def align_labels(
    offsets: Sequence[Sequence[int]],
    word_ids: Sequence[int | None],
    spans: Sequence[Span],
    tag_index: Mapping[str, int],
) -> list[int]:
    """Tag ids per token for training: a word's tag on its first sub-token, -100 elsewhere.

    A word belongs to a span when its characters overlap the span; the first such word gets ``B-``, the rest
    ``I-``. A span whose boundary falls inside a word takes the whole word (the decoded span is then the word).

    Args:
        offsets: ``(start, end)`` character offsets per token (``Encoding.offsets``; ``offset_mapping``).
        word_ids: word index per token, None for special tokens (``Encoding.word_ids``; ``word_ids(i)``).
        spans: the example's gold spans, non-overlapping.
        tag_index: tag name to id, from :func:`tag_ids`.

    Returns:
        One id per token: the tag of the word for first sub-tokens, ``IGNORE_INDEX`` (-100) for special tokens
        and continuation sub-tokens.

    Raises:
        KeyError: a span label without a tag in ``tag_index`` (a label the model was not built with).
    """
    ranges = _word_ranges(offsets, word_ids)
    ordered = sorted(spans, key=lambda s: (s.start, s.end))
    word_tags: dict[int, str] = {}
    started: set[int] = set()  # spans (by position in ``ordered``) that already have their B- word
    for word in sorted(ranges):
        start, end = ranges[word]
        hit = next((k for k, s in enumerate(ordered) if s.start < end and start < s.end), None)
        if hit is None:
            word_tags[word] = OUTSIDE
            continue
        word_tags[word] = f"{'I' if hit in started else 'B'}-{ordered[hit].label}"
        started.add(hit)
    labels = []
    for is_first, word_id in zip(first_token_mask(word_ids), word_ids):
        labels.append(tag_index[word_tags[word_id]] if is_first and word_id is not None else IGNORE_INDEX)
    return labels


def extend_cut_word(
    offsets: Sequence[Sequence[int]], word_ids: Sequence[int | None], rest: Iterable[tuple[int | None, Sequence[int]]]
) -> list[tuple[int, int]]:
    """``offsets``, with the last kept token of a word that truncation cut in two ending where the word does.

    The word's tag is read at its first sub-token, which the model saw; without this its span would end mid-word.
    ``rest``: (word id, offset) of the tokens truncation dropped, or of the whole untruncated encoding (the same
    tokenizer numbers words the same way in both). The predictor and the PyTorch decoder both pass through here,
    so ``evaluate`` scores both alike.
    """
    result = [(int(start), int(end)) for start, end in offsets]
    kept = [(t, word) for t, word in enumerate(word_ids) if word is not None]
    if not kept:
        return result
    last, word = kept[-1]
    ends = [int(offset[1]) for w, offset in rest if w == word]
    if ends:
        result[last] = (result[last][0], max(result[last][1], *ends))
    return result


def decode_spans(
    text: str,
    scores: np.ndarray,
    offsets: Sequence[Sequence[int]],
    word_ids: Sequence[int | None],
    tags: Sequence[str],
) -> list[Span]:
    """Spans in character offsets of ``text`` from one sequence's tag predictions.

    Each word's tag is read at its first sub-token; invalid sequences are repaired (an ``I-`` that does not
    continue a span of its label starts one); a span runs from its first word's start to its last word's end,
    so sub-tokens merge back into words, and is trimmed of surrounding whitespace.

    Args:
        text: the original string the offsets refer to.
        scores: ``(T, K)`` tag probabilities (softmax of the logits), or ``(T,)`` tag ids.
        offsets: ``(start, end)`` character offsets per token.
        word_ids: word index per token, None for special and padding tokens.
        tags: tag names, index = tag id (the model's ``id2label``).

    Returns:
        Spans in text order, with ``text`` filled in and ``score`` the mean probability of the chosen tag over
        the span's words (first sub-tokens); ``score`` is None when ``scores`` holds tag ids.
    """
    scores = np.asarray(scores)
    if scores.ndim == 2:  # (T, K)
        ids, probs = scores.argmax(axis=-1), scores.max(axis=-1)
    elif scores.ndim == 1:  # (T,)
        ids, probs = scores.astype(np.int64), None
    else:
        raise ValueError(f"scores must be (T, K) probabilities or (T,) tag ids, got shape {scores.shape}")
    ranges = _word_ranges(offsets[: len(ids)], word_ids[: len(ids)])
    words: list[tuple[int, int]] = []
    word_tags: list[str] = []
    word_probs: list[float] = []
    for t, (is_first, word) in enumerate(zip(first_token_mask(word_ids[: len(ids)]), word_ids)):
        if not is_first or word is None:
            continue
        words.append(ranges[word])
        word_tags.append(tags[int(ids[t])])
        word_probs.append(float(probs[t]) if probs is not None else 0.0)
    result = []
    for first, last, label in spans_from_tags(word_tags):
        start, end = words[first][0], words[last][1]
        piece = text[start:end]
        start += len(piece) - len(piece.lstrip())
        end -= len(piece) - len(piece.rstrip())
        if end <= start:  # a word of whitespace only: nothing to return
            continue
        score = float(np.mean(word_probs[first : last + 1])) if probs is not None else None
        result.append(Span(start, end, label, text[start:end], score))
    return result


def _prf(tp: int, n_pred: int, n_gold: int) -> dict[str, float]:
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def _matches(gold: Sequence[Sequence[Span]], pred: Sequence[Sequence[Span]], with_label: bool) -> int:
    """Spans in both, counted as multisets per text."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold texts but {len(pred)} predicted")
    total = 0
    for g, p in zip(gold, pred):
        key = (lambda s: (s.start, s.end, s.label)) if with_label else (lambda s: (s.start, s.end, ""))
        total += sum((Counter(map(key, g)) & Counter(map(key, p))).values())
    return total


def span_metrics(
    gold: Sequence[Sequence[Span]], pred: Sequence[Sequence[Span]], labels: Sequence[str] | None = None
) -> dict[str, Any]:
    """Span scores of predictions against gold, per text (micro-averaged over all spans).

    - ``precision``/``recall``/``f1``: exact match, start, end and label all equal.
    - ``span_precision``/``span_recall``/``span_f1``: boundaries only, label ignored (aspect extraction).
    - ``label_accuracy``/``label_macro_f1``: on the spans found with correct boundaries, how often the label
      (the polarity) is right, and its macro-F1 over ``labels`` (``label_report`` holds the per-label table).
    - ``per_label``: exact-match precision, recall, F1 and gold support per label.

    Nothing predicted, or nothing gold, gives 0 (sklearn's ``zero_division=0``).

    Args:
        gold: gold spans per text.
        pred: predicted spans per text, same length as ``gold``.
        labels: the label set; default: every label in gold or pred, sorted.

    Returns:
        A JSON-able dict with the numbers above and the counts ``n_texts``, ``n_gold``, ``n_pred``,
        ``n_boundary_matches``.
    """
    if labels is None:
        labels = sorted({s.label for spans in (*gold, *pred) for s in spans})
    labels = list(labels) + sorted({s.label for spans in (*gold, *pred) for s in spans} - set(labels))
    n_gold = sum(map(len, gold))
    n_pred = sum(map(len, pred))
    exact = _prf(_matches(gold, pred, True), n_pred, n_gold)
    boundary = _prf(_matches(gold, pred, False), n_pred, n_gold)
    y_true: list[int] = []
    y_pred: list[int] = []
    index = {label: i for i, label in enumerate(labels)}
    for g, p in zip(gold, pred):
        predicted = {(s.start, s.end): s.label for s in p}
        for s in g:
            if (s.start, s.end) in predicted:
                y_true.append(index[s.label])
                y_pred.append(index[predicted[(s.start, s.end)]])
    polarity = classification_metrics(np.array(y_true, dtype=np.int64), np.array(y_pred, dtype=np.int64), labels)
    per_label = {}
    for label in labels:
        g_l = [[s for s in spans if s.label == label] for spans in gold]
        p_l = [[s for s in spans if s.label == label] for spans in pred]
        support = sum(map(len, g_l))
        per_label[label] = {**_prf(_matches(g_l, p_l, True), sum(map(len, p_l)), support), "support": support}
    return {
        "n_texts": len(gold),
        "n_gold": n_gold,
        "n_pred": n_pred,
        **exact,
        "span_precision": boundary["precision"],
        "span_recall": boundary["recall"],
        "span_f1": boundary["f1"],
        "n_boundary_matches": len(y_true),
        "label_accuracy": polarity["accuracy"],
        "label_macro_f1": polarity["macro_f1"] if y_true else 0.0,
        "label_report": polarity["per_class"],
        "per_label": per_label,
        "labels": labels,
    }


def word_span_metrics(predictions: np.ndarray, label_ids: np.ndarray, tags: Sequence[str]) -> dict[str, Any]:
    """:func:`span_metrics` on word positions, from what ``Trainer.compute_metrics`` gets (no texts, no offsets).

    Only the labelled positions (``label_ids != -100``, each word's first sub-token) are read; spans are counted in
    word units, so the numbers equal the character-span ones whenever gold spans cover whole words.

    Args:
        predictions: ``(N, T, K)`` logits or probabilities, or ``(N, T)`` tag ids.
        label_ids: ``(N, T)`` gold tag ids with -100 where no label is read.
        tags: tag names, index = tag id.

    Returns:
        The dict of :func:`span_metrics`, labels from ``tags``.
    """
    preds, gold_ids = np.asarray(predictions), np.asarray(label_ids)
    pred_ids = preds.argmax(axis=-1) if preds.ndim == 3 else preds
    gold: list[list[Span]] = []
    pred: list[list[Span]] = []
    for row_pred, row_gold in zip(pred_ids, gold_ids):
        keep = row_gold != IGNORE_INDEX
        for ids, out in ((row_gold[keep], gold), (row_pred[keep], pred)):
            out.append([Span(a, b + 1, label) for a, b, label in spans_from_tags([tags[int(i)] for i in ids])])
    labels = sorted({split_tag(tag)[1] for tag in tags} - {""})
    return span_metrics(gold, pred, labels)


def span_agreement(reference: Sequence[Sequence[Span]], candidate: Sequence[Sequence[Span]]) -> dict[str, Any]:
    """How closely one model's spans reproduce another's (parity: ONNX against PyTorch), exact match.

    Unlike :func:`span_metrics`, two models that both find no span at all agree fully: the F1 is 1.0 then.

    Args:
        reference: spans per text from the reference model (PyTorch).
        candidate: spans per text from the candidate (ONNX, int8), same length.

    Returns:
        ``{"span_f1", "span_precision", "span_recall", "n_reference", "n_candidate", "texts_identical"}``;
        ``texts_identical`` is the fraction of texts whose span lists match exactly.
    """
    n_ref, n_cand = sum(map(len, reference)), sum(map(len, candidate))
    if n_ref == n_cand == 0:
        scores = {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    else:
        scores = _prf(_matches(reference, candidate, True), n_cand, n_ref)
    same = sum(
        sorted((s.start, s.end, s.label) for s in r) == sorted((s.start, s.end, s.label) for s in c)
        for r, c in zip(reference, candidate)
    )
    return {
        "span_f1": scores["f1"],
        "span_precision": scores["precision"],
        "span_recall": scores["recall"],
        "n_reference": n_ref,
        "n_candidate": n_cand,
        "texts_identical": same / len(reference) if len(reference) else 1.0,
    }


def token_agreement(reference: np.ndarray, candidate: np.ndarray, mask: np.ndarray) -> float:
    """The fraction of labelled positions (first sub-tokens) where two models choose the same tag.

    Args:
        reference: ``(B, T, K)`` logits or probabilities, or ``(B, T)`` tag ids, of the reference model.
        candidate: the same for the candidate model.
        mask: ``(B, T)`` booleans, True at each word's first sub-token (:func:`first_token_mask` per row).

    Returns:
        Agreement in [0, 1]; 1.0 when the mask selects nothing.
    """
    ref, cand, keep = np.asarray(reference), np.asarray(candidate), np.asarray(mask, dtype=bool)
    ref_ids = ref.argmax(axis=-1) if ref.ndim == 3 else ref
    cand_ids = cand.argmax(axis=-1) if cand.ndim == 3 else cand
    if ref_ids.shape != keep.shape or cand_ids.shape != keep.shape:
        raise ValueError(f"shapes differ: reference {ref_ids.shape}, candidate {cand_ids.shape}, mask {keep.shape}")
    total = int(keep.sum())
    return float((ref_ids[keep] == cand_ids[keep]).sum() / total) if total else 1.0
