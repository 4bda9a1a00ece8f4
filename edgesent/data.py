"""Loading labelled text from CSV, TSV and JSONL, with errors that name the file, the line and the fix.

Stdlib only: the loader is used by training, evaluation and parity alike, and validation has to
happen before any model is loaded so a bad file costs seconds, not a training run.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import random
import re
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from edgesent.errors import DataError


FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
TEXT_FALLBACK = "sentence"  # GLUE files (SST-2) call the text column "sentence"
_INTEGER = re.compile(r"-?[0-9]+")  # ASCII digits only: "²".isdigit() is True, int("²") fails

# A long text is an input like any other, not a malformed file: lift csv's 128 KiB field limit once, for every
# reader in the process, so whether a file loads never depends on what ran before.
csv.field_size_limit(1 << 30)


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


def cell_text(value: object) -> str:
    """A cell as a string: None is empty, and integral JSON numbers lose their ``.0`` (label 1.0 is "1")."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip() if not isinstance(value, str) else value


@dataclass
class Record:
    """One input record: where it starts, its text and raw label, or why it cannot be used.

    Attributes:
        line: 1-based line of the file where the record starts (argument number for command-line texts).
        text: the text ("" when the record is unusable).
        label: the raw label as a string ("" when no label column is read).
        error: why the record has no usable text (lenient reading only), else None.
        replaced: bytes that were not UTF-8 (or lone surrogates) were replaced with U+FFFD.
    """

    line: int
    text: str
    label: str = ""
    error: str | None = None
    replaced: bool = False


@dataclass
class ReadStats:
    """What a reader saw, filled in while it streams: the file's sha256 and the repaired lines no record has
    claimed yet (``claim_replaced``), so memory stays constant however many lines are repaired."""

    sha256: str = ""
    unclaimed: list[int] = field(default_factory=list)

    def claim_replaced(self, first_line: int) -> bool:
        """Whether a line of the record starting at ``first_line`` was repaired; called once per record, as it is
        yielded (the readers read no further than the record's last line), and forgets the lines it saw."""
        hit = any(number >= first_line for number in self.unclaimed)
        self.unclaimed.clear()
        return hit


def repair_text(text: str) -> str | None:
    """``text`` with characters that are not valid Unicode replaced by U+FFFD; None when it is valid.

    Command-line arguments keep undecodable bytes as lone surrogates, and JSON can spell them ("\\ud800");
    tokenizers refuses both, so they are replaced like undecodable bytes in a file.
    """
    try:
        text.encode("utf-8")
        return None
    except UnicodeEncodeError:
        pass
    try:
        raw = text.encode("utf-8", "surrogateescape")  # bytes Python could not decode
    except UnicodeEncodeError:  # other lone surrogates: each one character, so each one U+FFFD
        return "".join("\ufffd" if "\ud800" <= char <= "\udfff" else char for char in text)
    return raw.decode("utf-8", errors="replace")


def check_unicode(path: Path, line: int, text: str) -> None:
    """Refuse text that is not valid Unicode (strict readers): JSON can spell a lone surrogate (``"\\ud83d"``, half
    an emoji cut by a scraper), which the tokenizer rejects later with a bare TypeError.

    Raises:
        DataError: naming the file and line.
    """
    if repair_text(text) is not None:
        raise DataError(
            f"{path}:{line}: text that is not valid Unicode (a lone surrogate escape such as \\ud83d, e.g. half an "
            "emoji); fix or drop it"
        )


