"""Reading span data: JSONL with character spans, CoNLL token/tag files and SemEval-2014 ABSA XML.

Every reader streams, validates each record before yielding it, and raises the same one-line ``DataError``
naming ``file:line`` as the classification reader, so a bad file fails before any model is loaded and nothing is
written. Stdlib only.

- JSONL (``.jsonl``/``.ndjson``): ``{"text": ..., "spans": [{"start": 4, "end": 11, "label": "positive"}]}``;
  ``aspects`` with ``from``/``to``/``polarity`` (SemEval-2014 names) is read too. An optional ``term`` must equal
  ``text[start:end]``.
- CoNLL (``.conll``/``.bio``/``.iob``/``.txt``): one token per line with its tag in the last column, a blank line
  between sentences, ``-DOCSTART-`` lines skipped. The text is the tokens joined by single spaces. Tags may be
  BIO/IOB2, IOB1 (an ``I-`` after ``O`` starts a span), BIOES or BILOU (converted to spans); anything else is an
  unknown tag scheme.
- SemEval-2014 Task 4 XML (``.xml``): ``sentence/text`` and ``aspectTerms/aspectTerm`` with ``term``, ``from``,
  ``to``, ``polarity``.

``drop_labels`` removes spans with those labels (``conflict``, as papers on SemEval-2014 do) after their offsets
are checked and before overlaps are: their words become ``O``, the sentence stays.
"""

from __future__ import annotations

import itertools
import json
import random
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgesent.data import ReadStats, check_unicode, pick_text_column, read_lines
from edgesent.demo import DEMO_DIR
from edgesent.errors import DataError
from edgesent.tasks.spans import Span, SpanExample, spans_from_tags, split_tag


SPAN_FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".xml": "xml",
    ".conll": "conll",
    ".bio": "conll",
    ".iob": "conll",
    ".txt": "conll",
}
DEMO_SPANS_TRAIN = DEMO_DIR / "spans_train.jsonl"
DEMO_SPANS_EVAL = DEMO_DIR / "spans_eval.jsonl"
_DOCSTART = "-DOCSTART-"


@dataclass
class SpanDataset:
    """Span examples read from one file, and what a manifest records about them."""

    examples: list[SpanExample]
    path: Path | None = None
    sha256: str = ""
    dropped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def texts(self) -> list[str]:
        """The texts in file order (what the tokenizer coverage check and calibration read)."""
        return [ex.text for ex in self.examples]

    def labels(self) -> list[str]:
        """The span labels present, sorted (the model's label set before :func:`~edgesent.tasks.spans.tag_names`)."""
        return sorted({s.label for ex in self.examples for s in ex.spans})

    def fingerprint(self) -> dict[str, object]:
        """File hash, sentence and span counts per label, spans dropped per label."""
        counts = Counter(s.label for ex in self.examples for s in ex.spans)
        return {
            "path": str(self.path) if self.path else None,
            "sha256": self.sha256 or None,
            "rows": len(self.examples),
            "rows_without_spans": sum(not ex.spans for ex in self.examples),
            "label_counts": dict(sorted(counts.items())),
            "dropped": dict(sorted(self.dropped.items())),
        }


def _check_spans(path: Path, line: int, text: str, spans: list[Span], terms: list[str | None]) -> None:
    """Offsets inside the text and, where a term is given, equal to it."""
    for span, term in zip(spans, terms):
        where = f"{path}:{line}: span [{span.start}, {span.end}) ({span.label})"
        if span.start >= span.end:
            raise DataError(f"{where} is empty or reversed; 'end' is one past the last character")
        if span.start < 0 or span.end > len(text):
            raise DataError(f"{where} is outside the text (length {len(text)}); fix the offsets")
        if term is not None and text[span.start : span.end] != term:
            raise DataError(
                f"{where} covers {text[span.start : span.end]!r} but its term is {term!r}; fix the offsets or the term"
            )


def _trimmed(path: Path, line: int, text: str, span: Span) -> Span:
    """``span`` without the whitespace at its ends; DataError when nothing else is left."""
    piece = text[span.start : span.end]
    start = span.start + len(piece) - len(piece.lstrip())
    end = span.end - (len(piece) - len(piece.rstrip()))
    if end <= start:
        raise DataError(f"{path}:{line}: span [{span.start}, {span.end}) ({span.label}) covers only whitespace")
    return span if (start, end) == (span.start, span.end) else Span(start, end, span.label, text[start:end])


def _finish(
    path: Path, line: int, text: str, spans: list[Span], drop: frozenset[str], dropped: Counter
) -> SpanExample:
    """Drop the unwanted labels, trim whitespace, refuse overlaps, sort: the one validation every format ends with.

    Trimmed because the predictor's spans never start or end in whitespace (``decode_spans``): a gold span with a
    trailing space would count as a miss for a perfect tagger in ``evaluate`` and the parity gate.
    """
    kept = []
    for span in spans:
        if span.label in drop:
            dropped[span.label] += 1
        else:
            kept.append(_trimmed(path, line, text, span))
    kept.sort(key=lambda s: (s.start, s.end))
    for a, b in itertools.pairwise(kept):
        if b.start < a.end:
            raise DataError(
                f"{path}:{line}: spans [{a.start}, {a.end}) {a.text!r} and [{b.start}, {b.end}) {b.text!r} overlap; "
                "BIO tagging needs spans that do not overlap"
            )
    return SpanExample(text, kept, line)


