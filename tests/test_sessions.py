"""edgesent.sessions: provider choice, session options, session creation and its errors, IO binding, CPU facts.

The provider and session tests moved here from test_runtime.py when session building got its own module; they
still go through ``Predictor.load`` where they did, since the predictor is the main user of this module.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edgesent.errors import ConfigError, ModelError
from edgesent.runtime import Predictor
from edgesent.sessions import (
    CPU_PROVIDER,
    CPU_UNFUSED,
    CUDA_PROVIDER,
    DISABLED_OPTIMIZERS_KEY,
    SPINNING_KEY,
    bind_to_device,
    cpu_info,
    create_session,
    disabled_fusions,
    resolve_providers,
    run_bound,
    session_options,
)


def test_threads_and_graph_optimization_reach_the_session(short_onnx_dir: Path) -> None:
    options = Predictor.load(short_onnx_dir, threads=1, graph_optimization="disable").session.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL


def test_resolve_providers() -> None:
    with_cuda = [CUDA_PROVIDER, CPU_PROVIDER]
    assert resolve_providers("auto", with_cuda) == with_cuda
    assert resolve_providers("cuda", with_cuda) == with_cuda
    assert resolve_providers("cpu", with_cuda) == [CPU_PROVIDER]
    assert resolve_providers("auto", [CPU_PROVIDER]) == [CPU_PROVIDER]
    with pytest.raises(ConfigError, match=r"pip install 'edgesent\[gpu\]'"):
        resolve_providers("cuda", [CPU_PROVIDER])


def test_cuda_without_onnxruntime_gpu_is_a_clear_error(short_onnx_dir: Path) -> None:
    if CUDA_PROVIDER in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed")
    with pytest.raises(ConfigError, match=r"no CUDAExecutionProvider.*edgesent\[gpu\]"):
        Predictor.load(short_onnx_dir, provider="cuda")
    assert Predictor.load(short_onnx_dir).provider == "cpu"


def test_cuda_provider_that_does_not_start(short_onnx_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime-gpu installed but no usable GPU: auto falls back to CPU, an explicit 'cuda' fails clearly."""
    if CUDA_PROVIDER in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed")
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA_PROVIDER, CPU_PROVIDER])
    assert Predictor.load(short_onnx_dir, provider="auto").provider == "cpu"
    with pytest.raises(ConfigError, match="did not start"):
        Predictor.load(short_onnx_dir, provider="cuda")


def test_session_options_threads_spinning_and_level() -> None:
    default = session_options()
    with pytest.raises(RuntimeError, match="does not have configuration"):  # unset: ONNX Runtime's default, spin
        default.get_session_config_entry(SPINNING_KEY)
    assert default.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    quiet = session_options(3, "basic", spinning=False)
    assert (quiet.intra_op_num_threads, quiet.inter_op_num_threads) == (3, 1)
    assert quiet.get_session_config_entry(SPINNING_KEY) == "0"
    assert quiet.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert quiet.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"threads": 0}, "threads=0"), ({"threads": True}, "threads=True"), ({"graph_optimization": "max"}, "'max'")],
)
def test_session_options_reject_bad_settings(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        session_options(**kwargs)


def test_create_session_settings_reach_the_session(short_onnx_dir: Path) -> None:
    session = create_session(short_onnx_dir / "model.onnx", "cpu", threads=2, spinning=False)
    options = session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 1)
    assert options.get_session_config_entry(SPINNING_KEY) == "0"
    assert session.get_providers()[0] == CPU_PROVIDER


def test_disabled_fusions_only_for_edgesent_on_the_cpu_alone() -> None:
    assert disabled_fusions("edgesent", [CPU_PROVIDER]) == ("SkipLayerNormFusion",)
    assert disabled_fusions("edgesent", [CUDA_PROVIDER, CPU_PROVIDER]) == ()
    assert disabled_fusions("onnxruntime", [CPU_PROVIDER]) == ()
    with pytest.raises(ConfigError, match="fusions='none'"):
        disabled_fusions("none", [CPU_PROVIDER])


def _optimized_op_types(model: Path, fusions: str, out: Path) -> list[str]:
    """The operator types of the graph ONNX Runtime runs, saved through ``optimized_model_filepath``."""
    options = session_options(1, disabled_optimizers=disabled_fusions(fusions, [CPU_PROVIDER]))
    options.optimized_model_filepath = str(out)
    ort.InferenceSession(str(model), options, providers=[CPU_PROVIDER])
    import onnx

    return [node.op_type for node in onnx.load(str(out), load_external_data=False).graph.node]