def read_lines(
    path: Path, stream: IO[bytes], strict: bool, stats: ReadStats, progress: Any = None
) -> Iterator[tuple[int, str]]:
    """(line number, text) per line of a byte stream: the line rule of every reader (records and spans).

    Split on ``\n`` only: U+2028 or U+0085 inside a JSON string or a CSV field is text, not a line break.
    A leading BOM is dropped. Undecodable bytes are a DataError naming the line (strict) or replaced and
    recorded in ``stats``; ``stats.sha256`` holds the stream's hash once it is exhausted.
    """
    digest = hashlib.sha256()
    for number, raw in enumerate(stream, start=1):
        digest.update(raw)
        if progress is not None:
            progress.update(len(raw))
        if number == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            if strict:
                raise DataError(
                    f"{path}:{number}: bytes that are not UTF-8 ({err.reason}); re-save the file as UTF-8"
                ) from err
            line = raw.decode("utf-8", errors="replace")
            stats.unclaimed.append(number)
        yield number, line
    stats.sha256 = digest.hexdigest()


def _unique_columns(path: Path, names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    for position, name in enumerate(names, start=1):
        if name in seen:
            raise DataError(
                f"{path}: column '{name}' appears twice in the header (columns {seen[name]} and {position}); "
                "rename one"
            )
        seen[name] = position
    return names


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    duplicate = next((key for key in keys if keys.count(key) > 1), None)
    if duplicate is not None:
        raise ValueError(f"key '{duplicate}' appears twice")
    return dict(pairs)


def _delimited(
    path: Path, lines: Iterator[tuple[int, str]], delimiter: str, keys: tuple[str, str | None], strict: bool
) -> Iterator[Record]:
    kind = "TSV" if delimiter == "\t" else "CSV"
    # strict=True: a quote that is never closed, or text after a closing quote, is an error, not a silent merge
    reader = csv.reader((line for _, line in lines), delimiter=delimiter, quoting=csv_quoting(delimiter), strict=True)
    start = 1
    try:
        header = next(reader, None)
        if header is None:
            return
        columns = _unique_columns(path, [name.strip() for name in header])
        text_at = columns.index(pick_text_column(path, columns, keys[0]))
        label_at = None
        if keys[1] is not None:
            if keys[1] not in columns:
                raise DataError(
                    f"{path}: no label column '{keys[1]}' (columns: {', '.join(columns)}); use --label-column"
                )
            label_at = columns.index(keys[1])
        start = reader.line_num + 1
        while (row := _next_row(reader, strict)) is not None:
            if isinstance(row, csv.Error):  # lenient: this record is an error row, the next ones still count
                yield Record(start, "", error=f"malformed {kind}: {_csv_problem(row)}")
                start = reader.line_num + 1
                continue
            if not row:  # a blank line between records
                start = reader.line_num + 1
                continue
            if len(row) != len(columns):
                more = "more" if len(row) > len(columns) else "fewer"
                problem = f"{more} fields than the header has columns ({len(row)} for {len(columns)})"
                if strict:
                    raise DataError(f"{path}:{start}: {problem}; fix the quoting or the delimiters")
                yield Record(start, "", error=f"wrong field count: {problem}")
            else:
                yield Record(start, row[text_at], row[label_at] if label_at is not None else "")
            start = reader.line_num + 1
    except csv.Error as err:
        if "unexpected end of data" in str(err):
            raise DataError(
                f"{path}:{start}: a quoted field that starts in this record is never closed; fix the quoting"
            ) from err
        raise DataError(f"{path}:{start}: malformed {kind} ({_csv_problem(err)}); fix the quoting") from err


def _next_row(reader: Iterator[list[str]], strict: bool) -> list[str] | csv.Error | None:
    """The reader's next row, None at the end, or (lenient) the error of a malformed record: csv's reader
    starts afresh on the next line, so one bad record need not stop a prediction run. A quote never closed
    runs to the end of the file and raises even then."""
    try:
        return next(reader)
    except StopIteration:
        return None
    except csv.Error as err:
        if strict or "unexpected end of data" in str(err):
            raise
        return err


def _csv_problem(err: csv.Error) -> str:
    """csv's message, except its advice on universal newlines, which does not apply: lines split on \n only."""
    if "new-line character seen in unquoted field" in str(err):
        return "a carriage return inside an unquoted field; quote the field"
    return str(err)


def _jsonl(
    path: Path, lines: Iterator[tuple[int, str]], keys: tuple[str, str | None], strict: bool
) -> Iterator[Record]:
    text_key: str | None = None
    for number, line in lines:
        if not line.strip():
            if not strict:
                yield Record(number, "", error="empty text")
            continue
        try:
            obj = json.loads(line, object_pairs_hook=_no_duplicate_keys)
        except ValueError as err:  # JSONDecodeError, or a duplicate key
            problem = f"invalid JSON: {getattr(err, 'msg', err)}"
        except RecursionError:  # arrays or objects nested thousands deep
            problem = "invalid JSON: nested too deeply"
        else:
            problem = "" if isinstance(obj, dict) else "invalid JSON: not an object"
        if problem:
            if strict:
                raise DataError(f"{path}:{number}: {problem}")
            yield Record(number, "", error=problem)
            continue
        if text_key is None:  # the first object fixes the columns, as a header would
            text_key = pick_text_column(path, list(obj), keys[0])
            if keys[1] is not None and keys[1] not in obj:
                raise DataError(f"{path}: no label column '{keys[1]}' (columns: {', '.join(obj)}); use --label-column")
        text, label = obj.get(text_key), obj.get(keys[1]) if keys[1] is not None else ""
        problem = _json_cell_problem(text_key, text, (str,)) or _json_cell_problem(keys[1], label, _LABEL_TYPES)
        if problem:
            if strict:
                raise DataError(f"{path}:{number}: {problem}")
            yield Record(number, "", error=problem)
            continue
        yield Record(number, cell_text(text), cell_text(label))


# A JSON label may be a string, a number or a boolean (``1``, ``true``): each reads back as one class name.
_LABEL_TYPES = (str, int, float, bool)


def _json_cell_problem(key: str | None, value: object, types: tuple[type, ...]) -> str:
    """Why a JSON cell cannot be used ("" when it can): a text must be a string (``5`` is not a review, and Ray
    and Spark report it too), a label a scalar (a list would become a class named ``['x']``); missing is fine."""
    if value is None or isinstance(value, types):
        return ""
    return f"'{key}' is not a {'string' if types == (str,) else 'string, number or boolean'} ({type(value).__name__})"


def iter_records(
    source: str | Path,
    text_column: str = "text",
    label_column: str | None = None,
    *,
    strict: bool = True,
    stats: ReadStats | None = None,
    progress: bool = False,
) -> Iterator[Record]:
    """Stream the records of a CSV, TSV, JSONL or text file, one per input record, in order.

    The one reader behind training, evaluation, parity and prediction, so every stage reads a file alike.
    Memory stays constant: the file is read line by line.

    Args:
        source: the file; .csv, .tsv, .jsonl/.ndjson by extension; with ``strict=False`` any other
            extension is plain text, one record per line.
        text_column: column with the text; ``text`` falls back to ``sentence`` (GLUE) when absent.
        label_column: column with the label, or None to read no label.
        strict: raise DataError at the first unusable record (training); with False, an unusable record
            (invalid JSON, wrong field count) is yielded with ``error`` set, and bytes that are not UTF-8
            are replaced (prediction: one output row per input record).
        stats: filled in while streaming: the file's sha256 (once exhausted) and the repaired lines.
        progress: show a byte-count progress bar on stderr (tqdm hides it when stderr is not a terminal).

    Yields:
        Record per input record; a blank line in a text file is a record with empty text.

    Raises:
        DataError: missing or unreadable file, unknown format (strict), duplicate or missing columns, a quote
            that is never closed, and (strict) any malformed record. The message names file and line.
    """
    path = Path(source)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None and strict:
        raise DataError(f"{path}: unknown format '{path.suffix}'; use .csv, .tsv or .jsonl")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    stats = stats if stats is not None else ReadStats()
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed in the finally below, once the generator is done
    except OSError as err:
        raise DataError(f"{path}: cannot read it ({err.strerror or err})") from err
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=path.name, disable=None, file=sys.stderr)
    try:
        lines = read_lines(path, stream, strict, stats, bar)
        keys = (text_column, label_column)
        if fmt == "jsonl":
            records = _jsonl(path, lines, keys, strict)
        elif fmt is None:
            records = (Record(number, line.rstrip("\r\n")) for number, line in lines)
        else:
            records = _delimited(path, lines, "," if fmt == "csv" else "\t", keys, strict)
        for record in records:
            if stats.claim_replaced(record.line):
                record.replaced = True
            if strict:
                check_unicode(path, record.line, record.text)
            elif (repaired := repair_text(record.text)) is not None:
                record.text, record.replaced = repaired, True
            yield record
    finally:
        stream.close()
        if bar is not None:
            bar.close()


