"""Hyperparameter search on the tiny model: trials, pruning, the manifest record, the retrain, the report, errors."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import make_texts, write_csv

from edgesent.artifacts import read_manifest, verify_files
from edgesent.cli import cli
from edgesent.config.search import DEFAULT_SPACE, SearchConfig, load_space, parse_space
from edgesent.config.train import TrainConfig
from edgesent.errors import ConfigError


# One learning rate the tiny model learns from within an epoch and one it cannot, so the pruner has work.
SPACE_TOML = """\
[lr]
type = "categorical"
choices = [1e-6, 3e-3]

[weight_decay]
type = "float"
low = 0.0
high = 0.1
"""
SEED = "7"  # with this seed, the first two trials learn and the third (lr 1e-6) is pruned on the tiny model
FIXED = ["--early-stopping", "0", "--warmup-ratio", "0", "--batch-size", "4", "--epochs", "3", "--seed", SEED]


def _needs_training() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("optuna")


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def search_inputs(_tiny_model_master, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("search")
    space = root / "space.toml"
    space.write_text(SPACE_TOML)
    return {
        "base": Path(shutil.copytree(_tiny_model_master, root / "base")),
        "train": write_csv(root / "train.csv", make_texts(100, seed=1)),
        "eval": write_csv(root / "eval.csv", make_texts(6, seed=2)),
        "space": space,
        "root": root,
    }


def _search_args(inputs: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        "finetune",
        "--data",
        str(inputs["train"]),
        "--eval-data",
        str(inputs["eval"]),
        "--base",
        str(inputs["base"]),
        "--out",
        str(out),
        *FIXED,
        *extra,
    ]


@pytest.fixture(scope="module")
def searched(search_inputs) -> dict:
    """One 3-trial CLI search on a 240-row subset of 300 rows; its output, manifest and progress lines."""
    _needs_training()
    out = search_inputs["root"] / "model"
    handler = _Lines()
    search_logger = logging.getLogger("edgesent.search")
    search_logger.addHandler(handler)
    try:
        args = _search_args(search_inputs, out, "--search", "3", "--search-subset", "240")
        result = CliRunner().invoke(cli, [*args, "--search-space", str(search_inputs["space"])])
    finally:
        search_logger.removeHandler(handler)
    assert result.exit_code == 0, result.output
    return {"out": out, "stdout": result.stdout, "manifest": read_manifest(out), "lines": handler.lines}


def test_a_three_trial_search_prunes_records_every_trial_and_retrains_on_all_the_data(searched, search_inputs):
    manifest, search = searched["manifest"], searched["manifest"]["search"]
    trials = search["trials"]
    assert [t["number"] for t in trials] == [0, 1, 2]
    for trial in trials:
        assert set(trial["params"]) == {"lr", "weight_decay"}
        assert trial["state"] in ("complete", "pruned") and trial["seconds"] >= 0
        assert isinstance(trial["score"], float) and trial["scores_by_epoch"]
    pruned = [t for t in trials if t["state"] == "pruned"]
    assert pruned and len(pruned[0]["scores_by_epoch"]) < 3  # stopped before its last epoch
    assert search["objective"] == "macro_f1" and search["direction"] == "maximize"
    assert search["sampler"] == {"name": "TPESampler", "seed": int(SEED)}
    assert search["pruner"]["name"] == "MedianPruner"
    assert search["space"] == load_space(search_inputs["space"])
    assert search["space_file"] == str(search_inputs["space"])
    assert search["fixed"] == ["batch_size", "epochs", "warmup_ratio"]  # given on the command line, so not searched
    # Trials trained on a stratified 240-row subset; the saved model on all 300 rows.
    assert search["subset"]["rows"] == 240 and set(search["subset"]["label_counts"].values()) == {80}
    assert manifest["data"]["train"]["rows"] == 300
    verify_files(searched["out"], manifest)
    complete = [t for t in trials if t["state"] == "complete"]
    assert search["best"]["score"] == max(t["score"] for t in complete)


def test_the_saved_model_was_trained_with_the_best_parameters(searched):
    manifest = searched["manifest"]
    best = manifest["search"]["best"]
    assert best["number"] in [t["number"] for t in manifest["search"]["trials"] if t["state"] == "complete"]
    for name, value in best["params"].items():
        assert manifest["hyperparameters"][name] == value
    assert len(manifest["epochs"]) == 3  # the fixed --epochs 3; early stopping off, so every epoch ran
    assert manifest["hyperparameters"]["seed"] == int(SEED)


def test_one_progress_line_per_trial_and_a_table_on_stdout(searched):
    lines = [line for line in searched["lines"] if line.startswith("trial ")]
    assert len(lines) == 3
    assert any("pruned after epoch" in line for line in lines)
    assert all("lr=" in line and "weight_decay=" in line for line in lines)
    header = searched["stdout"].splitlines()[0].split()
    assert header == ["trial", "lr", "weight_decay", "macro_f1", "state", "seconds"]
    assert "best epoch" in searched["stdout"]


def test_the_search_is_reproducible(searched, search_inputs, tmp_path):
    from edgesent.search import search_hyperparameters

    train = TrainConfig(
        data=search_inputs["train"],
        eval_data=search_inputs["eval"],
        base=str(search_inputs["base"]),
        out=tmp_path / "again",
        seed=int(SEED),
        batch_size=4,
        epochs=3,
        early_stopping=0,
        warmup_ratio=0.0,
    )
    again = search_hyperparameters(
        SearchConfig(
            train=train, trials=3, space_file=search_inputs["space"], subset=240, fixed=("batch_size", "epochs")
        )
    )
    first = searched["manifest"]["search"]["trials"]
    keys = ("params", "score", "state", "scores_by_epoch")
    assert [{k: t[k] for k in keys} for t in again["search"]["trials"]] == [{k: t[k] for k in keys} for t in first]


def test_search_report_table_json_and_report_directory(searched, tmp_path):
    result = CliRunner().invoke(cli, ["search-report", str(searched["out"])])
    assert result.exit_code == 0, result.output
    best = searched["manifest"]["search"]["best"]["number"]
    assert f"{best}*" in result.output.split()
    as_json = CliRunner().invoke(cli, ["search-report", str(searched["out"]), "--json"])
    assert json.loads(as_json.output)["trials"] == searched["manifest"]["search"]["trials"]

    report = tmp_path / "report"
    result = CliRunner().invoke(cli, ["search-report", str(searched["out"]), "--report", str(report)])
    assert result.exit_code == 0, result.output
    assert {"trials.md", "trials.json", "score_vs_lr.png", "edgesent.json"} <= {p.name for p in report.iterdir()}
    assert (report / "score_vs_lr.png").read_bytes()[:4] == b"\x89PNG"
    assert "| trial | lr |" in (report / "trials.md").read_text()
    verify_files(report, read_manifest(report))
    again = CliRunner().invoke(cli, ["search-report", str(searched["out"]), "--report", str(report)])
    assert again.exit_code == 2 and "--overwrite" in again.output
    replaced = CliRunner().invoke(cli, ["search-report", str(searched["out"]), "--report", str(report), "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    model = shutil.copytree(searched["out"], tmp_path / "model")  # a trained model is no report to replace
    refused = CliRunner().invoke(cli, ["search-report", str(searched["out"]), "--report", str(model), "--overwrite"])
    assert refused.exit_code == 2 and "is an edgesent 'pytorch' directory, not a search-report" in refused.output
    assert read_manifest(model)["kind"] == "pytorch"


def test_search_report_of_a_model_without_a_search_is_one_line(tiny_model_dir):
    result = CliRunner().invoke(cli, ["search-report", str(tiny_model_dir)])
    assert result.exit_code == 2
    assert result.output.strip().endswith("records no hyperparameter search; make one with finetune --search")


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[dropout]\ntype = "float"\nlow = 0.0\nhigh = 0.3\n', "[dropout]: unknown parameter; searchable: lr,"),
        ('[lr]\ntype = "normal"\nlow = 1e-5\nhigh = 1e-4\n', "[lr]: type 'normal' is not one of log_float,"),
        ('[lr]\ntype = "log_float"\nlow = 1e-4\nhigh = 1e-5\n', "[lr]: low (0.0001) must be below high (1e-05)"),
        ('[lr]\ntype = "log_float"\nlow = nan\nhigh = 1e-4\n', "[lr]: low must be a finite number, got nan"),
        ('[lr]\ntype = "log_float"\nlow = 0.0\nhigh = 1e-4\n', "[lr]: low must be > 0 for type log_float"),
        ('[batch_size]\ntype = "categorical"\nchoices = []\n', "[batch_size]: choices must be a non-empty list"),
        ('[epochs]\ntype = "int"\nlow = 1.5\nhigh = 3\n', "[epochs]: low must be an integer for type int"),
        (
            '[lr]\ntype = "float"\nlow = 1e-5\nhigh = 1e-4\nstep = 1\n',
            "[lr]: unknown key(s) step; a float entry takes",
        ),
        ('[warmup_ratio]\ntype = "float"\nlow = 0.0\nhigh = 1.0\n', "[warmup_ratio]: warmup_ratio must be in [0, 1)"),
        ('[class_weights]\ntype = "categorical"\nchoices = ["auto", "x"]\n', "[class_weights]: class_weights='x' is"),
        ("[lr\n", "not valid TOML"),
        ("", "no parameters"),
    ],
)
def test_an_invalid_space_is_one_line_exit_2_before_any_training(search_inputs, tmp_path, toml, message):
    pytest.importorskip("optuna")
    space = tmp_path / "space.toml"
    space.write_text(toml)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, _search_args(search_inputs, out, "--search", "2", "--search-space", str(space)))
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert line.startswith(f"Error: search space {space}") and message in line and "\n" not in line
    assert not out.exists()


def test_missing_optuna_names_the_install_command(monkeypatch, search_inputs, tmp_path):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "optuna" else real_find_spec(n, *a))
    result = CliRunner().invoke(cli, _search_args(search_inputs, tmp_path / "out", "--search", "2"))
    assert result.exit_code == 2
    assert result.output.strip() == (
        "Error: 'finetune --search' needs the 'search' extra (missing: optuna); install it with: pip install 'edgesent[search]'"
    )


def test_search_options_without_search_are_refused(search_inputs, tmp_path):
    result = CliRunner().invoke(cli, _search_args(search_inputs, tmp_path / "out", "--search-subset", "10"))
    assert result.exit_code == 2 and "--search-subset need(s) --search N" in result.output


def test_the_default_space_and_fixed_options():
    cfg = SearchConfig()
    assert cfg.space == parse_space(DEFAULT_SPACE) and "class_weights" in cfg.searched()
    fixed = SearchConfig(train=TrainConfig(lr=1e-3), fixed=("lr", "data"))
    assert "lr" not in fixed.searched() and fixed.fixed == ("lr",)
    assert SearchConfig.from_dict(fixed.to_dict()).to_dict() == fixed.to_dict()
    with pytest.raises(ConfigError, match="every parameter \\(lr\\) is fixed"):
        SearchConfig(space={"lr": {"type": "log_float", "low": 1e-5, "high": 1e-4}}, fixed=("lr",))
    with pytest.raises(ConfigError, match="trials must be in \\[1, inf\\), got 0"):
        SearchConfig(trials=0)


def test_the_space_follows_the_task_the_data_holds_when_none_is_given(tmp_path):
    """Without --task the task is the data's (as finetune resolves it), so the space is the one --task gives."""
    spans = tmp_path / "restaurants.xml"
    detected, typed = (
        SearchConfig(train=TrainConfig(data=spans)),
        SearchConfig(train=TrainConfig(data=spans, task="spans")),
    )
    assert "class_weights" not in detected.searched() and detected.space == typed.space
    with pytest.raises(ConfigError, match=r"\[class_weights\]: only searched for text classification"):
        SearchConfig(train=TrainConfig(data=spans), space={"class_weights": DEFAULT_SPACE["class_weights"]})
    assert "class_weights" in SearchConfig(train=TrainConfig(data=tmp_path / "reviews.csv")).searched()


