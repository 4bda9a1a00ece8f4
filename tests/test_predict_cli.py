"""``edgesent predict``: input formats, output formats, problem reporting and exit codes."""

from __future__ import annotations

import io
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import onnxruntime as ort
import pytest
from click.testing import CliRunner, Result
from conftest import LABELS, LONG_TEXT, make_texts, no_leftovers, write_csv

from edgesent.cli import cli
from edgesent.runtime import SORT_WINDOW_BATCHES, Predictor
from edgesent.sessions import CUDA_PROVIDER


@pytest.fixture(scope="module")
def predictor(short_onnx_dir: Path) -> Predictor:
    return Predictor.load(short_onnx_dir, provider="cpu")


def _run(runner: CliRunner, *args: object, stdin: bytes | str | None = None) -> Result:
    return runner.invoke(cli, ["predict", *map(str, args)], input=stdin)


def _rows(result: Result) -> list[dict]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def _labels(predictor: Predictor, texts: list[str]) -> list[str]:
    return [p.label for p in predictor.predict(texts)]


def test_help(runner: CliRunner) -> None:
    result = _run(runner, "--help")
    assert result.exit_code == 0
    options = "--input --text-column --json --output --batch-size --top-k --provider --threads --no-verify"
    for option in options.split():
        assert option in result.output


def test_text_arguments_as_json_lines(runner: CliRunner, short_onnx_dir: Path, predictor: Predictor) -> None:
    texts = ["great food", "awful rude staff", "ordinary tuesday"]
    rows = _rows(_run(runner, short_onnx_dir, *texts, "--json"))
    assert [row["label"] for row in rows] == _labels(predictor, texts)
    for row, pred in zip(rows, predictor.predict(texts)):
        assert set(row) == {"label", "score", "scores", "truncated", "unknown_tokens"}
        assert list(row["scores"]) == LABELS
        assert row["score"] == pytest.approx(pred.score)


def test_table_output_keeps_input_order(runner: CliRunner, short_onnx_dir: Path, predictor: Predictor) -> None:
    texts = ["great food", "awful rude staff"]
    result = _run(runner, short_onnx_dir, *texts)
    assert result.exit_code == 0, result.output
    header, *lines = result.stdout.splitlines()
    assert header.split() == ["#", "label", "score", "text"]
    assert [line.split()[:2] for line in lines] == [
        [str(i), label] for i, label in enumerate(_labels(predictor, texts), 1)
    ]
    assert lines[1].endswith("awful rude staff")
    assert "predicted 2 text(s)" in result.stderr


def test_top_k(runner: CliRunner, short_onnx_dir: Path) -> None:
    (row,) = _rows(_run(runner, short_onnx_dir, "great", "--json", "--top-k", "2"))
    assert len(row["scores"]) == 2 and next(iter(row["scores"])) == row["label"]
    table = _run(runner, short_onnx_dir, "great", "--top-k", "2").stdout.splitlines()[1]
    assert table.count("=") == 1  # the runner-up label=probability


SPAN_TEXTS = ["great 😀 service 👍🏽 was awful", "服务很好 the staff", "Café naïve résumé"]


def test_span_model_json_lines_are_predictor_rows(runner: CliRunner, tiny_span_onnx_dir: Path) -> None:
    rows = _rows(_run(runner, tiny_span_onnx_dir, *SPAN_TEXTS, "", "--json"))
    expected = Predictor.load(tiny_span_onnx_dir).predict(SPAN_TEXTS)
    assert rows[:3] == [pred.to_dict() for pred in expected]
    assert rows[3] == {"spans": [], "truncated": False, "unknown_tokens": 0, "error": "empty text"}
    for text, row in zip(SPAN_TEXTS, rows):
        assert set(row) == {"spans", "truncated", "unknown_tokens"} and row["spans"]
        assert all(text[s["start"] : s["end"]] == s["text"] for s in row["spans"])


def test_span_model_table(runner: CliRunner, tiny_span_onnx_dir: Path) -> None:
    result = _run(runner, tiny_span_onnx_dir, *SPAN_TEXTS, "  ")
    assert result.exit_code == 0, result.output
    header, *lines = result.stdout.splitlines()
    assert header.split() == ["#", "spans", "|", "text"]
    expected = Predictor.load(tiny_span_onnx_dir).predict(SPAN_TEXTS)
    for i, (text, line, pred) in enumerate(zip(SPAN_TEXTS, lines, expected), 1):
        terms = ", ".join(f"{s['text']} [{s['label']} {s['score']:.2f}]" for s in pred.spans or [])
        assert line == f"{i:>6}  {terms}  |  {text}"
    assert lines[3] == "     4  -  |  (empty text)"
    assert "predicted 3 text(s)" in result.stderr