def _offset(path: Path, line: int, item: dict[str, Any], names: tuple[str, str]) -> int:
    for name in names:
        if name in item:
            value = item[name]
            if isinstance(value, str) and value.strip().isascii() and value.strip().lstrip("-").isdigit():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int):
                raise DataError(f"{path}:{line}: span field '{name}' must be an integer, got {value!r}")
            return value
    raise DataError(f"{path}:{line}: a span without '{names[0]}' (or '{names[1]}'); give character offsets")


def _jsonl(path: Path, lines: Iterator[tuple[int, str]], text_column: str, drop: frozenset[str], dropped: Counter):
    text_key: str | None = None
    for number, line in lines:
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as err:
            raise DataError(f"{path}:{number}: invalid JSON: {getattr(err, 'msg', err)}") from err
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{number}: invalid JSON: not an object")
        if text_key is None:  # the first object fixes the text key, as a header would
            text_key = pick_text_column(path, list(obj), text_column)
        text = obj.get(text_key)
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{path}:{number}: empty or missing text in '{text_key}'")
        check_unicode(path, number, text)
        if "spans" in obj and "aspects" in obj:
            raise DataError(f"{path}:{number}: both 'spans' and 'aspects'; keep one")
        items = obj.get("spans", obj.get("aspects"))
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            raise DataError(
                f"{path}:{number}: no list of span objects in 'spans' (or 'aspects'); write [] for a text without spans"
            )
        spans, terms = [], []
        for item in items:
            label = item.get("label", item.get("polarity"))
            if label is not None and not isinstance(label, str):
                raise DataError(f"{path}:{number}: a span label must be a string, got {label!r}")
            if not label or not label.strip():
                raise DataError(f"{path}:{number}: a span without 'label' (or 'polarity')")
            start, end = _offset(path, number, item, ("start", "from")), _offset(path, number, item, ("end", "to"))
            term = item.get("term")
            spans.append(Span(start, end, label.strip(), text[start:end]))
            terms.append(term if isinstance(term, str) else None)
        _check_spans(path, number, text, spans, terms)
        yield _finish(path, number, text, spans, drop, dropped)


def _conll_sentence(path: Path, rows: list[tuple[int, str, str]], drop: frozenset[str], dropped: Counter):
    tokens = [token for _, token, _ in rows]
    ranges, position = [], 0
    for token in tokens:
        ranges.append((position, position + len(token)))
        position += len(token) + 1
    for number, _, tag in rows:
        try:
            split_tag(tag)
        except ValueError:
            raise DataError(
                f"{path}:{number}: unknown tag {tag!r}; tags are O or B-/I- (BIO, IOB1), E-/S- (BIOES), L-/U- (BILOU) "
                "followed by the label"
            ) from None
    text = " ".join(tokens)
    spans = []
    for first, last, label in spans_from_tags([tag for _, _, tag in rows]):
        start, end = ranges[first][0], ranges[last][1]
        spans.append(Span(start, end, label, text[start:end]))
    return _finish(path, rows[0][0], text, spans, drop, dropped)


def _conll(path: Path, lines: Iterator[tuple[int, str]], drop: frozenset[str], dropped: Counter):
    rows: list[tuple[int, str, str]] = []
    for number, line in lines:
        parts = line.split()
        if not parts:
            if rows:
                yield _conll_sentence(path, rows, drop, dropped)
                rows = []
            continue
        if parts[0] == _DOCSTART:
            continue
        if len(parts) < 2:
            raise DataError(
                f"{path}:{number}: a line without a tag ({line.strip()!r}); write the token, a space, its tag"
            )
        rows.append((number, parts[0], parts[-1]))
    if rows:
        yield _conll_sentence(path, rows, drop, dropped)


def _xml(path: Path, lines: Iterator[tuple[int, str]], drop: frozenset[str], dropped: Counter):
    # Fed line by line so each element is known with the line its start tag is on; ElementTree resolves no external
    # entities, and expat (2.4+) refuses exponential entity expansion.
    parser: Any = ET.XMLPullParser(events=("start", "end"))
    started: dict[int, int] = {}  # id(element) -> line of its start tag
    number = 0
    try:
        for number, line in lines:
            parser.feed(line)
            for event, element in parser.read_events():
                if event == "start":
                    started[id(element)] = number
                elif element.tag == "sentence":
                    yield _xml_sentence(path, element, started, drop, dropped)
                    element.clear()
                    started.clear()
        parser.close()
    except ET.ParseError as err:
        line_at = err.position[0] if err.position else number
        raise DataError(f"{path}:{line_at}: malformed XML ({err.msg}); fix the markup") from err