@pytest.mark.parametrize("command", [["search-report", "--help"], ["finetune", "--help"]])
def test_help(command):
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == 0 and "Usage:" in result.output
    if command[0] == "finetune":
        assert "--search-space" in result.output


def test_the_search_module_and_its_config_import_neither_torch_nor_optuna():
    code = (
        "import sys, edgesent.search, edgesent.config.search, edgesent.cli.train; "
        "print(sorted({'torch', 'transformers', 'optuna'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_diverged_trials_are_recorded_as_failed_and_no_completed_trial_saves_nothing(
    search_inputs, tmp_path, monkeypatch
):
    _needs_training()
    import edgesent.train
    from edgesent.errors import TrainingError
    from edgesent.search import search_hyperparameters

    def diverge(cfg, inputs, work_dir, report):
        raise TrainingError("a search trial produced a broken model: final training loss nan")

    monkeypatch.setattr(edgesent.train, "fit_candidate", diverge)
    train = TrainConfig(data=search_inputs["train"], eval_data=search_inputs["eval"], base=str(search_inputs["base"]))
    cfg = SearchConfig(
        train=dataclasses.replace(train, out=tmp_path / "out"), trials=2, space_file=search_inputs["space"]
    )
    with pytest.raises(TrainingError, match=r"no search trial completed \(0: fail, 1: fail\); nothing was saved"):
        search_hyperparameters(cfg)
    assert not (tmp_path / "out").exists()


