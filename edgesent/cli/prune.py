"""``edgesent prune``."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import click

from edgesent.cli import is_main_process
from edgesent.cli._format import format_table
from edgesent.cli._options import (
    drop_label_option,
    given_options,
    json_option,
    label_column_option,
    max_length_option,
    nest,
    overwrite_option,
    text_column_option,
    with_default,
)
from edgesent.config.prune import PruneConfig
from edgesent.config.train import DEVICES, TrainConfig


data_path = click.Path(dir_okay=False, path_type=Path)
# Options that configure the recovery run: they go into PruneConfig.recovery (a TrainConfig).
RECOVERY_OPTIONS = ("epochs", "lr", "early_stopping", "max_steps")


def _default(text: str, name: str, config: type = PruneConfig) -> str:
    return with_default(text, config, name)


@click.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("--data", type=data_path, required=True, help="Training file: importance scores and recovery.")
@click.option("--eval-data", type=data_path, required=True, help="Evaluation file: accuracy and best epoch.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output model directory.")
@click.option(
    "--heads",
    type=float,
    help=_default("Fraction of attention heads to remove in every layer, in [0, 1); one head always stays.", "heads"),
)
@click.option(
    "--ffn",
    type=float,
    help=_default("Fraction of FFN intermediate neurons to remove in every layer, in [0, 1).", "ffn"),
)
@click.option("--layers", type=int, help="Keep this many layers (the most important ones). Default: all.")
@click.option(
    "--speedup",
    type=float,
    help="Target FLOPs reduction (e.g. 2.0) instead of --heads/--ffn: removes an equal fraction of both.",
)
@click.option(
    "--score-samples", type=int, help=_default("Training examples used to score importance.", "score_samples")
)
@click.option(
    "--recovery/--no-recovery",
    "recover",
    default=None,
    help="Fine-tune the pruned model with distillation from the unpruned one.  [default: on]",
)
@click.option("--epochs", type=float, help=_default("Recovery epochs.", "epochs", TrainConfig))
@click.option("--lr", type=float, help=_default("Recovery peak learning rate.", "lr", TrainConfig))
@click.option("--batch-size", type=int, help=_default("Scoring and recovery batch size.", "batch_size"))
@click.option("--temperature", type=float, help=_default("Distillation temperature.", "temperature"))
@click.option(
    "--alpha",
    type=float,
    help=_default("Weight of the hard-label loss; 1 - alpha weighs the distillation loss.", "alpha"),
)
@click.option(
    "--early-stopping", type=int, help=_default("Recovery patience in epochs (0: off).", "early_stopping", TrainConfig)
)
@click.option(
    "--max-steps",
    type=int,
    help=_default(
        "Cap on recovery steps; stops after --epochs or this, whichever is first (0: no cap).",
        "max_steps",
        TrainConfig,
    ),
)
@click.option("--device", type=click.Choice(DEVICES), help=_default("Where to run.", "device"))
@click.option("--seed", type=int, help=_default("Random seed.", "seed"))
@max_length_option
@text_column_option
@label_column_option
@click.option("--skip-empty", is_flag=True, help="Skip rows with empty text instead of failing.")
@drop_label_option
@overwrite_option
@json_option
def prune(model_dir: Path, as_json: bool, **options: object) -> None:
    """Remove attention heads, FFN neurons and layers from MODEL_DIR, then recover with distillation.

    Units are ranked by gradient importance on --data; the pruned model is fine-tuned against the
    unpruned one and saved as a smaller PyTorch directory that export, predict and bench take as is.
    Results go to stdout; the Trainer's logs and progress bars to stderr.
    """
    from edgesent._imports import require_train_extra

    require_train_extra("prune")
    settings = given_options(options)
    recover = settings.pop("recover", True)
    recovery = nest(settings, "recovery", RECOVERY_OPTIONS).pop("recovery", {})
    if not recover and recovery:
        given = ", ".join("--" + name.replace("_", "-") for name in recovery)
        raise click.BadParameter(f"{given}: only used by recovery", param_hint="--no-recovery")
    cfg = PruneConfig.from_dict({"model_dir": model_dir, **settings, "recovery": recovery if recover else None})
    from edgesent.prune import prune_model

    with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its per-epoch logs; stdout is ours
        manifest = prune_model(cfg)
    if not is_main_process():  # the other ranks of a torchrun launch: rank 0 reports
        return
    if as_json:
        click.echo(json.dumps(manifest, indent=2))
        return
    pruning = manifest["pruning"]
    metrics = list(next(iter(pruning["accuracy"].values())))  # the task's: accuracy, macro_f1 or span P/R/F1, ...
    rows = [
        [
            stage,
            pruning["parameters"]["before" if stage == "before" else "after"],
            pruning["flops"]["before" if stage == "before" else "after"] / 1e6,
            *(scores[name] for name in metrics),
        ]
        for stage, scores in pruning["accuracy"].items()
    ]
    click.echo(format_table(["stage", "parameters", "MFLOPs", *metrics], rows))
    heads, ffn = pruning["heads_per_layer"], pruning["ffn_per_layer"]
    click.echo(
        f"\nlayers {len(heads['before'])}->{len(heads['after'])}, heads/layer {max(heads['before'])}->"
        f"{max(heads['after'])}, ffn {ffn['before'][0]}->{ffn['after'][0]}, FLOPs x{pruning['flops']['ratio']:.2f}; "
        f"saved {manifest['out_dir']}"
    )
