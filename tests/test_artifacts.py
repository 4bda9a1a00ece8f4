"""artifacts: the typed model-directory view, the manifest's own hash, the overwrite guard and leftovers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgesent.artifacts import (
    KIND_ONNX,
    KIND_PYTORCH,
    MANIFEST_NAME,
    atomic_output_dir,
    atomic_output_file,
    check_output_dir,
    read_model_dir,
    remove_leftovers,
    write_manifest,
)
from edgesent.errors import ConfigError, ModelError


REPO = Path(__file__).resolve().parents[1]


def _model_dir(root: Path, **payload: object) -> Path:
    """A minimal ONNX-kind directory: model file, tokenizer, config.json and a manifest."""
    root.mkdir(parents=True)
    (root / "model.onnx").write_bytes(b"not really onnx")
    (root / "tokenizer.json").write_text("{}")
    (root / "config.json").write_text(json.dumps({"id2label": {"0": "neg", "1": "pos"}}))
    write_manifest(root, KIND_ONNX, {"labels": ["neg", "pos"], "max_length": 64, "precision": "int8", **payload})
    return root


def _edit_manifest(root: Path, **changes: object) -> None:
    path = root / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


def test_read_model_dir_returns_the_typed_view(tmp_path: Path) -> None:
    model = read_model_dir(_model_dir(tmp_path / "m"), kind=KIND_ONNX)
    assert (model.kind, model.labels, model.max_length, model.precision) == ("onnx", ("neg", "pos"), 64, "int8")
    assert model.task == "text-classification" and model.model_path == tmp_path / "m" / "model.onnx"
    assert len(model.sha256) == 64


def test_reversed_labels_are_refused_like_a_tampered_model(tmp_path: Path) -> None:
    root = _model_dir(tmp_path / "m")
    _edit_manifest(root, labels=["pos", "neg"])
    with pytest.raises(ModelError, match="its content does not match its content_sha256"):
        read_model_dir(root)
    assert read_model_dir(root, verify=False).labels == ("pos", "neg")  # on purpose: the user skipped the check


def test_config_id2label_must_agree_with_the_manifest(tmp_path: Path) -> None:
    root = _model_dir(tmp_path / "m")
    (root / "config.json").write_text(json.dumps({"id2label": {"0": "pos", "1": "neg"}}))
    with pytest.raises(ModelError):  # config.json's hash no longer matches either; the label check runs first
        read_model_dir(root)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": "tensorflow"}, "unknown model kind 'tensorflow'"),
        ({"labels": "neg,pos"}, "manifest 'labels' is 'neg,pos'"),
        ({"labels": ["neg", "neg"]}, "not a list of distinct names"),
        ({"max_length": "64"}, "manifest 'max_length' is '64'"),
        ({"files": ["model.onnx"]}, "'files' is a list, not a table"),
        ({"files": {"model.onnx": {"sha256": "0"}}}, "the entry for 'model.onnx' needs 'bytes'"),
    ],
)
def test_malformed_manifests_are_one_line_model_errors(tmp_path: Path, changes: dict, message: str) -> None:
    root = _model_dir(tmp_path / "m")
    _edit_manifest(root, **changes)
    with pytest.raises(ModelError, match=message):
        read_model_dir(root, verify=False)


def test_a_manifest_that_is_not_an_object(tmp_path: Path) -> None:
    root = _model_dir(tmp_path / "m")
    (root / MANIFEST_NAME).write_text("[1, 2]")
    with pytest.raises(ModelError, match="the manifest is a JSON list, not an object"):
        read_model_dir(root)


def test_kind_is_checked_with_the_shared_messages(tmp_path: Path) -> None:
    root = _model_dir(tmp_path / "m")
    with pytest.raises(ModelError, match="manifest kind is 'onnx', not 'pytorch'"):
        read_model_dir(root, kind=KIND_PYTORCH)


def test_overwrite_replaces_only_an_artifact(tmp_path: Path) -> None:
    plain = tmp_path / "photos"
    plain.mkdir()
    (plain / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(ConfigError, match="is not an edgesent artifact"), atomic_output_dir(plain, overwrite=True):
        pass
    assert (plain / "holiday.jpg").is_file()
    artifact = _model_dir(tmp_path / "m")
    with atomic_output_dir(artifact, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in artifact.iterdir()) == ["new.txt"]


def test_overwrite_refuses_the_source_its_parent_and_the_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    artifact = _model_dir(tmp_path / "m")
    with (
        pytest.raises(ConfigError, match="is this command's input"),
        atomic_output_dir(artifact, overwrite=True, sources=[artifact / "model.onnx"]),
    ):
        pass
    monkeypatch.chdir(artifact)
    with pytest.raises(ConfigError, match="is the current directory"), atomic_output_dir(artifact, overwrite=True):
        pass
    assert (artifact / "model.onnx").is_file()


def test_leftovers_of_dead_runs_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True, capture_output=True)
    dead_pid = int(dead.stdout)
    stale_dir = tmp_path / f".out.tmp-{dead_pid}-abc"
    stale_dir.mkdir()
    stale_file = tmp_path / f".out.old-{dead_pid}"
    stale_file.write_text("x")
    live = tmp_path / f".out.tmp-{os.getpid()}-xyz"
    live.mkdir()
    other = tmp_path / f".other.tmp-{dead_pid}-abc"
    other.mkdir()
    (tmp_path / "out").write_text("new")
    assert sorted(remove_leftovers(tmp_path / "out")) == sorted([stale_dir, stale_file])
    assert live.is_dir() and other.is_dir()


def test_an_output_a_killed_run_was_replacing_is_restored(tmp_path: Path) -> None:
    """Killed between moving the old output aside and moving the new one in: the old one comes back, and an
    export without --overwrite then refuses to replace it."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True, capture_output=True)
    aside = tmp_path / f".model.old-{int(dead.stdout)}"
    aside.mkdir()
    (aside / MANIFEST_NAME).write_text("{}")
    finished = tmp_path / f".model.tmp-{int(dead.stdout)}-abc"
    finished.mkdir()
    with pytest.raises(ConfigError, match="already exists"):
        check_output_dir(tmp_path / "model")  # the up-front check already sees it back
    assert (tmp_path / "model" / MANIFEST_NAME).read_text() == "{}" and not aside.exists()
    with atomic_output_dir(tmp_path / "model", overwrite=True) as out:
        (out / MANIFEST_NAME).write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # the dead run's scratch removed too