def test_edgesent_sessions_keep_add_and_layer_norm_apart(tiny_int8_dir: Path, tmp_path: Path) -> None:
    """ONNX Runtime fuses residual Add + LayerNormalization into SkipLayerNormalization; edgesent's CPU sessions
    do not (its CPU kernel measured slower), the predictor's session says so, and the logits stay the same."""
    model = tiny_int8_dir / "model.onnx"
    fused = _optimized_op_types(model, "onnxruntime", tmp_path / "fused.onnx")
    unfused = _optimized_op_types(model, "edgesent", tmp_path / "unfused.onnx")
    assert "SkipLayerNormalization" in fused
    assert "SkipLayerNormalization" not in unfused
    assert unfused.count("LayerNormalization") == fused.count("LayerNormalization") + fused.count(
        "SkipLayerNormalization"
    )
    predictor = Predictor.load(tiny_int8_dir, "cpu", threads=1)
    entry = predictor.session.get_session_options().get_session_config_entry(DISABLED_OPTIMIZERS_KEY)
    assert entry == ",".join(CPU_UNFUSED)
    plain = create_session(model, "cpu", threads=1, fusions="onnxruntime")
    feed = predictor.encode(["a fine film", "", "not good at all, and far too long for what it is"])
    ours, theirs = predictor.session.run(None, feed)[0], plain.run(None, feed)[0]
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_create_session_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="missing; re-export the model"):
        create_session(tmp_path / "nope.onnx", "cpu")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="onnxruntime cannot load it") as info:
        create_session(broken, "cpu")
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="provider='tpu'"):
        create_session(broken, "tpu")


def test_io_binding_binds_inputs_and_outputs_on_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA IO-binding helper against fakes, since CI has no GPU."""
    calls: list[tuple] = []

    class Binding:
        def bind_ortvalue_input(self, name, value):
            calls.append(("input", name, value))

        def bind_output(self, name, device, device_id):
            calls.append(("output", name, device, device_id))

    class Session:
        def io_binding(self):
            return Binding()

        def run_with_iobinding(self, binding):
            calls.append(("run", binding))

    monkeypatch.setattr(ort.OrtValue, "ortvalue_from_numpy", staticmethod(lambda a, d, i: ("value", d, i, a.shape)))
    session = Session()
    bound = bind_to_device(session, {"input_ids": np.ones((2, 4), np.int64)}, ["logits"])
    run_bound(session, bound)
    assert calls == [
        ("input", "input_ids", ("value", "cuda", 0, (2, 4))),
        ("output", "logits", "cuda", 0),
        ("run", bound.binding),
    ]
    assert bound.inputs == [("value", "cuda", 0, (2, 4))]  # kept alive with the binding


def test_cpu_info_reads_model_flags_and_physical_cores(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    block = "processor\t: {p}\nmodel name\t: Test CPU 9000\nflags\t\t: fpu avx2 avx512_vnni\nphysical id\t: 0\ncore id\t\t: {c}\n\n"
    cpuinfo.write_text("".join(block.format(p=p, c=c) for p, c in enumerate([0, 1, 0, 1])))  # 2 cores, 4 threads
    info = cpu_info(cpuinfo)
    assert info.model == "Test CPU 9000"
    assert {"avx2", "avx512_vnni"} <= set(info.flags)
    assert info.physical_cores == 2
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd asimddp i8mm\nModel\t\t: Raspberry Pi 5\n")
    assert cpu_info(arm).flags == ("fp", "asimd", "asimddp", "i8mm") and cpu_info(arm).model == "Raspberry Pi 5"


def test_quantize_target_detection_reads_flags_through_cpu_info(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnx")
    from edgesent import quantize
    from edgesent.sessions import CpuInfo

    monkeypatch.setattr(quantize.platform, "machine", lambda: "x86_64")
    cases = [(("avx2", "avx_vnni"), "avx512_vnni"), (("avx2",), "avx2"), (("sse4_2",), "portable")]
    cases.append((("AVX2", "avx512vnni"), "avx512_vnni"))  # py-cpuinfo's CPUID spelling (macOS, Windows)
    for flags, target in cases:
        monkeypatch.setattr(quantize, "cpu_info", lambda flags=flags: CpuInfo("test", flags, 1))
        assert quantize.detect_target() == target


def test_sessions_module_imports_no_torch() -> None:
    code = textwrap.dedent(
        """
        import sys
        import edgesent.sessions
        heavy = sorted(m for m in ("torch", "transformers", "onnx") if m in sys.modules)
        assert not heavy, heavy
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
