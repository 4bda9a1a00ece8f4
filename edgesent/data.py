"""Loading labelled text from CSV, TSV and JSONL, with errors that name the file, the line and the fix.

Stdlib only: the loader is used by training, evaluation and parity alike, and validation has to
happen before any model is loaded so a bad file costs seconds, not a training run.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from edgesent.errors import DataError


FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
TEXT_FALLBACK = "sentence"  # GLUE files (SST-2) call the text column "sentence"


@dataclass
class LabelledTexts:
    """Texts with their raw (string) labels, and where they came from."""

    texts: list[str]
    labels: list[str]
    path: Path | None = None
    sha256: str = ""
    skipped_empty: int = 0
    source: str = ""
    line_numbers: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)

    def fingerprint(self) -> dict[str, object]:
        """What a manifest records to tie a model to its data: file hash, rows and label counts."""
        counts: dict[str, int] = defaultdict(int)
        for label in self.labels:
            counts[label] += 1
        return {
            "path": str(self.path) if self.path else None,
            "source": self.source or None,
            "sha256": self.sha256 or None,
            "rows": len(self.texts),
            "skipped_empty": self.skipped_empty,
            "label_counts": dict(sorted(counts.items())),
        }

    def subset(self, indices: list[int], source: str) -> LabelledTexts:
        """A new LabelledTexts with the given rows, e.g. one side of a held-out split."""
        return LabelledTexts(
            texts=[self.texts[i] for i in indices],
            labels=[self.labels[i] for i in indices],
            path=self.path,
            sha256=self.sha256,
            source=source,
            line_numbers=[self.line_numbers[i] for i in indices] if self.line_numbers else [],
        )


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: bytes that are not UTF-8 ({err.reason}); re-save the file as UTF-8") from err


def pick_text_column(path: Path, columns: list[str], text_column: str) -> str:
    """The text column to read: ``text_column``, or ``sentence`` when the default ``text`` is absent."""
    if text_column in columns:
        return text_column
    if text_column == "text" and TEXT_FALLBACK in columns:
        return TEXT_FALLBACK
    raise DataError(f"{path}: no text column '{text_column}' (columns: {', '.join(columns)}); use --text-column")


def csv_quoting(delimiter: str) -> Literal[0, 3]:
    """csv quoting for a delimiter, shared so that training and prediction read a file alike.

    TSV files (GLUE among them) do not quote fields: quotes inside a TSV text are literal characters.
    """
    return csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL


def _rows_delimited(path: Path, content: str, delimiter: str) -> tuple[list[str], list[tuple[int, dict]]]:
    reader = csv.DictReader(io.StringIO(content), delimiter=delimiter, quoting=csv_quoting(delimiter))
    columns = [c.strip() for c in reader.fieldnames or []]
    reader.fieldnames = columns
    rows = []
    try:
        for row in reader:
            if None in row:  # more fields than the header
                raise DataError(f"{path}:{reader.line_num}: more fields than the header has columns")
            rows.append((reader.line_num, row))
    except csv.Error as err:
        raise DataError(
            f"{path}:{reader.line_num}: malformed {'TSV' if delimiter == chr(9) else 'CSV'} ({err})"
        ) from err
    return columns, rows


def _rows_jsonl(path: Path, content: str) -> tuple[list[str], list[tuple[int, dict]]]:
    rows, columns = [], {}
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{number}: not valid JSON ({err.msg})") from err
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{number}: expected a JSON object per line")
        columns.update(dict.fromkeys(obj))
        rows.append((number, obj))
    return list(columns), rows


def cell_text(value: object) -> str:
    """A cell as a string: None is empty, and integral JSON numbers lose their ``.0`` (label 1.0 is "1")."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip() if not isinstance(value, str) else value