def test_atomic_output_file_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_output_file(target) as fh:
        fh.write("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_reading_a_model_dir_imports_no_torch() -> None:
    code = "import sys, edgesent.artifacts; assert 'torch' not in sys.modules and 'onnxruntime' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_onnx_file_must_name_a_file_inside_the_directory(tmp_path: Path) -> None:
    """Even with --no-verify, an edited manifest cannot make a stage load a file from elsewhere."""
    (tmp_path / "secret.csv").write_text("x")
    root = _model_dir(tmp_path / "m")
    _edit_manifest(root, onnx_file="../secret.csv")
    with pytest.raises(ModelError, match=r"manifest 'onnx_file' is '../secret.csv'; re-export the model"):
        read_model_dir(root, verify=False)


def test_a_span_model_lists_its_tags_and_config_maps_them(tmp_path: Path) -> None:
    root = tmp_path / "spans"
    root.mkdir()
    (root / "model.onnx").write_bytes(b"x")
    (root / "tokenizer.json").write_text("{}")
    tags = ["O", "B-neg", "I-neg", "B-pos", "I-pos"]
    (root / "config.json").write_text(json.dumps({"id2label": dict(enumerate(tags))}))
    payload = {"task": "token-classification", "labels": ["neg", "pos"], "tags": tags, "max_length": 64}
    write_manifest(root, KIND_ONNX, payload)
    model = read_model_dir(root)
    assert model.tags == tuple(tags) and model.outputs == tuple(tags) and model.labels == ("neg", "pos")
    _edit_manifest(root, tags=None)
    with pytest.raises(ModelError, match="manifest 'tags' is None"):
        read_model_dir(root, verify=False)


def test_an_unknown_task_is_refused(tmp_path: Path) -> None:
    root = _model_dir(tmp_path / "m", task="translation")
    with pytest.raises(ModelError, match="manifest task 'translation' is not one of"):
        read_model_dir(root)


def test_overwrite_checks_the_kind_only_when_asked(tmp_path: Path) -> None:
    """An output with an unreadable manifest is replaced as before; only a kind-bound output (a report) reads it."""
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST_NAME).write_text("{not json")
    assert check_output_dir(out, overwrite=True) == out.resolve()
    with pytest.raises(ConfigError, match=r"out: its edgesent.json cannot be read .*choose another directory"):
        check_output_dir(out, overwrite=True, kind="bench-report")
    (out / MANIFEST_NAME).write_text("{}")
    with pytest.raises(ConfigError, match="is an edgesent directory of no kind, not a bench-report"):
        check_output_dir(out, overwrite=True, kind="bench-report")
