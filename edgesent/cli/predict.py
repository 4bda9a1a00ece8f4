"""``edgesent predict``: classify texts from arguments, a file or stdin with an exported model.

Files are streamed: read, predicted and written a window of texts at a time, so a file of any size runs in
constant memory. Per-text problems never stop a run. Each one still gets its output row, so output row i
always belongs to input i, and the problems are counted (with line numbers) on stderr:

- an empty or whitespace-only text gets a row with ``"error": "empty text"`` and no label;
- a JSONL line that is not a JSON object gets a row with ``"error": "invalid JSON ..."``;
- bytes that are not UTF-8 are replaced with U+FFFD and the line is still classified;
- a text longer than the model's ``max_length`` tokens is classified on its first ``max_length`` tokens.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click

from edgesent.cli._options import no_verify_option, text_column_option
from edgesent.data import FORMATS, cell_text, csv_quoting, pick_text_column
from edgesent.errors import ConfigError, DataError


if TYPE_CHECKING:
    from edgesent.runtime import Prediction, Predictor

EMPTY_TEXT = "empty text"
_PREVIEW_CHARS = 60
_SHOWN_LINES = 10


@dataclass
class _Record:
    """One input: where it came from (1-based line or argument number), its text, or why it cannot be used."""

    where: int
    text: str
    error: str | None = None


@dataclass
class _Report:
    """What happened to the inputs, for the summary on stderr."""

    unit: str  # "line" or "argument"
    predicted: int = 0
    problems: dict[str, list[int]] = field(default_factory=dict)
    truncated: list[int] = field(default_factory=list)
    invalid_utf8: list[int] = field(default_factory=list)

    def warnings(self, max_length: int) -> list[str]:
        lines = [
            f"warning: {len(where)} input(s) with {problem}, no prediction ({self._at(where)})"
            for problem, where in self.problems.items()
        ]
        if self.invalid_utf8:
            lines.append(
                f"warning: {len(self.invalid_utf8)} input(s) not valid UTF-8; bad bytes replaced with U+FFFD "
                f"({self._at(self.invalid_utf8)})"
            )
        if self.truncated:
            lines.append(
                f"warning: {len(self.truncated)} text(s) longer than {max_length} tokens; classified on their first "
                f"{max_length} tokens ({self._at(self.truncated)})"
            )
        return lines

    def _at(self, where: list[int]) -> str:
        shown = ", ".join(map(str, where[:_SHOWN_LINES])) + (", ..." if len(where) > _SHOWN_LINES else "")
        return f"{self.unit} {shown}"


@click.command()
@click.argument("model_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("texts", nargs=-1, metavar="[TEXT]...")
@click.option(
    "--input",
    "input_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File of texts: .csv/.tsv/.jsonl (text column) or anything else as one text per line.",
)
@text_column_option
@click.option("--json", "as_json", is_flag=True, help="JSON Lines: one object per input (label, score, scores).")
@click.option(
    "--output",
    "output_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the results to this file (replaced only when the run succeeds) instead of stdout.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Texts per model call.")
@click.option("--top-k", type=click.IntRange(min=1), default=None, help="Keep only the k most probable labels.")
@click.option(
    "--provider",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="Execution provider; 'auto' uses CUDA when onnxruntime-gpu sees a GPU.",
)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="ONNX Runtime threads (default: all cores).")
@no_verify_option
def predict(
    model_dir: Path,
    texts: tuple[str, ...],
    input_path: Path | None,
    text_column: str,
    as_json: bool,
    output_path: Path | None,
    batch_size: int,
    top_k: int | None,
    provider: str,
    threads: int | None,
    no_verify: bool,
) -> None:
    """Classify TEXT arguments, the texts of --input FILE, or lines piped on stdin with an exported model.

    Prints a table, or JSON Lines with --json; one result per input, in input order. Empty texts, bytes
    that are not UTF-8 and texts longer than the model's max_length are reported on stderr, never fatal.
    """
    stdin = click.get_binary_stream("stdin")
    if texts and input_path is not None:
        raise click.BadParameter("give TEXT arguments or --input FILE, not both", param_hint="'--input'")
    if not texts and input_path is None and stdin.isatty():
        raise click.UsageError("no input: give TEXT arguments, --input FILE, or pipe texts on stdin")
    from edgesent.runtime import Predictor

    predictor = Predictor.load(model_dir, provider=provider, threads=threads, verify=not no_verify)
    report = _Report("argument" if texts else "line")
    started = time.perf_counter()
    with _opened_output(output_path) as write:
        _predict_stream(
            predictor,
            _read_inputs(texts, input_path, stdin, text_column, report),
            write,
            report,
            as_json,
            batch_size,
            top_k,
        )
    for line in report.warnings(predictor.max_length):
        click.echo(line, err=True)
    where = f" to {output_path}" if output_path else ""
    click.echo(f"predicted {report.predicted} text(s){where} in {time.perf_counter() - started:.2f} s", err=True)


def _predict_stream(
    predictor: Predictor,
    records: Iterator[_Record],
    write: Callable[[str], None],
    report: _Report,
    as_json: bool,
    batch_size: int,
    top_k: int | None,
) -> None:
    """Predict window by window (the runtime's length-sorting window) and write each row in input order."""
    from edgesent.runtime import SORT_WINDOW_BATCHES

    label_width = max(len(label) for label in predictor.labels)
    for index, chunk in enumerate(_chunks(records, batch_size * SORT_WINDOW_BATCHES)):
        if index == 0 and not as_json:  # after the first read, so a bad header fails before any output
            write(f"{'#':>6}  {'label':<{label_width}}  {'score':>6}  text")
        predictions = iter(predictor.predict([r.text for r in chunk if r.error is None], batch_size, top_k))
        for record in chunk:
            prediction = None if record.error else next(predictions)
            if record.error:
                report.problems.setdefault(record.error.split(":")[0], []).append(record.where)
            else:
                report.predicted += 1
                if prediction.truncated:
                    report.truncated.append(record.where)
            write(_format_json(record, prediction) if as_json else _format_row(record, prediction, label_width, top_k))


def _format_json(record: _Record, prediction: Prediction | None) -> str:
    if prediction is None:
        obj: dict[str, Any] = {"label": None, "score": None, "scores": {}, "truncated": False, "error": record.error}
    else:
        obj = prediction.to_dict()
    return json.dumps(obj, ensure_ascii=False)


def _format_row(record: _Record, prediction: Prediction | None, label_width: int, top_k: int | None) -> str:
    text = " ".join(record.text.split())
    text = text if len(text) <= _PREVIEW_CHARS else text[: _PREVIEW_CHARS - 1] + "…"
    if prediction is None:
        return f"{record.where:>6}  {'-':<{label_width}}  {'-':>6}  ({record.error}) {text}".rstrip()
    others = " ".join(f"{label}={p:.3f}" for label, p in list(prediction.scores.items())[1:])
    others = f"  [{others}]" if top_k and others else ""
    return f"{record.where:>6}  {prediction.label:<{label_width}}  {prediction.score:6.3f}  {text}{others}"


def _chunks(records: Iterable[_Record], size: int) -> Iterator[list[_Record]]:
    chunk: list[_Record] = []
    for record in records:
        chunk.append(record)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _read_inputs(
    texts: tuple[str, ...], input_path: Path | None, stdin: IO[bytes], text_column: str, report: _Report
) -> Iterator[_Record]:
    """Every input as a record, lazily; empty texts are marked, never dropped."""
    if texts:
        records: Iterable[_Record] = (_Record(n, text) for n, text in enumerate(texts, start=1))
    elif input_path is None:
        records = _read_lines(stdin, report, None)
    else:
        records = _read_file(input_path, text_column, report)
    for record in records:
        repaired = None if record.text.isascii() else _repaired(record.text)
        if repaired is not None:
            record.text = repaired
            report.invalid_utf8.append(record.where)
        if record.error is None and not record.text.strip():
            record.error = EMPTY_TEXT
        yield record


def _repaired(text: str) -> str | None:
    """``text`` with characters that are not valid Unicode replaced by U+FFFD; None when it is valid.

    Arguments keep undecodable bytes as lone surrogates, and JSON can spell them ("\\ud800"); tokenizers
    refuses both, so they are replaced like undecodable bytes in a file.
    """
    try:
        text.encode("utf-8")
        return None
    except UnicodeEncodeError:
        pass
    try:
        raw = text.encode("utf-8", "surrogateescape")  # bytes Python could not decode
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "replace")  # other lone surrogates
    return raw.decode("utf-8", errors="replace")


