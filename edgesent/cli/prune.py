"""``edgesent prune``."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import click

from edgesent.cli._format import format_table
from edgesent.cli._options import (
    json_option,
    label_column_option,
    max_length_option,
    overwrite_option,
    text_column_option,
)


data_path = click.Path(dir_okay=False, path_type=Path)
fraction = click.FloatRange(min=0.0)  # the upper bound [0, 1) is checked by PruneConfig, with its reason


@click.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("--data", type=data_path, required=True, help="Training file: importance scores and recovery.")
@click.option("--eval-data", type=data_path, required=True, help="Evaluation file: accuracy and best epoch.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output model directory.")
@click.option(
    "--heads",
    type=fraction,
    default=0.0,
    show_default=True,
    help="Fraction of attention heads to remove in every layer, in [0, 1); one head always stays.",
)
@click.option(
    "--ffn",
    type=fraction,
    default=0.0,
    show_default=True,
    help="Fraction of FFN intermediate neurons to remove in every layer, in [0, 1).",
)
@click.option("--layers", type=int, default=None, help="Keep this many layers (the most important ones).")
@click.option(
    "--speedup",
    type=float,
    default=None,
    help="Target FLOPs reduction (e.g. 2.0) instead of --heads/--ffn: removes an equal fraction of both.",
)
@click.option(
    "--score-samples", type=int, default=2048, show_default=True, help="Training examples used to score importance."
)
@click.option(
    "--recovery/--no-recovery",
    default=True,
    show_default=True,
    help="Fine-tune the pruned model with distillation from the unpruned one.",
)
@click.option("--epochs", type=float, default=3.0, show_default=True, help="Recovery epochs.")
@click.option("--lr", type=float, default=5e-5, show_default=True, help="Recovery peak learning rate.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--temperature", type=float, default=2.0, show_default=True, help="Distillation temperature.")
@click.option(
    "--alpha",
    type=float,
    default=0.5,
    show_default=True,
    help="Weight of the hard-label loss; 1 - alpha weighs the distillation loss.",
)
@click.option("--early-stopping", type=int, default=2, show_default=True, help="Patience in epochs (0: off).")
@click.option("--max-steps", type=int, default=0, show_default=True, help="Stop recovery after N steps (0: no cap).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@max_length_option
@text_column_option
@label_column_option
@click.option("--skip-empty", is_flag=True, help="Skip rows with empty text instead of failing.")
@overwrite_option
@json_option
def prune(model_dir: Path, as_json: bool, **options: object) -> None:
    """Remove attention heads, FFN neurons and layers from MODEL_DIR, then recover with distillation.

    Units are ranked by gradient importance on --data; the pruned model is fine-tuned against the
    unpruned one and saved as a smaller PyTorch directory that export, predict and bench take as is.
    """
    from edgesent._imports import require_train_extra

    require_train_extra("prune")
    from edgesent.prune import PruneConfig, prune_model

    cfg = PruneConfig(model_dir=model_dir, **options)
    # the Trainer prints its per-epoch logs to stdout; with --json, stdout carries the JSON object alone
    with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
        manifest = prune_model(cfg)
    if as_json:
        click.echo(json.dumps(manifest, indent=2))
        return
    pruning = manifest["pruning"]
    rows = [
        [
            stage,
            pruning["parameters"]["before" if stage == "before" else "after"],
            pruning["flops"]["before" if stage == "before" else "after"] / 1e6,
            acc["accuracy"],
            acc["macro_f1"],
        ]
        for stage, acc in pruning["accuracy"].items()
    ]
    click.echo(format_table(["stage", "parameters", "MFLOPs", "accuracy", "macro_f1"], rows))
    heads, ffn = pruning["heads_per_layer"], pruning["ffn_per_layer"]
    click.echo(
        f"\nlayers {len(heads['before'])}->{len(heads['after'])}, heads/layer {max(heads['before'])}->"
        f"{max(heads['after'])}, ffn {ffn['before'][0]}->{ffn['after'][0]}, FLOPs x{pruning['flops']['ratio']:.2f}; "
        f"saved {manifest['out_dir']}"
    )
