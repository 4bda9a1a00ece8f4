"""The bad-input matrix: every command, given what a careless or hostile user gives it, answers with one
``Error:`` line and its exit code, never a traceback, and leaves the file system as it was.

Each case runs the real CLI in process and snapshots the working directory (and every input it names)
before and after, so "nothing written, nothing deleted" is checked, not assumed.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import write_csv

from edgesent.artifacts import MANIFEST_NAME
from edgesent.cli import cli


@dataclass
class Case:
    """One bad input: how to build it in a scratch directory, the command line, and the expected answer."""

    name: str
    make: Callable[[Path, dict[str, Path]], list[str]]
    exit_code: int
    message: str


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def _edit(path: Path, **changes: object) -> None:
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


def _copy(source: Path, root: Path, name: str) -> Path:
    return Path(shutil.copytree(source, root / name))


def _reversed_labels(root: Path, dirs: dict[str, Path]) -> list[str]:
    model = _copy(dirs["onnx"], root, "onnx")
    labels = json.loads((model / MANIFEST_NAME).read_text())["labels"]
    _edit(model / MANIFEST_NAME, labels=labels[::-1])
    return ["predict", str(model), "great"]


def _manifest_list(root: Path, dirs: dict[str, Path]) -> list[str]:
    model = _copy(dirs["onnx"], root, "onnx")
    (model / MANIFEST_NAME).write_text("[1, 2]")
    return ["evaluate", str(model), "--data", str(dirs["eval"])]


def _files_as_list(root: Path, dirs: dict[str, Path]) -> list[str]:
    model = _copy(dirs["onnx"], root, "onnx")
    _edit(model / MANIFEST_NAME, files=["model.onnx"])
    return ["predict", str(model), "great", "--no-verify"]


def _entry_without_bytes(root: Path, dirs: dict[str, Path]) -> list[str]:
    model = _copy(dirs["torch"], root, "torch")
    manifest = json.loads((model / MANIFEST_NAME).read_text())
    manifest["files"]["config.json"].pop("bytes")
    (model / MANIFEST_NAME).write_text(json.dumps(manifest))
    return ["export", str(model), "--out", str(root / "out"), "--no-verify"]


def _config_only(root: Path, dirs: dict[str, Path]) -> list[str]:
    model = _copy(dirs["torch"], root, "torch")
    for path in model.iterdir():
        if path.name not in ("config.json", MANIFEST_NAME):
            path.unlink()
    return ["evaluate", str(model), "--data", str(dirs["eval"]), "--no-verify"]


def _truncated_weights(root: Path, dirs: dict[str, Path]) -> list[str]:
    model = _copy(dirs["torch"], root, "torch")
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    return ["evaluate", str(model), "--data", str(dirs["eval"]), "--no-verify"]


def _duplicate_columns(root: Path, dirs: dict[str, Path]) -> list[str]:
    data = root / "dup.csv"
    data.write_text("text,label,text\ngreat,positive,awful\nbad,negative,fine\n")
    return ["finetune", "--data", str(data), "--base", str(dirs["torch"]), "--out", str(root / "out")]


def _overwrite_cwd(root: Path, dirs: dict[str, Path]) -> list[str]:
    (root / "notes.txt").write_text("keep me")
    return ["finetune", "--base", str(dirs["torch"]), "--data", str(dirs["train"]), "--out", ".", "--overwrite"]


def _overwrite_source(root: Path, dirs: dict[str, Path]) -> list[str]:
    model = _copy(dirs["torch"], root, "torch")
    return ["export", str(model), "--out", str(model), "--overwrite"]


def _overwrite_plain_dir(root: Path, dirs: dict[str, Path]) -> list[str]:
    photos = root / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"jpeg")
    return ["bench", str(dirs["onnx"]), "--report", str(photos), "--overwrite"]


def _unclosed_quote(root: Path, dirs: dict[str, Path]) -> list[str]:
    data = root / "texts.csv"
    data.write_text("text\n" + "\n".join(["fine text"] * 3 + ['"never closed'] + ["more text"] * 96) + "\n")
    return ["predict", str(dirs["onnx"]), "--input", str(data), "--output", str(root / "out.jsonl")]


def _numbers(option: str, value: str) -> Callable[[Path, dict[str, Path]], list[str]]:
    def make(root: Path, dirs: dict[str, Path]) -> list[str]:
        return [
            "finetune",
            "--base",
            str(dirs["torch"]),
            "--data",
            str(dirs["train"]),
            "--out",
            str(root / "o"),
            option,
            value,
        ]

    return make


def _evaluate_batch(value: str) -> Callable[[Path, dict[str, Path]], list[str]]:
    def make(root: Path, dirs: dict[str, Path]) -> list[str]:
        return ["evaluate", str(dirs["onnx"]), "--data", str(dirs["eval"]), "--batch-size", value]

    return make


def _prune_nan(root: Path, dirs: dict[str, Path]) -> list[str]:
    data = ["--data", str(dirs["train"]), "--eval-data", str(dirs["eval"])]
    return ["prune", str(dirs["torch"]), *data, "--out", str(root / "p"), "--heads", "nan"]


def _parity_not_a_model(root: Path, dirs: dict[str, Path]) -> list[str]:
    empty = root / "empty"
    empty.mkdir()
    return ["parity", str(empty), str(dirs["onnx"])]


def _bench_inf_budget(root: Path, dirs: dict[str, Path]) -> list[str]:
    return ["bench", str(dirs["onnx"]), "--time-budget", "inf"]


def _serve_tampered(root: Path, dirs: dict[str, Path]) -> list[str]:
    model = _copy(dirs["onnx"], root, "onnx")
    with open(model / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    return ["serve", str(model), "--port", "1"]


CASES = [
    Case("predict: reversed labels in the manifest", _reversed_labels, 2, "its content does not match"),
    Case("evaluate: manifest is a JSON list", _manifest_list, 2, "the manifest is a JSON list, not an object"),
    Case("predict: files table is a list", _files_as_list, 2, "'files' is a list, not a table"),
    Case("export: file entry without bytes", _entry_without_bytes, 2, "needs 'bytes' (integer) and 'sha256'"),
    Case("evaluate: config-only model dir", _config_only, 2, "no model.safetensors"),
    Case("evaluate: truncated weights, --no-verify", _truncated_weights, 2, "cannot load the model"),
    Case("finetune: duplicate column names", _duplicate_columns, 2, "column 'text' appears twice"),
    Case("finetune: --out . --overwrite", _overwrite_cwd, 2, "is not an edgesent artifact"),
    Case("export: --out SRC --overwrite", _overwrite_source, 2, "is this command's input"),
    Case("bench: --report over a plain directory", _overwrite_plain_dir, 2, "is not an edgesent artifact"),
    Case("predict: an unclosed quote", _unclosed_quote, 2, "texts.csv:5: a quoted field"),
    Case("finetune: --lr inf", _numbers("--lr", "inf"), 2, "lr must be a finite number, got inf"),
    Case("finetune: --weight-decay nan", _numbers("--weight-decay", "nan"), 2, "weight_decay must be a finite"),
    Case("finetune: --epochs inf", _numbers("--epochs", "inf"), 2, "epochs must be a finite number"),
    Case("finetune: --seed -1", _numbers("--seed", "-1"), 2, "seed must be in"),
    Case("finetune: --max-length 1024", _numbers("--max-length", "1024"), 2, "exceeds the"),
    Case("evaluate: --batch-size -1", _evaluate_batch("-1"), 2, "-1 is not in the range x>=1"),
    Case("evaluate: --batch-size 0", _evaluate_batch("0"), 2, "0 is not in the range x>=1"),
    Case("prune: --heads nan", _prune_nan, 2, "heads must be a finite number, got nan"),
    Case("parity: a directory that is not a model", _parity_not_a_model, 2, "no edgesent.json"),
    Case("bench: --time-budget inf", _bench_inf_budget, 2, "time_budget_s"),
    Case("serve: a tampered model", _serve_tampered, 2, "sha256 does not match"),
]


@pytest.fixture
def dirs(tiny_model_dir: Path, tiny_onnx_dir: Path, tiny_data: tuple[Path, Path]) -> dict[str, Path]:
    train, dev = tiny_data
    return {"torch": tiny_model_dir, "onnx": tiny_onnx_dir, "train": train, "eval": dev}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_one_line_and_changes_nothing(
    case: Case, dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    args = case.make(work, dirs)
    watched = [work, *dirs.values()]
    before = [_snapshot(root) if root.is_dir() else root.stat().st_mtime_ns for root in watched]
    result = CliRunner().invoke(cli, args)
    stderr = result.stderr
    assert result.exit_code == case.exit_code, (args, result.output)
    assert "Traceback" not in result.output, result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and case.message in last, stderr
    after = [_snapshot(root) if root.is_dir() else root.stat().st_mtime_ns for root in watched]
    assert after == before, "the command changed the file system"
    assert os.getcwd() == str(work)


def test_a_label_such_as_superscript_two_trains_without_a_traceback(dirs: dict[str, Path], tmp_path: Path) -> None:
    data = write_csv(tmp_path / "d.csv", [("great food", "²"), ("awful food", "1")] * 10)
    out = tmp_path / "model"
    result = CliRunner().invoke(
        cli, ["finetune", "--base", str(dirs["torch"]), "--data", str(data), "--out", str(out), "--epochs", "1"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((out / MANIFEST_NAME).read_text())["labels"] == ["1", "²"]