def _read_file(path: Path, text_column: str, report: _Report) -> Iterator[_Record]:
    fmt = FORMATS.get(path.suffix.lower(), "txt")
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed in the finally below, after the generator is drained
    except OSError as err:
        raise DataError(f"{path}: cannot read it ({err.strerror or err})") from err
    progress = _progress(path)
    try:
        if fmt == "txt":
            yield from _read_lines(stream, report, progress)
        elif fmt == "jsonl":
            yield from _read_jsonl(path, stream, text_column, report, progress)
        else:
            yield from _read_delimited(path, stream, "," if fmt == "csv" else "\t", text_column, report, progress)
    finally:
        stream.close()
        progress.close()


def _progress(path: Path) -> Any:
    """A byte-count progress bar on stderr; tqdm hides it when stderr is not a terminal."""
    from tqdm import tqdm

    return tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=path.name, disable=None, file=sys.stderr)


def _decoded(stream: IO[bytes], report: _Report, progress: Any) -> Iterator[tuple[int, str]]:
    """(line number, text) for each line of a byte stream, decoding UTF-8 and replacing undecodable bytes."""
    for number, raw in enumerate(stream, start=1):
        if progress is not None:
            progress.update(len(raw))
        if number == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            line = raw.decode("utf-8", errors="replace")
            report.invalid_utf8.append(number)
        yield number, line