def test_span_model_refuses_top_k(runner: CliRunner, tiny_span_onnx_dir: Path) -> None:
    result = _run(runner, tiny_span_onnx_dir, "great", "--top-k", "2")
    assert result.exit_code == 2 and "a token-classification model returns spans" in result.stderr
    assert result.stdout == ""


def test_stdin_lines_with_empty_and_non_utf8_lines(
    runner: CliRunner, short_onnx_dir: Path, predictor: Predictor
) -> None:
    data = b"great food\n\n   \nbad \xff\xfe bytes\r\nawful\n"
    result = _run(runner, short_onnx_dir, "--json", stdin=data)
    rows = _rows(result)
    assert len(rows) == 5  # one row per input line, so row i is line i
    assert [row.get("error") for row in rows] == [None, "empty text", "empty text", None, None]
    assert rows[1]["label"] is None and rows[1]["scores"] == {}
    assert [rows[i]["label"] for i in (0, 3, 4)] == _labels(
        predictor, ["great food", "bad \ufffd\ufffd bytes", "awful"]
    )
    assert "2 input(s) with empty text, no prediction (line 2, 3)" in result.stderr
    assert "1 input(s) not valid UTF-8; bad bytes replaced with U+FFFD (line 4)" in result.stderr
    assert "predicted 3 text(s)" in result.stderr


def test_the_summary_counts_every_problem_and_names_the_first_lines(runner: CliRunner, short_onnx_dir: Path) -> None:
    result = _run(runner, short_onnx_dir, "--json", stdin=b"\n" * 12 + b"fine\n")
    assert len(_rows(result)) == 13
    first = ", ".join(str(n) for n in range(1, 11))
    assert f"12 input(s) with empty text, no prediction (line {first}, ...)" in result.stderr


def test_undecodable_arguments_and_json_escapes_are_replaced(
    runner: CliRunner, short_onnx_dir: Path, predictor: Predictor, tmp_path: Path
) -> None:
    result = _run(runner, short_onnx_dir, "bad \udcff byte", "great", "--json")  # how Python passes argv bytes
    assert [row["label"] for row in _rows(result)] == _labels(predictor, ["bad \ufffd byte", "great"])
    assert "1 input(s) not valid UTF-8; bad bytes replaced with U+FFFD (argument 1)" in result.stderr
    path = tmp_path / "texts.jsonl"
    path.write_text('{"text": "great"}\n{"text": "lone \\ud800 surrogate"}\n')
    result = _run(runner, short_onnx_dir, "--input", path, "--json")
    assert _rows(result)[1]["label"] == _labels(predictor, ["lone \ufffd surrogate"])[0]
    assert "(line 2)" in result.stderr


def test_over_long_text_is_truncated_and_reported(runner: CliRunner, short_onnx_dir: Path) -> None:
    result = _run(runner, short_onnx_dir, "great", LONG_TEXT, "--json")
    assert [row["truncated"] for row in _rows(result)] == [False, True]
    assert "1 text(s) longer than 32 tokens; classified on their first 32 tokens (argument 2)" in result.stderr


def test_txt_file_with_bom_and_crlf(
    runner: CliRunner, short_onnx_dir: Path, predictor: Predictor, tmp_path: Path
) -> None:
    path = tmp_path / "texts.txt"
    path.write_bytes(b"\xef\xbb\xbfgreat food\r\nawful staff\r\n")
    rows = _rows(_run(runner, short_onnx_dir, "--input", path, "--json"))
    assert [row["label"] for row in rows] == _labels(predictor, ["great food", "awful staff"])
    assert [row["score"] for row in rows] == pytest.approx(
        [p.score for p in predictor.predict(["great food", "awful staff"])]
    )


def test_csv_file_with_quoted_fields(
    runner: CliRunner, short_onnx_dir: Path, predictor: Predictor, tmp_path: Path
) -> None:
    texts = ["great, really great", 'she said "awful"', "multi\nline review", ""]
    path = write_csv(tmp_path / "reviews.csv", [(t, "x") for t in texts], header=("sentence", "label"))
    result = _run(runner, short_onnx_dir, "--input", path, "--json")  # --text-column text falls back to sentence
    rows = _rows(result)
    assert [row["label"] for row in rows[:3]] == _labels(predictor, texts[:3])
    assert rows[3]["error"] == "empty text"
    assert "(line 6)" in result.stderr  # the empty record's line, after the two-line record


