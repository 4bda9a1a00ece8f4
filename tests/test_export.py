"""ONNX export: fp32/int8/fp16 structure, the manifest, the torch.onnx fallback, int8 remedies, atomic failure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


pytest.importorskip("torch")
pytest.importorskip("optimum.exporters.onnx")

import onnx
import onnxruntime as ort
import torch
import transformers
from conftest import LABELS, make_texts, no_leftovers, write_csv

from edgesent import export as export_module
from edgesent.artifacts import KIND_PYTORCH, manifest_sha256, read_manifest, sha256_file, verify_files
from edgesent.cli import cli
from edgesent.errors import ConfigError
from edgesent.export import ExportConfig, export_model
from edgesent.parity import DEFAULT_THRESHOLDS, ParityConfig
from edgesent.quantize import TARGETS, QuantizeConfig, detect_target, quantize_model, sensitive_nodes
from edgesent.runtime import Predictor


EXPORT_FILES = {
    "model.onnx",
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "edgesent.json",
}
TEXTS = ["great food", "the service was slow and the staff were rude", "", "okay"]
real_main_export = export_module.main_export


@pytest.fixture(scope="module")
def tiny_distilbert_dir(_tiny_model_master: Path, tmp_path_factory) -> Path:
    """A DistilBERT twin of the tiny BERT (no token_type_ids input), same vocabulary and labels."""
    from edgesent.artifacts import write_manifest

    model_dir = tmp_path_factory.mktemp("distil") / "model"
    tokenizer = transformers.DistilBertTokenizerFast(
        vocab_file=str(_tiny_model_master / "vocab.txt"), do_lower_case=True, model_max_length=64
    )
    torch.manual_seed(0)
    config = transformers.DistilBertConfig(
        vocab_size=transformers.AutoConfig.from_pretrained(_tiny_model_master).vocab_size,
        dim=32,
        n_layers=2,
        n_heads=4,
        hidden_dim=64,
        max_position_embeddings=128,
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
    )
    transformers.DistilBertForSequenceClassification(config).eval().save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    write_manifest(
        model_dir, KIND_PYTORCH, {"labels": LABELS, "base_model": "tiny-random-distilbert", "max_length": 64}
    )
    return model_dir


def torch_logits(model_dir: Path, texts: list[str]) -> np.ndarray:
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.no_grad():
        return model(**tokenizer(texts, padding=True, return_tensors="pt")).logits.numpy()


def onnx_logits(export_dir: Path, texts: list[str]) -> np.ndarray:
    tokenizer = transformers.AutoTokenizer.from_pretrained(export_dir)
    session = ort.InferenceSession(str(export_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    encoded = tokenizer(texts, padding=True, return_tensors="np")
    return session.run(["logits"], {i.name: encoded[i.name].astype(np.int64) for i in session.get_inputs()})[0]


def op_types(path: Path) -> dict[str, int]:
    model = onnx.load(str(path))
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def negate_logits(path: Path) -> None:
    """Break a model on purpose: the output becomes -logits, so every argmax flips."""
    model = onnx.load(str(path))
    for node in model.graph.node:
        node.output[:] = ["logits_raw" if name == "logits" else name for name in node.output]
    model.graph.node.append(onnx.helper.make_node("Neg", ["logits_raw"], ["logits"], name="sabotage"))
    onnx.save(model, str(path))


def quantize_broken_unless(rescued):
    """export's ``quantize_model``, with the logits negated (``negate_logits``) unless ``rescued(cfg)``: the int8
    variants a test wants to fail parity do, the others are real."""
    real = export_module.quantize_model

    def quantize(onnx_path, out_path, cfg, calibration=None):
        info = real(onnx_path, out_path, cfg, calibration)
        if not rescued(cfg):
            negate_logits(out_path)
        return info

    return quantize


# --- fp32 -----------------------------------------------------------------------------------------------------


def test_fp32_export_passes_parity_with_default_thresholds(tiny_onnx_dir: Path, _tiny_model_master: Path):
    manifest = read_manifest(tiny_onnx_dir)
    assert manifest["kind"] == "onnx" and manifest["precision"] == "fp32" and manifest["verified"] is True
    parity = manifest["parity"]
    assert parity["passed"] and parity["thresholds"] == DEFAULT_THRESHOLDS["fp32"]
    assert parity["max_abs_diff"] <= 1e-4 and parity["agreement"] == 1.0 and parity["tokenizer_match"] == 1.0
    assert manifest["export"]["exporter"] == "optimum" and manifest["opset"] == 18
    assert manifest["labels"] == LABELS and manifest["max_length"] == 64 and manifest["onnx_file"] == "model.onnx"
    assert manifest["source"]["manifest_sha256"] == manifest_sha256(_tiny_model_master)


def test_export_dir_holds_exactly_what_a_predictor_needs_and_hashes_match(tiny_onnx_dir: Path):
    manifest = read_manifest(tiny_onnx_dir)
    assert {p.name for p in tiny_onnx_dir.iterdir()} == EXPORT_FILES
    assert set(manifest["files"]) == EXPORT_FILES - {"edgesent.json"}
    for name, entry in manifest["files"].items():
        assert sha256_file(tiny_onnx_dir / name) == entry["sha256"]
        assert (tiny_onnx_dir / name).stat().st_size == entry["bytes"]
    verify_files(tiny_onnx_dir, manifest)
    assert manifest["parity"]["onnx_file"] == "model.onnx"  # not the temporary directory it was checked in
    assert json.loads((tiny_onnx_dir / "config.json").read_text())["id2label"] == {
        str(i): lab for i, lab in enumerate(LABELS)
    }


def test_onnx_io_names_and_dynamic_axes(tiny_onnx_dir: Path):
    model = onnx.load(str(tiny_onnx_dir / "model.onnx"))
    inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    assert inputs == {
        name: ["batch_size", "sequence_length"] for name in ("input_ids", "attention_mask", "token_type_ids")
    }
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.INT64 for i in model.graph.input)
    (output,) = model.graph.output
    assert output.name == "logits" and [d.dim_param or d.dim_value for d in output.type.tensor_type.shape.dim] == [
        "batch_size",
        len(LABELS),
    ]


def test_fp32_logits_match_pytorch(tiny_onnx_dir: Path, _tiny_model_master: Path):
    assert np.allclose(onnx_logits(tiny_onnx_dir, TEXTS), torch_logits(_tiny_model_master, TEXTS), atol=1e-5)


def test_loads_with_optimum_ortmodel_and_gives_the_same_logits(tiny_onnx_dir: Path, _tiny_model_master: Path):
    from optimum.onnxruntime import ORTModelForSequenceClassification

    model = ORTModelForSequenceClassification.from_pretrained(tiny_onnx_dir)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_onnx_dir)
    logits = model(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits.detach().numpy()
    assert np.allclose(logits, torch_logits(_tiny_model_master, TEXTS), atol=1e-5)
    assert model.config.id2label == dict(enumerate(LABELS))


# --- int8 -----------------------------------------------------------------------------------------------------


def test_int8_export_is_quantized_and_agrees(tiny_int8_dir: Path, tiny_onnx_dir: Path, _tiny_model_master: Path):
    manifest = read_manifest(tiny_int8_dir)
    assert manifest["precision"] == "int8" and manifest["verified"] and manifest["parity"]["passed"]
    assert manifest["parity"]["thresholds"] == DEFAULT_THRESHOLDS["int8"]
    assert manifest["export"]["quantize"]["target"] == "avx512_vnni" and manifest["export"]["remedy"] is None
    counts = op_types(tiny_int8_dir / "model.onnx")
    # 2 layers x 4 weight MatMuls (query, key and value merged by edgesent.simplify; attention output; FFN in and
    # out) + pooler + classifier: every weight MatMul became an integer MatMul.
    assert counts.get("MatMulInteger", 0) == 10 and counts.get("DynamicQuantizeLinear", 0) > 0
    model = onnx.load(str(tiny_int8_dir / "model.onnx"))
    int8_weights = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 2]
    assert len(int8_weights) >= 10
    assert manifest["files"]["model.onnx"]["bytes"] < read_manifest(tiny_onnx_dir)["files"]["model.onnx"]["bytes"]
    assert np.array_equal(
        onnx_logits(tiny_int8_dir, TEXTS).argmax(-1), torch_logits(_tiny_model_master, TEXTS).argmax(-1)
    )


def test_int8_remedy_is_tried_and_reported(_tiny_model_master: Path, tmp_path: Path, monkeypatch):
    """Per-tensor is made to fail on purpose; the first remedy (per-channel) must rescue the export."""
    monkeypatch.setattr(export_module, "quantize_model", quantize_broken_unless(lambda cfg: cfg.per_channel))
    per_tensor = QuantizeConfig.for_target("avx512_vnni", per_channel=False)
    # The tiny random head decides nothing by 0.1 logits, so every flip would be a near-tie: judge every row.
    cfg = ExportConfig(precision="int8", quantize=per_tensor, parity={"near_tie_margin": 0.0})
    manifest = export_model(_tiny_model_master, tmp_path / "out", cfg)
    assert manifest["verified"] and manifest["export"]["remedy"] == "per_channel"
    assert manifest["export"]["quantize"]["per_channel"] is True
    attempts = manifest["export"]["attempts"]
    assert [a["remedy"] for a in attempts] == [None, "per_channel"] and [a["passed"] for a in attempts] == [
        False,
        True,
    ]
    assert "agreement" in attempts[0]["summary"]


def test_int8_failing_every_remedy_exits_1_and_writes_nothing(
    _tiny_model_master: Path, tmp_path: Path, runner, monkeypatch
):
    monkeypatch.setattr(export_module, "quantize_model", quantize_broken_unless(lambda cfg: False))
    out = tmp_path / "out"
    texts = write_csv(tmp_path / "texts.csv", make_texts(5))  # real texts, so the request is smoothed
    result = runner.invoke(
        cli,
        # --near-tie-margin 0: the tiny random head decides nothing by 0.1 logits; judge every row (no labels)
        [
            "export",
            str(_tiny_model_master),
            "--out",
            str(out),
            "--int8",
            "--target",
            "avx512_vnni",
            "--near-tie-margin",
            "0",
            "--parity-data",
            str(texts),
            "--label-column",
            "",
        ],
    )
    assert result.exit_code == 1, result.output
    message = result.output.strip().splitlines()[-1]
    assert message.startswith("Error: ") and "parity failed for the int8 export" in message
    for remedy in ("no_smoothing", "per_tensor", "reduce_range", "fp32_head", "fp32_embeddings_and_head"):
        assert remedy in message
    assert "nothing was written" in message and no_leftovers(tmp_path, "out")


def test_sensitive_nodes_find_embeddings_and_classifier_head(tiny_onnx_dir: Path):
    model = onnx.load(str(tiny_onnx_dir / "model.onnx"))
    embeddings = sensitive_nodes(model, ["embeddings"])
    head = sensitive_nodes(model, ["head"])
    assert sorted(embeddings) == sorted(n for n in embeddings if "embeddings" in n) and len(embeddings) == 3
    assert sorted(head) == ["/bert/pooler/dense/Gemm", "/classifier/Gemm"]


@pytest.mark.parametrize("keep", [(), ("head",), ("embeddings",)])
def test_dynamic_int8_leaves_groups_in_fp32_only_when_asked(tiny_onnx_dir: Path, tmp_path: Path, keep: tuple):
    # The head is two Gemms, which quantize_dynamic renames <gemm>_MatMul before it reads nodes_to_exclude;
    # the embeddings are three Gathers, stored int8 and dequantized after the lookup unless kept.
    out = tmp_path / "int8.onnx"
    result = quantize_model(tiny_onnx_dir / "model.onnx", out, QuantizeConfig(keep_fp32=keep))
    nodes = onnx.load(str(out)).graph.node
    quantized = [n.name for n in nodes if n.op_type == "MatMulInteger"]
    head = [n for n in quantized if n.startswith(("/bert/pooler/dense/Gemm", "/classifier/Gemm"))]
    dequantized_tables = [n for n in nodes if n.op_type == "DequantizeLinear" and "embeddings" in n.name]
    assert len(head) == (0 if "head" in keep else 2) and len(quantized) - len(head) > 0
    assert len(dequantized_tables) == (0 if "embeddings" in keep else 3)
    assert sorted(result["excluded_nodes"]) == sorted(
        sensitive_nodes(onnx.load(str(tiny_onnx_dir / "model.onnx")), keep)
    )


def test_quantize_presets_and_target_detection():
    assert detect_target() in TARGETS
    vnni, avx2, portable = QuantizeConfig.avx512_vnni(), QuantizeConfig.avx2(), QuantizeConfig.portable()
    assert (vnni.weight_type, vnni.per_channel, vnni.reduce_range) == ("int8", True, False)
    assert avx2.reduce_range and portable.per_channel and portable.reduce_range
    assert QuantizeConfig.for_target("arm64", per_channel=True, reduce_range=None).to_dict() == {
        **QuantizeConfig.arm64().to_dict(),
        "per_channel": True,
    }
    assert QuantizeConfig.from_dict(vnni.to_dict()) == vnni
    with pytest.raises(ConfigError, match="target='x86' is not one of avx512_vnni, avx2, arm64, portable"):
        QuantizeConfig(target="x86")
    with pytest.raises(ConfigError, match="keep_fp32"):
        QuantizeConfig(keep_fp32=("attention",))


# --- other graphs and paths -----------------------------------------------------------------------------------


def test_optimized_graph_quantizes_after_symbolic_shape_inference(_tiny_model_master: Path, tmp_path: Path):
    manifest = export_model(
        _tiny_model_master,
        tmp_path / "out",
        ExportConfig(precision="int8", optimize="O2", quantize=QuantizeConfig.avx512_vnni()),
    )
    assert manifest["verified"] and manifest["export"]["fused_operators"].get("Attention") == 2
    counts = op_types(tmp_path / "out" / "model.onnx")
    assert counts.get("QAttention") == 2 and "SkipLayerNormalization" in counts


def test_a_graph_shape_inference_gives_up_on_leaves_nothing_in_the_working_directory(
    tiny_onnx_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # Fusions without the attention one keep the plain export's shape arithmetic beside contrib ops: symbolic
    # shape inference runs first and gives up, and ONNX Runtime then saves its partial model (and a weights file
    # as large as the model) to the working directory.
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    from edgesent.errors import ExportError
    from edgesent.quantize import quantize_model

    options = FusionOptions("bert")
    options.enable_attention = False
    fused = optimize_model(str(tiny_onnx_dir / "model.onnx"), model_type="bert", optimization_options=options)
    fused.save_model_to_file(str(tmp_path / "fused.onnx"))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    with pytest.raises(ExportError, match="symbolic shape inference before quantization failed"):
        quantize_model(Path("../fused.onnx"), tmp_path / "int8.onnx", QuantizeConfig.avx2())
    assert list(cwd.iterdir()) == [] and Path.cwd() == cwd


def test_fp16_export_structure(_tiny_model_master: Path, tmp_path: Path):
    manifest = export_model(_tiny_model_master, tmp_path / "out", ExportConfig(precision="fp16"))
    assert manifest["precision"] == "fp16" and manifest["parity"]["thresholds"] == DEFAULT_THRESHOLDS["fp16"]
    model = onnx.load(str(tmp_path / "out" / "model.onnx"))
    kinds = [
        i.data_type
        for i in model.graph.initializer
        if i.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    ]
    assert kinds.count(onnx.TensorProto.FLOAT16) > kinds.count(onnx.TensorProto.FLOAT)
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # keep_io_types


@pytest.mark.gpu
def test_fp16_export_runs_on_cuda(_tiny_model_master: Path, tmp_path: Path):
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("needs onnxruntime-gpu and a CUDA GPU")
    export_model(_tiny_model_master, tmp_path / "out", ExportConfig(precision="fp16"))
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    session = ort.InferenceSession(str(tmp_path / "out" / "model.onnx"), providers=["CUDAExecutionProvider"])
    encoded = tokenizer(TEXTS, padding=True, return_tensors="np")
    logits = session.run(["logits"], {i.name: encoded[i.name].astype(np.int64) for i in session.get_inputs()})[0]
    assert np.allclose(logits, torch_logits(_tiny_model_master, TEXTS), atol=1e-2)


def test_static_int8_with_calibration_data(_tiny_model_master: Path, tmp_path: Path):
    calibration = write_csv(tmp_path / "calib.csv", make_texts(4))
    cfg = ExportConfig(
        precision="int8", quantize={"target": "avx512_vnni", "static": True}, calibration_data=calibration
    )
    manifest = export_model(_tiny_model_master, tmp_path / "out", cfg)
    assert manifest["verified"] and manifest["export"]["calibration"]["samples"] == 12
    counts = op_types(tmp_path / "out" / "model.onnx")
    assert counts.get("QuantizeLinear", 0) > 0 and counts.get("DequantizeLinear", 0) > 0


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
def test_torch_onnx_fallback_when_optimum_fails(
    arch: str, _tiny_model_master: Path, tiny_distilbert_dir: Path, tmp_path: Path, monkeypatch
):
    def optimum_fails(*args, **kwargs):
        raise ValueError("unsupported architecture\nsecond line")

    monkeypatch.setattr(export_module, "main_export", optimum_fails)
    model_dir = _tiny_model_master if arch == "bert" else tiny_distilbert_dir
    manifest = export_model(model_dir, tmp_path / "out", ExportConfig())
    assert manifest["export"]["exporter"] == "torch.onnx"
    assert manifest["export"]["fallback_reason"] == "ValueError: unsupported architecture second line"
    assert manifest["verified"] and manifest["parity"]["max_abs_diff"] <= 1e-4  # inputs bound in forward() order
    expected = ["input_ids", "attention_mask"] + (["token_type_ids"] if arch == "bert" else [])
    assert sorted(manifest["inputs"]) == sorted(expected)


def test_distilbert_exports_without_token_type_ids(tiny_distilbert_dir: Path, tmp_path: Path):
    manifest = export_model(tiny_distilbert_dir, tmp_path / "out", ExportConfig())
    assert manifest["export"]["exporter"] == "optimum" and manifest["verified"]
    assert manifest["inputs"] == ["input_ids", "attention_mask"]


# --- the gate can fail, atomically ----------------------------------------------------------------------------


def _export_a_different_model(monkeypatch, tmp_path: Path) -> None:
    """Swap in a model with other random weights where the source's export should be."""
    torch.manual_seed(123)
    impostor = tmp_path / "impostor"
    config = transformers.AutoConfig.from_pretrained(tmp_path / "tiny-model")
    transformers.BertForSequenceClassification(config).save_pretrained(impostor)
    transformers.AutoTokenizer.from_pretrained(tmp_path / "tiny-model").save_pretrained(impostor)
    monkeypatch.setattr(
        export_module, "main_export", lambda model, output, **kw: real_main_export(str(impostor), output, **kw)
    )