def load_dataset(
    path: str | Path,
    text_column: str = "text",
    label_column: str | None = "label",
    skip_empty: bool = False,
) -> LabelledTexts:
    """Read a CSV, TSV or JSONL file of texts (and labels) into memory.

    Args:
        path: The file; its extension picks the format (.csv, .tsv, .jsonl/.ndjson).
        text_column: Column with the text; ``text`` falls back to ``sentence`` (GLUE) when absent.
        label_column: Column with the label (strings or integers), or None for unlabelled text.
        skip_empty: Drop rows whose text is empty or whitespace only, instead of failing.

    Returns:
        LabelledTexts with labels as strings ("" for every row when ``label_column`` is None).

    Raises:
        DataError: missing file, unknown format, undecodable bytes, missing column, empty file,
            empty texts (unless skipped), missing labels. The message names file and line.
    """
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if fmt is None:
        raise DataError(f"{path}: unknown format '{path.suffix}'; use .csv, .tsv or .jsonl")
    raw = path.read_bytes()
    content = _decode(path, raw)
    if not content.strip():
        raise DataError(f"{path}: the file is empty")
    if fmt == "jsonl":
        columns, rows = _rows_jsonl(path, content)
    else:
        columns, rows = _rows_delimited(path, content, "," if fmt == "csv" else "\t")
    if not rows:
        raise DataError(f"{path}: no data rows (only a header?)")
    text_key = pick_text_column(path, columns, text_column)
    if label_column is not None and label_column not in columns:
        raise DataError(
            f"{path}: no label column '{label_column}' (columns: {', '.join(columns)}); use --label-column"
        )

    texts, labels, lines, empty_lines = [], [], [], []
    for number, row in rows:
        text = cell_text(row.get(text_key))
        if not text.strip():
            empty_lines.append(number)
            continue
        label = ""
        if label_column is not None:
            label = cell_text(row.get(label_column)).strip()
            if not label:
                raise DataError(f"{path}:{number}: empty label in column '{label_column}'")
        texts.append(text)
        labels.append(label)
        lines.append(number)
    if empty_lines and not skip_empty:
        shown = ", ".join(map(str, empty_lines[:5])) + (", ..." if len(empty_lines) > 5 else "")
        raise DataError(
            f"{path}: {len(empty_lines)} row(s) with empty text (line {shown}); fix them or pass --skip-empty"
        )
    if not texts:
        raise DataError(f"{path}: every row has empty text")
    return LabelledTexts(
        texts=texts,
        labels=labels,
        path=path,
        sha256=hashlib.sha256(raw).hexdigest(),
        skipped_empty=len(empty_lines),
        source=str(path),
        line_numbers=lines,
    )


def label_list(data: LabelledTexts) -> list[str]:
    """The label set in a stable order: numeric order when every label is an integer, else sorted.

    Raises:
        DataError: fewer than two classes, since a classifier cannot learn from one.
    """
    unique = set(data.labels)
    if len(unique) < 2:
        raise DataError(f"{data.source or data.path}: needs at least two classes, found {sorted(unique)}")
    if all(label.lstrip("-").isdigit() for label in unique):
        return sorted(unique, key=int)
    return sorted(unique)


def encode_labels(data: LabelledTexts, labels: list[str]) -> list[int]:
    """Map raw labels to class ids; DataError naming labels the model has never seen."""
    index = {label: i for i, label in enumerate(labels)}
    unseen = sorted(set(data.labels) - set(index))
    if unseen:
        raise DataError(
            f"{data.source or data.path}: label(s) {', '.join(map(repr, unseen))} not among the training labels "
            f"({', '.join(labels)})"
        )
    return [index[label] for label in data.labels]


def stratified_split(data: LabelledTexts, fraction: float, seed: int) -> tuple[LabelledTexts, LabelledTexts]:
    """Hold out ``fraction`` of each class (at least one row per class) as evaluation data, seeded.

    Raises:
        DataError: a class has too few rows to appear on both sides.
    """
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(data.labels):
        by_label[label].append(i)
    rng = random.Random(seed)
    train_idx, eval_idx = [], []
    for label in sorted(by_label):
        indices = by_label[label]
        if len(indices) < 2:
            raise DataError(f"{data.source}: class {label!r} has {len(indices)} row; need 2+ to hold some out")
        rng.shuffle(indices)
        n_eval = min(len(indices) - 1, max(1, round(len(indices) * fraction)))
        eval_idx.extend(indices[:n_eval])
        train_idx.extend(indices[n_eval:])
    source = data.source or str(data.path)
    return (
        data.subset(sorted(train_idx), f"{source} (train side of {fraction:g} split, seed {seed})"),
        data.subset(sorted(eval_idx), f"{source} (held-out {fraction:g}, seed {seed})"),
    )
