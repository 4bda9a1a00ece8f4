"""``edgesent finetune`` (with ``--search``), ``edgesent evaluate`` and ``edgesent search-report``."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from edgesent.cli import is_main_process
from edgesent.cli._format import format_table
from edgesent.cli._options import (
    drop_label_option,
    given_options,
    json_option,
    label_column_option,
    no_verify_option,
    overwrite_option,
    text_column_option,
    with_default,
)
from edgesent.config.train import CLASS_WEIGHTS, DEVICES, TrainConfig
from edgesent.errors import ConfigError
from edgesent.tasks import TASK_NAMES, get_task


data_path = click.Path(dir_okay=False, path_type=Path)


def _default(text: str, name: str) -> str:
    return with_default(text, TrainConfig, name)


@click.command()
@click.option(
    "--data",
    type=data_path,
    help="Training file: CSV, TSV, JSONL; for spans JSONL with 'spans', SemEval-2014 XML or CoNLL. "
    "Default: the built-in demo (reviews; aspects with their polarity for --task spans).",
)
@click.option("--eval-data", type=data_path, help="Evaluation file. Default: a held-out split of --data.")
@click.option(
    "--task",
    type=click.Choice(TASK_NAMES),
    help="classify: a label per text; spans: aspects/spans with their label by token tagging. "
    "Default: what --data holds (.xml/.conll, or JSONL with 'spans'/'aspects': spans).",
)
@drop_label_option
@click.option(
    "--base",
    help=_default("Base model: 'minilm-l6' (installed package), a local HF model directory, or a hub id.", "base"),
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Output model directory. Default: models/<data>-<base>.",
)
@click.option("--epochs", type=float, help=_default("Training epochs.", "epochs"))
@click.option("--lr", type=float, help=_default("Peak learning rate.", "lr"))
@click.option("--batch-size", type=int, help=_default("Training batch size.", "batch_size"))
@click.option("--max-length", type=int, help=_default("Tokens per text (longer ones are cut).", "max_length"))
@click.option("--warmup-ratio", type=float, help=_default("Fraction of steps with linear warm-up.", "warmup_ratio"))
@click.option("--weight-decay", type=float, help=_default("AdamW weight decay.", "weight_decay"))
@click.option(
    "--layer-lr-decay",
    type=float,
    help=_default(
        "Layer-wise learning-rate decay d in (0, 1]: the head trains at --lr, each encoder layer below the top at "
        "one more factor d, the embeddings lowest (1.0: off).",
        "layer_lr_decay",
    ),
)
@click.option("--grad-accum", type=int, help=_default("Gradient accumulation steps.", "grad_accum"))
@click.option("--seed", type=int, help=_default("Random seed.", "seed"))
@click.option("--early-stopping", type=int, help=_default("Patience in epochs (0: off).", "early_stopping"))
@click.option(
    "--class-weights",
    type=click.Choice(CLASS_WEIGHTS),
    help=_default("'auto' weights the loss by inverse class frequency, for imbalanced data.", "class_weights"),
)
@click.option("--device", type=click.Choice(DEVICES), help=_default("Where to train.", "device"))
@click.option(
    "--max-steps",
    type=int,
    help=_default(
        "Cap on optimiser steps: training stops after --epochs or this many steps, whichever is first (0: no cap).",
        "max_steps",
    ),
)
@click.option("--eval-split", type=float, help=_default("Held-out fraction without --eval-data.", "eval_split"))
@text_column_option
@label_column_option
@click.option("--skip-empty", is_flag=True, help="Skip rows with empty text instead of failing.")
@click.option(
    "--group-by-length/--no-group-by-length",
    default=None,
    help=_default("Batch texts of similar length together (less padding, faster).", "group_by_length"),
)
@click.option(
    "--allow-unknown-tokens",
    is_flag=True,
    help="Train even when over 20% of the data's tokens are unknown to the base's tokenizer (refused by default: "
    "such a base cannot read the data).",
)
@overwrite_option
@click.option(
    "--search",
    type=click.IntRange(min=1),
    help="Search hyperparameters with N Optuna trials (needs edgesent[search]), then retrain the best "
    "configuration. Options given on the command line are fixed, not searched.",
)
@click.option(
    "--search-space",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML search space (README: 'Hyperparameter search'). Default: lr, epochs, batch size, warm-up, "
    "weight decay, class weights.",
)
@click.option(
    "--search-subset",
    type=int,
    help="Train trials on a stratified sample of K training rows; the best is retrained on all of them.",
)
@click.option("--search-timeout", type=float, help="Start no new trial after this many minutes.")
@json_option
def finetune(as_json: bool, **options: object) -> None:
    """Fine-tune a pretrained encoder for text classification or span tagging and save the best epoch.

    Evaluates every epoch (accuracy, macro-F1, per-class report; for spans span P/R/F1, span-only F1 and
    polarity accuracy), stops early when macro-F1 (spans: span F1) stops improving, and writes a Hugging Face
    model directory plus an edgesent.json manifest. Results go to stdout; the Trainer's logs and progress bars
    to stderr. With --search N, N trials pick the hyperparameters first (one progress line each).
    """
    from edgesent._imports import require_train_extra

    given = given_options(options)
    search = {key: given.pop(key) for key in _SEARCH_OPTIONS if key in given}
    require_train_extra("finetune")
    cfg = TrainConfig.from_dict(given)
    with contextlib.redirect_stdout(sys.stderr):  # Trainer logs go to stderr; stdout is ours (table or JSON)
        manifest = _search(cfg, search, fixed=list(given)) if search else _train(cfg)
    if not is_main_process():  # the other ranks of a torchrun launch: rank 0 reports
        return
    if as_json:
        click.echo(json.dumps(manifest, indent=2))
        return
    if "search" in manifest:
        from edgesent.search import trial_table

        click.echo(format_table(*trial_table(manifest["search"])) + "\n")
    task = get_task(manifest["task"])
    rows = [
        [f"{e['epoch']:g}", e["train_loss"], e["eval_loss"], *(e[c] for c in task.epoch_columns)]
        for e in manifest["epochs"]
    ]
    click.echo(format_table(["epoch", "train_loss", "eval_loss", *task.epoch_columns], rows))
    click.echo(f"\nbest epoch {manifest['best_epoch']:g}: " + task.format_report(manifest["metrics"]))
    click.echo(f"\nsaved {manifest['out_dir']} ({manifest['wall_time_s']:.1f} s on {manifest['device']['type']})")


_SEARCH_OPTIONS = {
    "search": "trials",
    "search_space": "space_file",
    "search_subset": "subset",
    "search_timeout": "timeout_minutes",
}


def _train(cfg: TrainConfig) -> dict[str, Any]:
    from edgesent.train import train

    return train(cfg)


def _search(cfg: TrainConfig, options: dict[str, Any], fixed: list[str]) -> dict[str, Any]:
    """``finetune --search``: the search options become a SearchConfig around ``cfg``; progress lines shown."""
    if "search" not in options:
        raise click.BadParameter(f"{', '.join('--' + k.replace('_', '-') for k in options)} need(s) --search N")
    from edgesent._imports import require_search_extra
    from edgesent.config.search import SearchConfig

    require_search_extra("finetune --search")
    try:
        search_cfg = SearchConfig(train=cfg, fixed=tuple(fixed), **{_SEARCH_OPTIONS[k]: v for k, v in options.items()})
    except ConfigError as err:  # name the option the user typed, not the config field
        message = str(err)
        for option, name in _SEARCH_OPTIONS.items():
            if message.startswith(f"{name} "):
                message = f"--{option.replace('_', '-')}{message[len(name) :]}"
        raise ConfigError(message) from err
    from edgesent.search import search_hyperparameters

    if is_main_process():  # one progress line per trial, not one per torchrun rank
        logging.getLogger("edgesent.search").setLevel(min(logging.INFO, logging.getLogger().getEffectiveLevel()))
    return search_hyperparameters(search_cfg)


@click.command("search-report")
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also write trials.md, trials.json and score_vs_lr.png to this directory.",
)
@overwrite_option
@json_option
def search_report(model_dir: Path, report_dir: Path | None, overwrite: bool, as_json: bool) -> None:
    """The trials of MODEL_DIR's hyperparameter search (finetune --search): parameters, score, state, time.

    The best trial, the one MODEL_DIR was retrained from, is marked with *.
    """
    from edgesent.search import read_search, trial_table, write_search_report

    search = read_search(model_dir)
    if report_dir is not None:
        write_search_report(model_dir, report_dir, overwrite=overwrite)
    click.echo(json.dumps(search, indent=2) if as_json else format_table(*trial_table(search)))
    if report_dir is not None and not as_json:
        click.echo(f"\nreport written to {report_dir}")


@click.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option(
    "--data",
    type=data_path,
    required=True,
    help="Labelled file: CSV, TSV, JSONL; for span models JSONL with 'spans', SemEval-2014 XML or CoNLL.",
)
@text_column_option
@label_column_option
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--skip-empty", is_flag=True, help="Skip rows with empty text instead of failing.")
@drop_label_option
@no_verify_option
@json_option
def evaluate(model_dir: Path, data: Path, as_json: bool, no_verify: bool, **options: Any) -> None:
    """The metrics of MODEL_DIR on --data: accuracy, macro-F1, per-class report and confusion matrix; for a
    span model exact-match span P/R/F1, span-only F1, polarity accuracy and macro-F1, per-label report.

    MODEL_DIR may be a PyTorch directory (finetune, prune) or an ONNX directory (export), so fp32,
    int8 and pruned variants can be compared on the same data.
    """
    from edgesent.evaluate import evaluate_model

    report = evaluate_model(model_dir, data, verify=not no_verify, **options)
    head = f"{model_dir} ({report['kind']}, {report['model_precision']})"
    text = f"{head}\n" + get_task(report["task"]).format_report(report)
    click.echo(json.dumps(report, indent=2) if as_json else text)