def test_tsv_file_quotes_are_literal(
    runner: CliRunner, short_onnx_dir: Path, predictor: Predictor, tmp_path: Path
) -> None:
    path = tmp_path / "dev.tsv"
    path.write_text('label\treview\n1\t"an opening quote only\n0\tawful\n', encoding="utf-8")
    rows = _rows(_run(runner, short_onnx_dir, "--input", path, "--text-column", "review", "--json"))
    assert [row["label"] for row in rows] == _labels(predictor, ['"an opening quote only', "awful"])


def test_jsonl_file_with_bad_lines(
    runner: CliRunner, short_onnx_dir: Path, predictor: Predictor, tmp_path: Path
) -> None:
    path = tmp_path / "texts.jsonl"
    path.write_text('{"text": "great"}\nnot json\n[1, 2]\n{"text": null}\n{"text": "awful", "id": 7}\n')
    result = _run(runner, short_onnx_dir, "--input", path, "--json")
    rows = _rows(result)
    assert [row.get("error", "").split(":")[0] for row in rows] == [
        "",
        "invalid JSON",
        "invalid JSON",
        "empty text",
        "",
    ]
    assert [rows[0]["label"], rows[4]["label"]] == _labels(predictor, ["great", "awful"])
    assert "2 input(s) with invalid JSON, no prediction (line 2, 3)" in result.stderr


def test_missing_text_column_fails_before_any_output(runner: CliRunner, short_onnx_dir: Path, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "reviews.csv", [("great", "1")], header=("body", "label"))
    out = tmp_path / "out.jsonl"
    result = _run(runner, short_onnx_dir, "--input", path, "--output", out)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: {path}: no text column 'text' (columns: body, label); use --text-column"
    )
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == [path]  # no output, no temporary file


