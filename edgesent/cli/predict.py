"""``edgesent predict``: classify texts, or find a span model's spans, from arguments, a file or stdin.

A thin shell over the library: ``data.iter_records`` reads the file (the same reader training uses, in its
lenient mode) and ``Predictor.predict_stream`` predicts, both in constant memory. This module only formats
rows and reports on stderr. Per-text problems never stop a run; each still gets its output row, so output
row i always belongs to input i, and the problems are counted (with line numbers) on stderr:

- an empty or whitespace-only text, or a JSONL line that is not a JSON object, gets a row with an ``error``;
- bytes that are not UTF-8 are replaced with U+FFFD and the line is still classified;
- a text longer than the model's ``max_length`` tokens is classified on its first ``max_length`` tokens;
- texts with tokens the vocabulary does not know are counted (a sign of another language or domain).

A malformed file (a quote that is never closed, a duplicate column) is one error line naming the line
where the problem starts, exit 2, and no output file.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click

from edgesent.cli._options import no_verify_option, text_column_option
from edgesent.config.providers import PROVIDERS


if TYPE_CHECKING:
    from edgesent.data import Record
    from edgesent.runtime import Prediction

_PREVIEW_CHARS = 60
_SHOWN_LINES = 10
_SPANS_SEPARATOR = "  |  "  # between a span row's spans (variable width) and its text preview


@dataclass
class _Where:
    """How many inputs had one problem, and the first lines of them: constant memory on any input."""

    count: int = 0
    first: list[int] = field(default_factory=list)

    def add(self, line: int) -> None:
        self.count += 1
        if len(self.first) < _SHOWN_LINES:
            self.first.append(line)


@dataclass
class _Report:
    """What happened to the inputs, for the summary on stderr."""

    unit: str  # "line" or "argument"
    predicted: int = 0
    problems: dict[str, _Where] = field(default_factory=dict)
    truncated: _Where = field(default_factory=_Where)
    invalid_utf8: _Where = field(default_factory=_Where)
    unknown: _Where = field(default_factory=_Where)

    def add(self, record: Record, prediction: Prediction) -> None:
        if record.replaced:
            self.invalid_utf8.add(record.line)
        if prediction.error:
            self.problems.setdefault(prediction.error.split(":")[0], _Where()).add(record.line)
            return
        self.predicted += 1
        if prediction.truncated:
            self.truncated.add(record.line)
        if prediction.unknown_tokens:
            self.unknown.add(record.line)

    def warnings(self, max_length: int) -> list[str]:
        lines = [
            f"warning: {where.count} input(s) with {problem}, no prediction ({self._at(where)})"
            for problem, where in self.problems.items()
        ]
        if self.invalid_utf8.count:
            lines.append(
                f"warning: {self.invalid_utf8.count} input(s) not valid UTF-8; bad bytes replaced with U+FFFD "
                f"({self._at(self.invalid_utf8)})"
            )
        if self.truncated.count:
            lines.append(
                f"warning: {self.truncated.count} text(s) longer than {max_length} tokens; classified on their "
                f"first {max_length} tokens ({self._at(self.truncated)})"
            )
        if self.unknown.count:
            lines.append(
                f"warning: {self.unknown.count} text(s) hold tokens the model's vocabulary does not know "
                f"({self._at(self.unknown)}); another language or domain predicts poorly"
            )
        return lines

    def _at(self, where: _Where) -> str:
        return f"{self.unit} {', '.join(map(str, where.first))}" + (", ..." if where.count > len(where.first) else "")


@click.command()
@click.argument("model_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("texts", nargs=-1, metavar="[TEXT]...")
@click.option(
    "--input",
    "input_path",
    type=click.Path(path_type=Path),
    callback=lambda ctx, param, value: _single_file(ctx, param, value, exists=True),
    help="File of texts: .csv/.tsv/.jsonl (text column) or anything else as one text per line. With --engine: "
    "a directory or glob of .parquet/.csv/.tsv/.jsonl files.",
)
@text_column_option
@click.option(
    "--json", "as_json", is_flag=True, help="JSON Lines: one object per input (label, score, scores; or spans)."
)
@click.option(
    "--output",
    "output_path",
    type=click.Path(path_type=Path),
    callback=lambda ctx, param, value: _single_file(ctx, param, value, exists=False),
    help="Write the results to this file (replaced only when the run succeeds; a file with content only with "
    "--overwrite; never the --input file) instead of stdout. With --engine: the output directory (Parquet files "
    "and edgesent.json, written atomically).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Texts per model call.")
@click.option(
    "--top-k", type=click.IntRange(min=1), default=None, help="Keep only the k most probable labels (classifiers)."
)
@click.option(
    "--provider",
    type=click.Choice(PROVIDERS),
    default="auto",
    show_default=True,
    help="Execution provider; 'auto' runs a model exported for OpenVINO on OpenVINO (when installed), else uses CUDA "
    "when onnxruntime-gpu sees a GPU; 'openvino' needs pip install 'edgesent[openvino]'.",
)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="ONNX Runtime threads (default: all cores).")
@no_verify_option
@click.option(
    "--engine",
    type=click.Choice(["ray", "spark"]),
    default=None,
    is_eager=True,  # read first: it decides what --input and --output may be
    help="Score a data-lake folder with Ray Data or Spark (local unless RAY_ADDRESS or an active session says "
    "otherwise): --input DIR_OR_GLOB, Parquet files written to --output OUT_DIR.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="With --engine: Ray actors or Spark local cores, each running one predictor.",
)
@click.option("--overwrite", is_flag=True, help="Replace the --output file (with --engine: directory) if it exists.")
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
    engine: str | None,
    workers: int,
    overwrite: bool,
) -> None:
    """Classify TEXT arguments, the texts of --input FILE, or lines piped on stdin with an exported model.

    Prints a table, or JSON Lines with --json; one result per input, in input order. A span model
    (token-classification) prints each text's spans as `term [label score]`, or in JSON their text, character
    offsets, label and score. Empty texts, bytes
    that are not UTF-8 and texts longer than the model's max_length are reported on stderr, never fatal.
    With --engine ray|spark, scores a folder or glob of Parquet, CSV, TSV or JSONL files into a folder of Parquet.
    """
    if engine is not None:
        _check_engine_options(texts, input_path, output_path, as_json, top_k)
        return _predict_files(
            model_dir,
            input_path,
            output_path,
            engine,
            text_column,
            batch_size,
            workers,
            provider,
            threads,
            no_verify,
            overwrite,
        )
    stdin = click.get_binary_stream("stdin")
    if texts and input_path is not None:
        raise click.BadParameter("give TEXT arguments or --input FILE, not both", param_hint="'--input'")
    if not texts and input_path is None and stdin.isatty():
        raise click.UsageError("no input: give TEXT arguments, --input FILE, or pipe texts on stdin")
    _check_output_file(input_path, output_path, overwrite)
    from edgesent.artifacts import atomic_output_file
    from edgesent.runtime import Predictor

    predictor = Predictor.load(model_dir, provider=provider, threads=threads, verify=not no_verify)
    report = _Report("argument" if texts else "line")
    records = _read_inputs(texts, input_path, stdin, text_column)
    started = time.perf_counter()
    if output_path is None:
        _write_rows(predictor, records, click.echo, report, as_json, batch_size, top_k)
    else:
        with atomic_output_file(output_path) as handle:
            _write_rows(predictor, records, lambda row: handle.write(row + "\n"), report, as_json, batch_size, top_k)
    for line in report.warnings(predictor.max_length):
        click.echo(line, err=True)
    where = f" to {output_path}" if output_path else ""
    click.echo(f"predicted {report.predicted} text(s){where} in {time.perf_counter() - started:.2f} s", err=True)


def _single_file(ctx: click.Context, param: click.Parameter, value: Path | None, exists: bool) -> Path | None:
    """Without --engine, --input and --output are files, checked as before; with it, directories and globs."""
    if value is None or ctx.params.get("engine"):
        return value
    return click.Path(exists=exists, dir_okay=False, path_type=Path).convert(value, param, ctx)


def _check_output_file(input_path: Path | None, output_path: Path | None, overwrite: bool) -> None:
    """Nothing lost: --output never replaces the --input file, nor a file with something in it without --overwrite
    (an empty one, ``mktemp``'s, is fair game; a device, FIFO or ``/dev/stdout`` is written into:
    ``atomic_output_file``)."""
    from edgesent.artifacts import writes_in_place

    if output_path is None:
        if overwrite:
            raise click.BadParameter(
                "--overwrite replaces the --output file; give --output", param_hint="'--overwrite'"
            )
        return
    if writes_in_place(output_path):
        return
    if input_path is not None and output_path.exists() and os.path.samefile(input_path, output_path):
        raise click.BadParameter(
            f"{output_path} is the --input file; write the results elsewhere", param_hint="'--output'"
        )
    if output_path.resolve().is_file() and output_path.stat().st_size and not overwrite:
        raise click.BadParameter(f"{output_path} exists; pass --overwrite to replace it", param_hint="'--output'")


def _check_engine_options(
    texts: tuple[str, ...],
    input_path: Path | None,
    output_path: Path | None,
    as_json: bool,
    top_k: int | None,
) -> None:
    if texts:
        raise click.BadParameter("--engine scores --input files, not TEXT arguments", param_hint="'--engine'")
    if input_path is None:
        raise click.UsageError(
            "--engine needs --input DIR_OR_GLOB (a folder or glob of Parquet, CSV, TSV or JSONL files)"
        )
    if output_path is None:
        raise click.BadParameter("--engine writes Parquet files: give --output OUT_DIR", param_hint="'--output'")
    if as_json or top_k is not None:
        option = "--json" if as_json else "--top-k"
        raise click.BadParameter(
            f"{option} does not apply with --engine: the Parquet output has one score_<label> column per label "
            "(a span model: a spans column of JSON)",
            param_hint=f"'{option}'",
        )


def _predict_files(
    model_dir: Path,
    input_path: Any,
    output_path: Any,
    engine: Any,
    text_column: str,
    batch_size: int,
    workers: int,
    provider: str,
    threads: int | None,
    no_verify: bool,
    overwrite: bool,
) -> None:
    from edgesent.distributed.files import predict_files

    summary = predict_files(
        model_dir,
        input_path,
        output_path,
        engine=engine,
        text_column=text_column,
        batch_size=batch_size,
        workers=workers,
        provider=provider,
        threads=threads or 1,
        verify=not no_verify,
        overwrite=overwrite,
    )
    for error, count in summary["errors"].items():
        click.echo(f"warning: {count} input(s) with {error}, no prediction", err=True)
    click.echo(
        f"predicted {summary['predicted']} of {summary['rows']} text(s) with {engine} to {output_path} "
        f"in {summary['seconds']:.2f} s",
        err=True,
    )


def _read_inputs(
    texts: tuple[str, ...], input_path: Path | None, stdin: IO[bytes], text_column: str
) -> Iterator[Record]:
    """Every input as a record, lazily, from the arguments, the file or stdin."""
    from edgesent.data import Record, iter_lines, iter_records, repair_text

    if input_path is not None:
        return iter_records(input_path, text_column, strict=False, progress=True)
    if not texts:
        return iter_lines(stdin)
    records = []
    for number, text in enumerate(texts, start=1):
        repaired = repair_text(text)
        records.append(Record(number, text if repaired is None else repaired, replaced=repaired is not None))
    return iter(records)


def _write_rows(
    predictor: Any,
    records: Iterator[Record],
    write: Callable[[str], None],
    report: _Report,
    as_json: bool,
    batch_size: int,
    top_k: int | None,
) -> None:
    """Stream records through ``Predictor.predict_stream`` and write each row in input order.

    The records wait in a queue while their window is predicted: at most one window of them is held.
    """
    pending: deque[Record] = deque()

    def texts() -> Iterator[str | None]:
        for record in records:
            pending.append(record)
            yield None if record.error else record.text

    label_width = max(len(label) for label in predictor.labels)
    for index, prediction in enumerate(predictor.predict_stream(texts(), batch_size, top_k)):
        record = pending.popleft()
        if record.error:
            prediction = type(prediction).failed(record.error, spans=prediction.spans is not None)
        if index == 0 and not as_json:  # after the first read, so a bad header fails before any output
            write(_format_header(prediction, label_width))
        report.add(record, prediction)
        write(_format_json(prediction) if as_json else _format_row(record, prediction, label_width, top_k))


def _format_json(prediction: Prediction) -> str:
    return json.dumps(prediction.to_dict(), ensure_ascii=False)


def _format_header(prediction: Prediction, label_width: int) -> str:
    if prediction.spans is not None:
        return f"{'#':>6}  spans{_SPANS_SEPARATOR}text"
    return f"{'#':>6}  {'label':<{label_width}}  {'score':>6}  text"


def _format_row(record: Record, prediction: Prediction, label_width: int, top_k: int | None) -> str:
    text = " ".join(record.text.split())
    text = text if len(text) <= _PREVIEW_CHARS else text[: _PREVIEW_CHARS - 1] + "…"
    if prediction.spans is not None:
        return _format_span_row(record.line, prediction, text)
    if prediction.label is None or prediction.score is None:
        return f"{record.line:>6}  {'-':<{label_width}}  {'-':>6}  ({prediction.error}) {text}".rstrip()
    others = " ".join(f"{label}={p:.3f}" for label, p in list(prediction.scores.items())[1:])
    others = f"  [{others}]" if top_k and others else ""
    return f"{record.line:>6}  {prediction.label:<{label_width}}  {prediction.score:6.3f}  {text}{others}"


def _format_span_row(line: int, prediction: Prediction, text: str) -> str:
    """``#``, the spans as ``term [label 0.93]`` joined with ``, `` (``-`` for none), then the text preview."""
    assert prediction.spans is not None
    if prediction.error:
        return f"{line:>6}  -{_SPANS_SEPARATOR}({prediction.error}) {text}".rstrip()
    spans = ", ".join(
        f"{' '.join(span['text'].split())} [{span['label']} {span['score']:.2f}]" for span in prediction.spans
    )
    return f"{line:>6}  {spans or '-'}{_SPANS_SEPARATOR}{text}"