def iter_lines(stream: IO[bytes], stats: ReadStats | None = None) -> Iterator[Record]:
    """One record per line of a byte stream (stdin), leniently: undecodable bytes replaced and recorded."""
    stats = stats if stats is not None else ReadStats()
    for number, line in read_lines(Path("<stdin>"), stream, False, stats):
        text = line.rstrip("\r\n")
        yield Record(number, text, replaced=stats.claim_replaced(number))


def load_dataset(
    path: str | Path,
    text_column: str = "text",
    label_column: str | None = "label",
    skip_empty: bool = False,
) -> LabelledTexts:
    """Read a CSV, TSV or JSONL file of texts (and labels) into memory, strictly.

    Args:
        path: The file; its extension picks the format (.csv, .tsv, .jsonl/.ndjson).
        text_column: Column with the text; ``text`` falls back to ``sentence`` (GLUE) when absent.
        label_column: Column with the label (strings or integers), or None for unlabelled text.
        skip_empty: Drop rows whose text is empty or whitespace only, instead of failing.

    Returns:
        LabelledTexts with labels as strings ("" for every row when ``label_column`` is None).

    Raises:
        DataError: missing file, unknown format, undecodable bytes, missing or duplicate column, empty file,
            a malformed record, empty texts (unless skipped), missing labels. The message names file and line.
    """
    path = Path(path)
    stats = ReadStats()
    texts, labels, lines, empty_lines = [], [], [], []
    for record in iter_records(path, text_column, label_column, strict=True, stats=stats):
        if not record.text.strip():
            empty_lines.append(record.line)
            continue
        label = record.label.strip()
        if label_column is not None and not label:
            raise DataError(f"{path}:{record.line}: empty label in column '{label_column}'")
        texts.append(record.text)
        labels.append(label)
        lines.append(record.line)
    if not texts and not empty_lines:
        if path.stat().st_size == 0 or not path.read_bytes().strip():
            raise DataError(f"{path}: the file is empty")
        raise DataError(f"{path}: no data rows (only a header?)")
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
        sha256=stats.sha256,
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
    if all(_INTEGER.fullmatch(label) for label in unique):
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


def stratified_sample(data: LabelledTexts, size: int, seed: int) -> LabelledTexts:
    """``size`` rows (all of them when there are fewer), each class in its share, seeded.

    A sample, not a split: it never refuses a rare class (a class whose share rounds to nothing may be left out),
    so it can run after training has finished (the parity sample) or on any training set (a search's subset).
    Shares are rounded by largest remainder, so the sample has exactly ``size`` rows.
    """
    if len(data) <= size:
        return data
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(data.labels):
        by_label[label].append(i)
    shares = {label: len(indices) * size / len(data) for label, indices in by_label.items()}
    counts = {label: int(share) for label, share in shares.items()}
    by_remainder = sorted(shares, key=lambda label: (counts[label] - shares[label], label))
    for label in by_remainder[: size - sum(counts.values())]:
        counts[label] += 1
    rng = random.Random(seed)
    picked: list[int] = []
    for label in sorted(by_label):
        indices = by_label[label]
        rng.shuffle(indices)
        picked.extend(indices[: counts[label]])
    source = data.source or str(data.path)
    return data.subset(sorted(picked), f"{source} (stratified sample of {size}, seed {seed})")


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