def _xml_sentence(path: Path, sentence: ET.Element, started: dict[int, int], drop: frozenset[str], dropped: Counter):
    line = started.get(id(sentence), 0)
    text_element = sentence.find("text")
    if text_element is None or not (text_element.text or "").strip():
        raise DataError(f"{path}:{line}: a <sentence> without <text>")
    text = text_element.text or ""
    spans = []
    for term_element in sentence.iter("aspectTerm"):
        at = started.get(id(term_element), line)
        attrs = dict(term_element.attrib)
        label = attrs.get("polarity", "").strip()
        if not label:
            raise DataError(f"{path}:{at}: an <aspectTerm> without 'polarity'")
        start, end = _offset(path, at, attrs, ("from", "from")), _offset(path, at, attrs, ("to", "to"))
        span = Span(start, end, label, text[start:end])
        _check_spans(path, at, text, [span], [attrs.get("term")])
        spans.append(span)
    return _finish(path, line, text, spans, drop, dropped)


def read_span_records(
    source: str | Path,
    text_column: str = "text",
    drop_labels: Iterable[str] = (),
    *,
    dropped: Counter | None = None,
    stats: ReadStats | None = None,
) -> Iterator[SpanExample]:
    """Stream the examples of a span file, validated, in file order.

    Args:
        source: the file; its extension picks the format: .jsonl/.ndjson, .xml (SemEval-2014), .conll/.bio/.iob/.txt.
        text_column: JSONL key with the text (``text``, falling back to ``sentence``).
        drop_labels: span labels to leave out, e.g. ``("conflict",)``; their words become ``O``.
        dropped: filled in while streaming with the count of dropped spans per label.
        stats: filled in while streaming (``stats.sha256`` once exhausted), as ``data.iter_records`` does.

    Yields:
        SpanExample per sentence, spans sorted and non-overlapping, ``line`` where the sentence starts.

    Raises:
        DataError: naming ``file:line``: unknown format, missing file, bytes that are not UTF-8, invalid JSON or
            XML, a span outside the text, overlapping spans, a term that does not match the text at its offsets,
            an unknown tag scheme, a CoNLL line without a tag.
    """
    path = Path(source)
    fmt = SPAN_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: unknown format '{path.suffix}'; use .jsonl, .xml (SemEval-2014) or .conll")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    drop = frozenset(drop_labels)
    dropped = dropped if dropped is not None else Counter()
    stats = stats if stats is not None else ReadStats()
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed in the finally below, once the generator is done
    except OSError as err:
        raise DataError(f"{path}: cannot read it ({err.strerror or err})") from err
    try:
        lines = read_lines(path, stream, True, stats)
        if fmt == "jsonl":
            yield from _jsonl(path, lines, text_column, drop, dropped)
        elif fmt == "xml":
            yield from _xml(path, lines, drop, dropped)
        else:
            yield from _conll(path, lines, drop, dropped)
    finally:
        stream.close()


def split_span_dataset(data: SpanDataset, fraction: float, seed: int) -> tuple[SpanDataset, SpanDataset]:
    """Hold out a seeded random ``fraction`` of the sentences (at least one, and one left to train on).

    Returns:
        (train, held out), each in file order; the fingerprints record the source file and the rows kept.

    Raises:
        DataError: fewer than two sentences, so nothing can be held out.
    """
    n = len(data.examples)
    if n < 2:
        raise DataError(f"{data.path}: {n} sentence(s) cannot be split for evaluation; pass --eval-data")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    held = set(order[: min(max(1, round(n * fraction)), n - 1)])
    train = [ex for i, ex in enumerate(data.examples) if i not in held]
    held_out = [ex for i, ex in enumerate(data.examples) if i in held]
    return (
        SpanDataset(train, data.path, data.sha256, dict(data.dropped)),
        SpanDataset(held_out, data.path, data.sha256, {}),
    )


def load_span_dataset(
    source: str | Path, text_column: str = "text", drop_labels: Iterable[str] = (), require_spans: bool = True
) -> SpanDataset:
    """Read a whole span file into memory, strictly (training and evaluation).

    Args:
        source: the file (see :func:`read_span_records` for the formats).
        text_column: JSONL key with the text.
        drop_labels: span labels to leave out, e.g. ``("conflict",)``.
        require_spans: refuse a file without a single span (training and evaluation need some; a parity sample
            of texts without aspects is still texts to compare two models on).

    Returns:
        SpanDataset with the examples, the file's sha256 and the dropped-span counts.

    Raises:
        DataError: any error of :func:`read_span_records`, an empty file, or a file without a single span.
    """
    path = Path(source)
    dropped: Counter = Counter()
    stats = ReadStats()
    examples = list(read_span_records(path, text_column, drop_labels, dropped=dropped, stats=stats))
    if not examples:
        raise DataError(f"{path}: the file has no sentences")
    if require_spans and not any(ex.spans for ex in examples):
        kept = f" after dropping {', '.join(sorted(dropped))}" if dropped else ""
        raise DataError(f"{path}: no spans in {len(examples)} sentence(s){kept}; a tagger needs labelled spans")
    return SpanDataset(examples, path, stats.sha256, dict(dropped))