def test_swapped_model_fails_parity_exit_1_nothing_written(tiny_model_dir: Path, tmp_path: Path, runner, monkeypatch):
    _export_a_different_model(monkeypatch, tmp_path)
    result = runner.invoke(cli, ["export", str(tiny_model_dir), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    message = result.output.strip().splitlines()[-1]
    assert "parity failed for the fp32 export (13 texts from probe texts)" in message
    assert "max_abs_diff" in message and "> 1e-04" in message and "nothing was written" in message
    assert no_leftovers(tmp_path, "out")


def test_keep_unverified_keeps_the_model_marked_unverified(
    tiny_model_dir: Path, tmp_path: Path, runner, monkeypatch, caplog: pytest.LogCaptureFixture
):
    _export_a_different_model(monkeypatch, tmp_path)
    out = tmp_path / "out"
    result = runner.invoke(cli, ["export", str(tiny_model_dir), "--out", str(out), "--keep-unverified"])
    assert result.exit_code == 1 and "kept for inspection with verified: false" in result.output
    manifest = read_manifest(out)
    assert manifest["verified"] is False and manifest["parity"]["passed"] is False
    assert any(c["name"] == "max_abs_diff" and not c["passed"] for c in manifest["parity"]["checks"])
    with caplog.at_level("WARNING", logger="edgesent.runtime"):  # it runs, but never without a word
        Predictor.load(out, provider="cpu")
    assert "failed its parity gate (manifest: verified false)" in caplog.text


def test_failed_export_leaves_an_existing_output_untouched(
    tiny_onnx_dir: Path, tiny_model_dir: Path, tmp_path: Path, runner, monkeypatch
):
    import shutil

    out = Path(shutil.copytree(tiny_onnx_dir, tmp_path / "out"))
    before = read_manifest(out)["files"]
    _export_a_different_model(monkeypatch, tmp_path)
    result = runner.invoke(cli, ["export", str(tiny_model_dir), "--out", str(out), "--overwrite"])
    assert result.exit_code == 1
    assert read_manifest(out)["files"] == before


# --- bad input: one line, exit 2, nothing half-written --------------------------------------------------------


def _assert_user_error(result, fragment: str, tmp_path: Path) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("Error:") and fragment in lines[-1], lines
    assert "Traceback" not in result.output and no_leftovers(tmp_path, "out")


def test_not_a_model_directory(tmp_path: Path, runner):
    (tmp_path / "data").mkdir()
    result = runner.invoke(cli, ["export", str(tmp_path / "data"), "--out", str(tmp_path / "out")])
    _assert_user_error(result, "no edgesent.json", tmp_path)


def test_missing_tokenizer(tiny_model_dir: Path, tmp_path: Path, runner):
    (tiny_model_dir / "tokenizer.json").unlink()
    result = runner.invoke(cli, ["export", str(tiny_model_dir), "--out", str(tmp_path / "out")])
    _assert_user_error(result, "no tokenizer.json", tmp_path)


def test_tampered_source_is_refused(tiny_model_dir: Path, tmp_path: Path, runner):
    with open(tiny_model_dir / "model.safetensors", "ab") as fh:
        fh.write(b"\0")
    result = runner.invoke(cli, ["export", str(tiny_model_dir), "--out", str(tmp_path / "out")])
    _assert_user_error(result, "sha256 does not match", tmp_path)


def test_unwritable_output_path(tiny_model_dir: Path, tmp_path: Path, runner):
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a directory")
    result = runner.invoke(cli, ["export", str(tiny_model_dir), "--out", str(blocker / "out")])
    _assert_user_error(result, "cannot write to", tmp_path)


def test_existing_output_needs_overwrite(tiny_model_dir: Path, tmp_path: Path, runner):
    (tmp_path / "out").mkdir()
    result = runner.invoke(cli, ["export", str(tiny_model_dir), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "pass --overwrite" in result.output
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--int8", "--fp16"], "--int8 and --fp16 exclude each other"),
        (["--int8", "--static"], "needs calibration texts"),
        (["--target", "avx2"], "target: only used by int8 exports; add --int8"),
        (["--opset", "9"], "opset must be in [14,"),
        (["--max-length", "4096"], "exceeds the 128 positions"),
    ],
)
def test_bad_options_are_one_line_errors(args: list[str], fragment: str, tiny_model_dir: Path, tmp_path: Path, runner):
    result = runner.invoke(cli, ["export", str(tiny_model_dir), "--out", str(tmp_path / "out"), *args])
    _assert_user_error(result, fragment, tmp_path)


def test_max_length_counts_roberta_s_padding_offset(_tiny_model_master: Path, tmp_path: Path, runner):
    """RoBERTa numbers positions from pad_token_id + 1: of 34 position embeddings, 32 hold tokens."""
    from edgesent.artifacts import write_manifest
    from edgesent.flops import check_position_limit

    model_dir = tmp_path / "roberta"
    config = transformers.RobertaConfig(
        vocab_size=transformers.AutoConfig.from_pretrained(_tiny_model_master).vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=34,
        pad_token_id=1,
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
    )
    transformers.RobertaForSequenceClassification(config).save_pretrained(model_dir)
    transformers.AutoTokenizer.from_pretrained(_tiny_model_master).save_pretrained(model_dir)
    write_manifest(model_dir, KIND_PYTORCH, {"labels": LABELS, "base_model": "tiny-roberta", "max_length": 32})
    check_position_limit(32, config, "roberta")  # the most it takes
    result = runner.invoke(cli, ["export", str(model_dir), "--out", str(tmp_path / "out"), "--max-length", "34"])
    _assert_user_error(result, f"max_length 34 exceeds the 32 positions of {model_dir}/config.json", tmp_path)


def test_parity_data_with_unknown_labels(tiny_model_dir: Path, tmp_path: Path, runner):
    data = write_csv(tmp_path / "d.csv", [("great food", "positive"), ("meh", "sarcastic")])
    result = runner.invoke(
        cli, ["export", str(tiny_model_dir), "--out", str(tmp_path / "out"), "--parity-data", str(data)]
    )
    _assert_user_error(result, "'sarcastic' not among the training labels", tmp_path)


def test_export_config_validation_and_round_trip():
    cfg = ExportConfig(precision="int8", quantize=QuantizeConfig.avx2(), parity=ParityConfig(min_agreement=0.95))
    assert ExportConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ConfigError, match="precision='int4' is not one of fp32, int8, fp16"):
        ExportConfig(precision="int4")
    with pytest.raises(ConfigError, match="quantize is only used with precision='int8'"):
        ExportConfig(quantize=QuantizeConfig())
    assert ExportConfig(precision="int8").quantize == QuantizeConfig.for_target("auto")


def test_cli_human_output_and_json(_tiny_model_master: Path, tmp_path: Path, runner):
    result = runner.invoke(cli, ["export", str(_tiny_model_master), "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    assert "(fp32 via optimum, opset 18" in result.output and "parity passed on 13 texts" in result.output
    result = runner.invoke(cli, ["export", str(_tiny_model_master), "--out", str(tmp_path / "b"), "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["verified"] is True


def test_help_smoke(runner):
    for command in ("export", "parity"):
        result = runner.invoke(cli, [command, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output
    assert "--keep-unverified" in runner.invoke(cli, ["export", "--help"]).output


def test_no_verify_exports_and_checks_a_source_changed_on_purpose(tiny_model_dir: Path, tmp_path: Path, runner):
    with open(tiny_model_dir / "config.json", "a", encoding="utf-8") as fh:
        fh.write("\n")  # still valid JSON with the same label map, but its sha256 no longer matches
    out = tmp_path / "out"
    result = runner.invoke(cli, ["export", str(tiny_model_dir), "--out", str(out)])
    assert result.exit_code == 2 and "sha256 does not match" in result.output
    result = runner.invoke(cli, ["export", str(tiny_model_dir), "--out", str(out), "--no-verify", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["export"]["config"]["verify"] is False
    result = runner.invoke(cli, ["parity", str(tiny_model_dir), str(out)])
    assert result.exit_code == 2 and "sha256 does not match" in result.output
    result = runner.invoke(cli, ["parity", str(tiny_model_dir), str(out), "--no-verify"])
    assert result.exit_code == 0, result.output


def test_cli_builds_the_config_from_the_options_given_only(tiny_model_dir: Path, tmp_path: Path, runner, monkeypatch):
    seen = {}

    def fake_export(model_dir, out_dir, cfg):
        seen["cfg"] = cfg
        return {}

    monkeypatch.setattr(export_module, "export_model", fake_export)
    args = [
        "export",
        str(tiny_model_dir),
        "--out",
        str(tmp_path / "o"),
        "--int8",
        "--target",
        "arm64",
        "--per-channel",
    ]
    runner.invoke(cli, [*args, "--min-agreement", "0.9", "--no-remedies"])
    cfg = seen["cfg"]
    assert cfg.quantize == QuantizeConfig.for_target("arm64", per_channel=True)
    assert cfg.parity == ParityConfig(min_agreement=0.9) and cfg.remedies is False
    result = runner.invoke(cli, ["export", str(tiny_model_dir), "--min-agreement", "nan"])
    assert result.exit_code == 2 and "Error: min_agreement must be a finite number, got nan" in result.output
    runner.invoke(cli, [*args, "--fp32-matmuls", "3"])
    assert seen["cfg"].fp32_matmuls == 3 and cfg.fp32_matmuls == 0
    result = runner.invoke(cli, ["export", str(tiny_model_dir), "--fp32-matmuls", "2"])  # an fp32 export
    assert result.exit_code == 2 and "fp32_matmuls=2" in result.output and "Traceback" not in result.output


def test_export_judges_on_the_models_own_sample_by_default(tiny_model_dir: Path, tiny_data, tmp_path: Path, runner):
    """finetune keeps a seeded sample of its eval split; export without --parity-data judges on it, not on probes."""
    train, dev = tiny_data
    model = tmp_path / "model"
    args = ["finetune", "--base", str(tiny_model_dir), "--data", str(train), "--eval-data", str(dev)]
    assert runner.invoke(cli, [*args, "--out", str(model), "--epochs", "1"]).exit_code == 0
    manifest = read_manifest(model)
    assert manifest["parity_sample"] == {
        "file": "parity_sample.jsonl",
        "rows": 18,
        "seed": 42,
        "source": "evaluation split",
    }
    assert "parity_sample.jsonl" in manifest["files"]  # hashed like every file
    result = runner.invoke(cli, ["export", str(model), "--out", str(tmp_path / "onnx"), "--json"])
    assert result.exit_code == 0, result.output
    parity = json.loads(result.stdout)["parity"]
    assert parity["source"].endswith("parity_sample.jsonl") and parity["n_texts"] == 18
    assert parity["accuracy_torch"] is not None  # labelled: accuracy is judged too


def test_the_targeted_remedy_keeps_the_most_sensitive_matmuls_before_the_coarse_ones(
    _tiny_model_master: Path, tmp_path: Path, monkeypatch
):
    """Only a model with some MatMuls in fp32 passes here: the ranked remedy must come before fp32_head."""
    monkeypatch.setattr(export_module, "quantize_model", quantize_broken_unless(lambda cfg: bool(cfg.fp32_nodes)))
    cfg = ExportConfig(precision="int8", quantize="avx512_vnni", parity={"near_tie_margin": 0.0})
    manifest = export_model(_tiny_model_master, tmp_path / "out", cfg)
    remedy = manifest["export"]["remedy"]
    assert manifest["verified"] and remedy == "fp32_matmuls_top1"
    kept = manifest["export"]["quantize"]["fp32_nodes"]
    assert len(kept) == 1 and kept[0] in manifest["export"]["excluded_nodes"]
    assert [a["remedy"] for a in manifest["export"]["attempts"]][-1] == "fp32_matmuls_top1"


def _fake_ranking(calls: list[list[str]]):
    """``rank_matmuls`` with a fixed order (the quantizable MatMuls, last first, all helped by fp32); each call
    appends the order it returned, so a test sees both the ranking and how often it ran."""
    from edgesent.sensitivity import NodeSensitivity, SensitivityRanking, quantizable_matmuls

    def rank(fp32_path, feeds, cfg, reference_logits=None, nodes=None):
        names = quantizable_matmuls(Path(fp32_path))[::-1]
        calls.append(names)
        return SensitivityRanking(
            1.0, 1.0, 0, [NodeSensitivity(n, 0.5, 0.5, 1.0 / (i + 1), 0) for i, n in enumerate(names)]
        )

    return rank


def test_fp32_matmuls_keeps_the_top_ranked_from_the_start(_tiny_model_master: Path, tmp_path: Path, monkeypatch):
    calls: list[list[str]] = []
    monkeypatch.setattr(export_module, "rank_matmuls", _fake_ranking(calls))
    cfg = ExportConfig(precision="int8", quantize="avx512_vnni", fp32_matmuls=2)
    manifest = export_model(_tiny_model_master, tmp_path / "out", cfg)
    kept = manifest["export"]["quantize"]["fp32_nodes"]
    assert manifest["verified"] and manifest["export"]["remedy"] is None and len(calls) == 1
    assert kept == calls[0][:2]  # the two most harmful, in rank order
    assert set(kept) <= set(manifest["export"]["excluded_nodes"])
    assert manifest["export"]["config"]["fp32_matmuls"] == 2
    graph = onnx.load(str(tmp_path / "out" / "model.onnx")).graph
    floats = {n.name for n in graph.node if n.op_type == "MatMul"}  # a Gemm is quantized as <name>_MatMul
    assert all(name in floats or f"{name}_MatMul" in floats for name in kept)  # still float in the int8 file


def test_a_remedy_adds_to_the_requested_fp32_matmuls_and_ranks_once(
    _tiny_model_master: Path, tmp_path: Path, monkeypatch
):
    """Requested 1, passing needs 2: the remedy's top-1 step is the request itself (skipped), top-2 passes."""
    calls: list[list[str]] = []
    monkeypatch.setattr(export_module, "rank_matmuls", _fake_ranking(calls))
    monkeypatch.setattr(export_module, "quantize_model", quantize_broken_unless(lambda cfg: len(cfg.fp32_nodes) >= 2))
    cfg = ExportConfig(precision="int8", quantize="avx512_vnni", fp32_matmuls=1, parity={"near_tie_margin": 0.0})
    manifest = export_model(_tiny_model_master, tmp_path / "out", cfg)
    remedies = [a["remedy"] for a in manifest["export"]["attempts"]]
    # probe texts only: the request goes unsmoothed, so there is no no_smoothing remedy to try
    assert manifest["verified"] and remedies == [None, "per_tensor", "reduce_range", "fp32_matmuls_top2"]
    assert manifest["export"]["quantize"]["fp32_nodes"] == calls[0][:2] and len(calls) == 1


@pytest.mark.parametrize(
    "settings",
    [
        {"fp32_matmuls": 1},  # fp32 export
        {"precision": "int8", "runtime": "openvino", "fp32_matmuls": 1},
        {"precision": "int8", "quantize": {"static": True}, "calibration_data": "x.tsv", "fp32_matmuls": 1},
        {"precision": "int8", "fp32_matmuls": -1},
    ],
)
def test_fp32_matmuls_is_refused_where_nothing_is_ranked(settings) -> None:
    with pytest.raises(ConfigError, match="fp32_matmuls"):
        ExportConfig(**settings)


def test_the_first_remedy_of_a_smoothed_export_drops_the_smoothing(
    outlier_model_dir: Path, tmp_path: Path, monkeypatch
):
    monkeypatch.setattr(export_module, "quantize_model", quantize_broken_unless(lambda cfg: not cfg.smooth_alpha))
    texts = write_csv(tmp_path / "texts.csv", make_texts(5))  # real texts to calibrate the smoothing on
    parity = {"near_tie_margin": 0.0, "data": texts, "label_column": None}
    cfg = ExportConfig(precision="int8", quantize="avx512_vnni", parity=parity)
    manifest = export_module.export_model(outlier_model_dir, tmp_path / "out", cfg)
    assert manifest["verified"] and manifest["export"]["remedy"] == "no_smoothing"
    assert [a["remedy"] for a in manifest["export"]["attempts"]] == [None, "no_smoothing"]
    assert "smoothing" not in manifest["export"] and manifest["export"]["quantize"]["per_channel"] is True