def _read_lines(stream: IO[bytes], report: _Report, progress: Any) -> Iterator[_Record]:
    for number, line in _decoded(stream, report, progress):
        yield _Record(number, line.rstrip("\r\n"))


def _read_jsonl(path: Path, stream: IO[bytes], text_column: str, report: _Report, progress: Any) -> Iterator[_Record]:
    key = None
    for number, line in _decoded(stream, report, progress):
        if not line.strip():
            yield _Record(number, "")
            continue
        try:
            obj = json.loads(line)
        except ValueError as err:
            yield _Record(number, "", f"invalid JSON: {err.msg}")
            continue
        if not isinstance(obj, dict):
            yield _Record(number, "", "invalid JSON: not an object")
            continue
        if key is None:  # the first object fixes the column, as a header would
            key = pick_text_column(path, list(obj), text_column)
        yield _Record(number, cell_text(obj.get(key)))


def _read_delimited(
    path: Path, stream: IO[bytes], delimiter: str, text_column: str, report: _Report, progress: Any
) -> Iterator[_Record]:
    # A long text is an input to report, not a csv.Error: lift the 128 KiB field limit.
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))
    lines = (line for _, line in _decoded(stream, report, progress))
    reader = csv.reader(lines, delimiter=delimiter, quoting=csv_quoting(delimiter))
    try:
        header = next(reader, None)
        if header is None:
            return
        columns = [name.strip() for name in header]
        column = columns.index(pick_text_column(path, columns, text_column))
        first_line = reader.line_num + 1
        for row in reader:
            yield _Record(first_line, row[column] if column < len(row) else "")
            first_line = reader.line_num + 1
    except csv.Error as err:
        kind = "TSV" if delimiter == "\t" else "CSV"
        raise DataError(f"{path}:{reader.line_num}: malformed {kind} ({err}); fix the quoting or use .txt") from err


@contextlib.contextmanager
def _opened_output(path: Path | None) -> Iterator[Callable[[str], None]]:
    """A line writer: stdout, or a temporary file renamed over ``path`` only when the whole run succeeds."""
    if path is None:
        yield click.echo
        return
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(tmp, "w", encoding="utf-8", newline="\n")  # noqa: SIM115 - closed by the with below
    except OSError as err:
        raise ConfigError(f"cannot write {path}: {err.strerror or err}") from err
    try:
        with handle:
            yield lambda line: handle.write(line + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
