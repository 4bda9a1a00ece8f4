"""``edgesent export`` and ``edgesent parity``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from edgesent.cli._format import format_table
from edgesent.cli._options import (
    given_options,
    json_option,
    label_column_option,
    max_length_option,
    nest,
    no_verify_option,
    overwrite_option,
    text_column_option,
    with_default,
)
from edgesent.config.export import OPTIMIZE_LEVELS, ExportConfig
from edgesent.config.parity import ParityConfig
from edgesent.config.providers import RUNTIME_CHOICES
from edgesent.config.quantize import KEEP_FP32_GROUPS, TARGET_CHOICES


data_path = click.Path(dir_okay=False, path_type=Path)
# How the flat options of `edgesent export` nest into ExportConfig: option name -> field of the nested config.
QUANTIZE_OPTIONS = ("target", "per_channel", "reduce_range", "keep_fp32", "static", "smooth_alpha")
PARITY_OPTIONS = {
    "parity_data": "data",
    "text_column": "text_column",
    "label_column": "label_column",
    "max_abs_diff": "max_abs_diff",
    "min_agreement": "min_agreement",
    "max_accuracy_drop": "max_accuracy_drop",
    "min_span_f1": "min_span_f1",
    "near_tie_margin": "near_tie_margin",
    "probe_max_prob_diff": "probe_max_prob_diff",
}


def threshold_options(func: Any) -> Any:
    """The parity bounds (--max-abs-diff, --min-agreement, --max-accuracy-drop, --near-tie-margin, --min-span-f1,
    --probe-max-prob-diff)."""
    for option in reversed(
        [
            click.option(
                "--max-abs-diff",
                type=float,
                help="Largest allowed absolute logit difference (inf: unchecked). "
                "Default: fp32 1e-4, fp16 1e-2, int8 unchecked.",
            ),
            click.option(
                "--min-agreement",
                type=float,
                help="Minimum fraction of predicted labels that must agree. Default: fp32 1.0, int8/fp16 0.99; with "
                "labelled data the default is reported and the accuracy drop decides, a value set here gates.",
            ),
            click.option(
                "--max-accuracy-drop",
                type=float,
                help="With labelled data: largest allowed accuracy drop (span models: span F1 drop), 0.01 = 1 point. "
                "Default: fp32 0, int8/fp16 0.01.",
            ),
            click.option(
                "--near-tie-margin",
                type=float,
                help="Logits: a label flip where PyTorch's own top-1 minus top-2 margin is below this is reported, "
                "not judged (0 judges every row). Default: fp32 2e-4, int8/fp16 0.1.",
            ),
            click.option(
                "--probe-max-prob-diff",
                type=float,
                help="With real texts deciding: the probe texts (empty, emoji, scripts, over-long) still run, and "
                "their largest probability difference must stay under this. Default: fp32 1e-3, int8/fp16 0.5.",
            ),
            click.option(
                "--min-span-f1",
                type=float,
                help="Span models: minimum F1 of the ONNX spans against the PyTorch spans (--min-agreement is then "
                "per token). Default: fp32 1.0, int8/fp16 0.97; with gold spans the default is reported and the "
                "span F1 drop decides, a value set here gates.",
            ),
        ]
    ):
        func = option(func)
    return func


def _measured(name: str, value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.2e}" if name == "max_abs_diff" else f"{value:.4f}"


def format_parity(report: dict[str, Any]) -> str:
    """The parity checks as a table, under a one-line verdict."""
    rows = [
        [
            c["name"],
            _measured(c["name"], c["value"]),
            _measured(c["name"], c["bound"]),
            "ok" if c["passed"] else "FAILED",
        ]
        for c in report["checks"]
    ]
    head = f"parity {'passed' if report['passed'] else 'FAILED'} on {report['n_texts']} texts from {report['source']}"
    if report["mean_abs_diff"] is not None:
        head += f" ({report['n_rows']} rows, mean_abs_diff {report['mean_abs_diff']:.2e})"
    if report["accuracy_torch"] is not None:
        what = "span f1" if report.get("span_f1") is not None else "accuracy"  # a span model's gold measure
        head += f"; {what} torch {report['accuracy_torch']:.4f}, onnx {report['accuracy_onnx']:.4f}"
    return head + "\n" + format_table(["check", "measured", "bound", ""], rows)


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.1f} MB" if n_bytes >= 1e6 else f"{n_bytes / 1e3:.1f} kB"


@click.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Output directory. Default: <MODEL_DIR>-onnx-<precision>[-<level>] beside MODEL_DIR.",
)
@click.option("--opset", type=int, help="ONNX opset (>= 14). Default: the exporter's choice (18 for BERT).")
@click.option("--int8", is_flag=True, help="Dynamic int8 quantization for CPUs (weight format picked by --target).")
@click.option("--fp16", is_flag=True, help="float16 weights and compute, for GPU targets (parity runs on CPU).")
@click.option(
    "--target",
    type=click.Choice(TARGET_CHOICES),
    help="CPU the int8 weight format is chosen for; auto reads this machine's CPU flags.  [default: auto]",
)
@click.option("--per-channel/--per-tensor", default=None, help="int8 scale granularity. Default: the target's preset.")
@click.option("--reduce-range/--full-range", default=None, help="7-bit int8 weights. Default: the target's preset.")
@click.option(
    "--keep-fp32",
    type=click.Choice(KEEP_FP32_GROUPS),
    multiple=True,
    help="Leave these nodes in fp32 when quantizing (repeatable).",
)
@click.option("--static", is_flag=True, help="Static (QDQ) int8 quantization calibrated on --calibration-data.")
@click.option(
    "--smooth-alpha",
    type=click.FloatRange(0.0, 1.0),
    help="Activation smoothing before int8 (SmoothQuant): the outlier channels of each outlier-heavy MatMul input "
    "move into the weights with this strength, calibrated on --calibration-data, else the parity texts (never the "
    "probe texts alone: then it is skipped). 0: off. "
    "Default: the --target preset's (0.8 for avx512_vnni and portable, else 0).",
)
@click.option(
    "--runtime",
    type=click.Choice(RUNTIME_CHOICES),
    help="int8 only: onnxruntime (ONNX Runtime's int8), openvino (NNCF static int8 run by OpenVINO; pip install "
    "'edgesent[openvino]') or auto (build and gate both, keep the faster that passes). Recorded for the predictor.  "
    "[default: onnxruntime]",
)
@click.option(
    "--calibration-data",
    type=data_path,
    help="Texts for --static, smoothing or NNCF (--runtime openvino/auto) calibration (CSV, TSV, JSONL). Default for "
    "smoothing and NNCF: the parity texts.",
)
@click.option(
    "--calibration-samples",
    type=int,
    help=with_default("Calibration texts used (the first rows).", ExportConfig, "calibration_samples"),
)
@click.option(
    "--optimize",
    type=click.Choice(OPTIMIZE_LEVELS),
    help="Fuse the graph: O1 basic, O2 + Attention/SkipLayerNorm/Gelu fusions, O3 + fast Gelu. Default: off.",
)
@click.option(
    "--simplify/--no-simplify",
    default=None,
    help="Fold the graph's shape arithmetic and attention scale, merge query/key/value into one MatMul (same "
    "outputs; int8 5-13% faster on short texts). Not applied with --optimize.  [default: on]",
)
@max_length_option
@click.option(
    "--parity-data",
    type=data_path,
    help="Texts (with labels: accuracy too) for the parity check; for span models a span file (JSONL, XML, CoNLL). "
    "Default: the model's own sample of its evaluation split (parity_sample.jsonl), else built-in probe texts.",
)
@text_column_option
@label_column_option
@threshold_options
@click.option(
    "--fp32-matmuls",
    type=click.IntRange(min=0),
    help="Keep this many of the MatMuls that int8 hurts most in fp32 (ranked on the gate's texts, as the targeted "
    "remedy ranks them): a measured trade of latency for fidelity. ONNX Runtime dynamic int8, classifiers.  "
    "[default: 0]",
)
@click.option(
    "--remedies/--no-remedies",
    default=None,
    help="When int8 parity fails, retry without smoothing, per-channel/per-tensor, reduce_range, the most "
    "sensitive MatMuls in fp32, fp32 head, fp32 embeddings.  "
    "[default: on]",
)
@click.option(
    "--keep-unverified",
    is_flag=True,
    help="Keep a model that fails parity (marked verified: false) instead of discarding it; still exits 1.",
)
@no_verify_option
@overwrite_option
@json_option
def export(model_dir: Path, out_dir: Path | None, int8: bool, fp16: bool, as_json: bool, **options: Any) -> None:
    """Export MODEL_DIR to ONNX and verify it against PyTorch (the parity gate).

    Uses Optimum's exporter (torch.onnx.export where it cannot) and says which. When parity fails the
    command exits 1 naming every failed check with its measured value and bound, and writes nothing
    unless --keep-unverified. Use --label-column '' for a --parity-data file without labels.
    """
    from edgesent._imports import require_train_extra

    require_train_extra("export")
    if int8 and fp16:
        raise click.BadParameter("--int8 and --fp16 exclude each other", param_hint="--int8/--fp16")
    settings = nest(nest(given_options(options), "quantize", QUANTIZE_OPTIONS), "parity", PARITY_OPTIONS)
    if settings.pop("no_verify", False):
        settings["verify"] = False
    cfg = ExportConfig.from_dict({"precision": "int8" if int8 else "fp16" if fp16 else "fp32", **settings})
    from edgesent.export import default_out_dir, export_model

    manifest = export_model(model_dir, out_dir or default_out_dir(model_dir, cfg), cfg)
    if as_json:
        click.echo(json.dumps(manifest, indent=2))
        return
    info, sizes = manifest["export"], manifest["export"]["sizes"]
    notes = [
        f"{manifest['precision']} via {info['exporter']}",
        f"opset {manifest['opset']}",
        _size(sizes["onnx_bytes"]),
    ]
    notes += [f"{sizes['fp32_to_onnx_ratio']:.2f}x smaller than fp32"] if manifest["precision"] != "fp32" else []
    notes += [f"for {manifest['runtime']}"] if manifest["precision"] == "int8" else []
    kept = (info.get("quantize") or {}).get("fp32_nodes") or []
    notes += [f"{len(kept)} MatMul{'s' * (len(kept) != 1)} in fp32"] if kept else []
    smoothed = (info.get("smoothing") or {}).get("matmuls") or []
    notes += [f"{len(smoothed)} MatMul inputs smoothed"] if smoothed else []
    notes += [f"remedy {info['remedy']}"] if info.get("remedy") else []
    click.echo(f"exported {manifest['out_dir']} ({', '.join(notes)})\n{format_parity(manifest['parity'])}")


@click.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.argument("onnx_dir", type=click.Path(path_type=Path))
@click.option(
    "--data",
    type=data_path,
    help="Texts (with labels: accuracy too). Default: the model's own sample of its evaluation split "
    "(parity_sample.jsonl), else built-in probe texts.",
)
@text_column_option
@label_column_option
@max_length_option
@click.option(
    "--batch-size",
    type=int,
    help=with_default("Texts per batch, length-sorted as the predictor batches them.", ParityConfig, "batch_size"),
)
@threshold_options
@no_verify_option
@json_option
def parity(model_dir: Path, onnx_dir: Path, as_json: bool, **options: Any) -> None:
    """Compare ONNX_DIR with its PyTorch source MODEL_DIR on the same texts; exit 1 if a check fails.

    Bounds default to those of ONNX_DIR's precision (its edgesent.json). Use --label-column '' for
    a --data file without labels.
    """
    from edgesent._imports import require_train_extra

    require_train_extra("parity")
    settings = given_options(options)
    if settings.pop("no_verify", False):
        settings["verify"] = False
    cfg = ParityConfig.from_dict(settings)
    from edgesent.parity import check_parity

    report = check_parity(model_dir, onnx_dir, cfg)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else format_parity(report.to_dict()))
    report.raise_if_failed()