def test_a_trial_that_finished_training_is_complete_even_below_the_median(search_inputs, tmp_path, monkeypatch):
    """The pruner stops trials early; one whose last evaluation is below the median already finished, so it is
    recorded as complete with its score, not as pruned."""
    _needs_training()
    import edgesent.train
    from edgesent.search import search_hyperparameters

    scores = iter([0.9, 0.8, 0.1])

    def one_epoch(cfg, inputs, work_dir, report):
        score = next(scores)
        report(1, score, True)  # the only evaluation, after the last step
        return {"metric": "macro_f1", "score": score, "best_epoch": 1.0, "epochs": [], "train_runtime_s": 0.0}

    monkeypatch.setattr(edgesent.train, "fit_candidate", one_epoch)
    train = TrainConfig(data=search_inputs["train"], eval_data=search_inputs["eval"], base=str(search_inputs["base"]))
    cfg = SearchConfig(
        train=dataclasses.replace(train, out=tmp_path / "out", max_steps=2),
        trials=3,
        space_file=search_inputs["space"],
    )
    manifest = search_hyperparameters(cfg)
    trials = manifest["search"]["trials"]
    assert [t["state"] for t in trials] == ["complete"] * 3
    assert [t["score"] for t in trials] == [0.9, 0.8, 0.1] and manifest["search"]["best"]["number"] == 0


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--search-subset", "0", "--search-subset must be in [2, inf), got 0"),
        ("--search-timeout", "0", "--search-timeout"),
    ],
)
def test_bad_search_options_are_named_as_typed(search_inputs, tmp_path, option, value, message):
    result = CliRunner().invoke(cli, _search_args(search_inputs, tmp_path / "out", "--search", "2", option, value))
    assert result.exit_code == 2 and result.output.strip().splitlines()[-1].startswith(f"Error: {message}")