def test_large_file_is_streamed_in_windows(
    runner: CliRunner, short_onnx_dir: Path, predictor: Predictor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = [text for text, _ in make_texts(60, seed=4)]  # 180 texts
    path = tmp_path / "big.txt"
    path.write_text("\n".join(texts) + "\n")
    out = tmp_path / "predictions.jsonl"
    expected = _labels(predictor, texts)
    calls: list[int] = []
    real_predict = Predictor.predict
    monkeypatch.setattr(
        Predictor, "predict", lambda self, batch, *args: calls.append(len(batch)) or real_predict(self, batch, *args)
    )

    result = _run(runner, short_onnx_dir, "--input", path, "--batch-size", "2", "--json", "--output", out)

    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["label"] for row in rows] == expected
    window = 2 * SORT_WINDOW_BATCHES
    assert calls == [window] * (len(texts) // window) + [len(texts) % window]
    assert f"predicted 180 text(s) to {out}" in result.stderr


def test_tampered_model_exits_2_and_no_verify_skips_the_check(runner: CliRunner, short_onnx_copy: Path) -> None:
    import onnx

    model = onnx.load(short_onnx_copy / "model.onnx")
    model.doc_string = "edited on purpose"
    onnx.save(model, short_onnx_copy / "model.onnx")
    result = _run(runner, short_onnx_copy, "great")
    assert result.exit_code == 2
    assert "model.onnx: sha256 does not match edgesent.json (modified or truncated)" in result.stderr
    assert "Traceback" not in result.output
    assert _run(runner, short_onnx_copy, "great", "--no-verify").exit_code == 0


def test_user_errors_exit_2(
    runner: CliRunner, short_onnx_dir: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "t.txt"
    path.write_text("great\n")
    both = _run(runner, short_onnx_dir, "great", "--input", path)
    assert both.exit_code == 2 and "give TEXT arguments or --input FILE, not both" in both.stderr
    pytorch = _run(runner, tiny_model_dir, "great")
    assert pytorch.exit_code == 2 and "not an ONNX export" in pytorch.stderr
    if CUDA_PROVIDER not in ort.get_available_providers():
        cuda = _run(runner, short_onnx_dir, "great", "--provider", "cuda")
        assert cuda.exit_code == 2 and "pip install 'edgesent[gpu]'" in cuda.stderr

    class Terminal(io.BytesIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("edgesent.cli.predict.click.get_binary_stream", lambda name: Terminal())
    nothing = _run(runner, short_onnx_dir)
    assert (
        nothing.exit_code == 2
        and "no input: give TEXT arguments, --input FILE, or pipe texts on stdin" in nothing.stderr
    )


def test_an_unclosed_quote_is_one_error_at_its_line_and_no_output(
    runner: CliRunner, short_onnx_dir: Path, tmp_path: Path
) -> None:
    rows = [f"review {i} was great" for i in range(100)]
    rows[3] = '"review 3 opens a quote'
    path = tmp_path / "texts.csv"
    path.write_text("text\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out.jsonl"
    result = _run(runner, short_onnx_dir, "--input", path, "--output", out, "--json")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"Error: {path}:5: a quoted field")
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["texts.csv"]


def test_foreign_text_is_reported_as_unknown_tokens(runner: CliRunner, short_onnx_dir: Path) -> None:
    result = _run(runner, short_onnx_dir, "great food", "这个手机很好", "--json")
    assert [row["unknown_tokens"] > 0 for row in _rows(result)] == [False, True]
    assert "1 text(s) hold tokens the model's vocabulary does not know (argument 2)" in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_run_leaves_no_partial_output(short_onnx_dir: Path, tmp_path: Path, sig: int) -> None:
    source = tmp_path / "texts.txt"
    source.write_text("the service was great and the staff friendly\n" * 200_000)
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgesent",
            "predict",
            str(short_onnx_dir),
            "--input",
            str(source),
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".out.jsonl.tmp-*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    message = stderr.decode()
    assert proc.returncode != 0, message
    assert "Traceback" not in message, message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["texts.txt"], message


def test_output_never_destroys_what_it_points_at(runner: CliRunner, short_onnx_dir: Path, tmp_path: Path) -> None:
    """Nothing lost: not the input file, not an existing file without --overwrite, not a link, not a FIFO."""
    texts = tmp_path / "texts.txt"
    texts.write_text("great\nawful\n")
    same = _run(runner, short_onnx_dir, "--input", texts, "--output", texts, "--overwrite")
    assert same.exit_code == 2 and "is the --input file" in same.output and texts.read_text() == "great\nawful\n"
    kept = tmp_path / "kept.csv"
    kept.write_text("precious\n")
    refused = _run(runner, short_onnx_dir, "great", "--output", kept)
    assert refused.exit_code == 2 and "exists; pass --overwrite" in refused.output
    assert kept.read_text() == "precious\n"
    replaced = _run(runner, short_onnx_dir, "great", "--output", kept, "--overwrite", "--json")
    assert replaced.exit_code == 0 and json.loads(kept.read_text())["label"]
    target, link = tmp_path / "target.jsonl", tmp_path / "link.jsonl"
    link.symlink_to(target)
    assert _run(runner, short_onnx_dir, "great", "--output", link, "--json").exit_code == 0
    assert link.is_symlink() and json.loads(target.read_text())["label"]  # the link kept, its target written
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    assert _run(runner, short_onnx_dir, "great", "--output", fifo, "--json").exit_code == 0
    assert json.loads(reader.communicate(timeout=30)[0])["label"] and stat.S_ISFIFO(fifo.stat().st_mode)
    assert _run(runner, short_onnx_dir, "great", "--overwrite").exit_code == 2  # --overwrite needs --output
    empty = tmp_path / "mktemp"
    empty.touch()  # `out=$(mktemp); edgesent predict ... --output "$out"`: nothing in it to lose
    assert _run(runner, short_onnx_dir, "great", "--output", empty, "--json").exit_code == 0
    assert json.loads(empty.read_text())["label"]


def test_output_to_a_link_to_standard_output_writes_it(short_onnx_dir: Path, tmp_path: Path) -> None:
    """Like /dev/stdout, a link to whatever stdout is (here a pipe) is written into, never resolved and replaced
    (the link is in tmp_path: a regression must not be able to replace the machine's /dev/stdout)."""
    from edgesent.artifacts import writes_in_place

    link = tmp_path / "stdout"
    link.symlink_to("/proc/self/fd/1")
    command = [sys.executable, "-m", "edgesent", "predict", str(short_onnx_dir), "great", "--json", "--output"]
    result = subprocess.run([*command, str(link)], check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["label"] and link.is_symlink()
    assert writes_in_place(Path("/dev/stdout")) and not writes_in_place(tmp_path / "file.jsonl")


def test_a_full_disk_is_one_line_not_a_traceback(
    runner: CliRunner, short_onnx_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from edgesent.cli import predict as predict_module

    def disk_full(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(predict_module, "_write_rows", disk_full)
    result = _run(runner, short_onnx_dir, "great", "--output", tmp_path / "out.jsonl")
    assert result.exit_code == 1 and result.output.strip().splitlines()[-1] == "Error: No space left on device"
    assert "Traceback" not in result.output and no_leftovers(tmp_path, "out.jsonl")
