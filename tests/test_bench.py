"""Tests for edgesent.bench and ``edgesent bench``: arithmetic, gates, baseline, JSON schema, tiny-model runs.

No test asserts a wall-clock figure: timings are checked for structure (keys, counts, consistency),
and gates and the baseline are evaluated on result rows with fixed numbers.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_texts, write_csv

from edgesent.bench import (
    BenchConfig,
    BenchResult,
    Cell,
    GateRule,
    compare_to_baseline,
    load_gate_file,
    parse_gate_rules,
    plan_cells,
    summarize_latencies,
)
from edgesent.bench.config import skipped_default_lengths
from edgesent.bench.runners import synthetic_inputs
from edgesent.cli import cli
from edgesent.errors import BenchmarkGateError, ConfigError, DataError
from edgesent.flops import count_flops, flops_by_kind


REPO = Path(__file__).resolve().parents[1]
MINILM = {
    "hidden_size": 384,
    "num_hidden_layers": 6,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
    "id2label": {"0": "negative", "1": "positive"},
}
MACHINE = {"gpus": [], "cpu_model": "test cpu"}


# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def onnx_dirs(tiny_onnx_dir: Path, tiny_int8_dir: Path) -> dict[str, Path]:
    """The session's fp32 and int8 exports of the tiny model, by precision."""
    return {"fp32": tiny_onnx_dir, "int8": tiny_int8_dir}


def _row(
    variant: str,
    p50: float,
    p99: float | None = None,
    *,
    seq_len: int | None = 128,
    mode: str = "session",
    source: str = "synthetic",
    batch_size: int = 1,
    threads: int = 1,
    provider: str = "cpu",
) -> dict:
    return {
        "variant": variant,
        "provider": provider,
        "threads": threads,
        "batch_size": batch_size,
        "seq_len": seq_len,
        "source": source,
        "mode": mode,
        "p50_ms": p50,
        "p90_ms": p50,
        "p99_ms": p99 if p99 is not None else p50,
    }


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _result(rows: list[dict], gates: list[dict] | None = None, regression: list[dict] | None = None) -> BenchResult:
    return BenchResult(
        config={"tolerance": 0.1},
        machine=MACHINE,
        variants=[],
        reference="torch-fp32",
        gemm_peak=None,
        rows=rows,
        gates=gates or [],
        regression=regression or [],
    )


# ------------------------------------------------------------------------------------------ arithmetic


def test_percentiles_and_throughput_from_fixed_samples() -> None:
    samples_ns = [ms * 1_000_000 for ms in range(1, 101)]  # 1..100 ms
    stats = summarize_latencies(samples_ns, batch_size=4)
    assert stats["runs"] == 100
    assert stats["p50_ms"] == pytest.approx(50.5)
    assert stats["p90_ms"] == pytest.approx(90.1)
    assert stats["p99_ms"] == pytest.approx(99.01)
    assert (stats["min_ms"], stats["max_ms"], stats["mean_ms"]) == pytest.approx((1.0, 100.0, 50.5))
    assert stats["throughput"] == pytest.approx(4 * 1000 / 50.5)  # texts per second from the mean


def test_percentiles_of_a_single_sample_are_that_sample() -> None:
    stats = summarize_latencies([2_500_000], batch_size=1)
    assert stats["p50_ms"] == stats["p99_ms"] == pytest.approx(2.5)


def _logging_unit(log: list[tuple[str, str]]) -> type:
    """A timed unit that records (its name, the input) in ``log`` for every run."""

    class Unit:
        def __init__(self, name: str):
            self.name = name

        def prepare(self, item: str) -> tuple[str, str]:
            return (self.name, item)

        def run(self, prepared: tuple[str, str]) -> None:
            log.append(prepared)

    return Unit


def test_units_in_blocks_take_consecutive_inputs_in_their_turn() -> None:
    from edgesent.bench.runners import measure_units as _measure_units

    log: list[tuple[str, str]] = []
    Unit = _logging_unit(log)

    inputs = ["x", "y", "z"]
    samples = _measure_units([Unit("a"), Unit("b")], inputs, warmup=0, runs=2, budget_s=None, block=2)
    assert log == [
        ("a", "x"),
        ("a", "y"),
        ("b", "x"),
        ("b", "y"),  # round 0: inputs 0-1, a starts
        ("b", "z"),
        ("b", "x"),
        ("a", "z"),
        ("a", "x"),  # round 1: inputs 2-3 (cycling), b starts
    ]
    assert [len(s) for s in samples] == [4, 4]


def test_units_warm_up_then_take_turns_in_rotating_order_on_the_same_input() -> None:
    from edgesent.bench.runners import measure_units as _measure_units

    log: list[tuple[str, str]] = []
    Unit = _logging_unit(log)

    samples = _measure_units([Unit("a"), Unit("b"), Unit("c")], ["x", "y"], warmup=2, runs=3, budget_s=None)
    assert log[:6] == [("a", "x"), ("a", "y"), ("b", "x"), ("b", "y"), ("c", "x"), ("c", "y")]  # warm-up
    assert log[6:] == [
        ("a", "x"),
        ("b", "x"),
        ("c", "x"),  # round 0: input 0, a starts
        ("b", "y"),
        ("c", "y"),
        ("a", "y"),  # round 1: input 1, b starts
        ("c", "x"),
        ("a", "x"),
        ("b", "x"),  # round 2: input 0 again, c starts
    ]
    assert [len(s) for s in samples] == [3, 3, 3] and all(t >= 0 for s in samples for t in s)


def test_a_unit_the_runtime_cannot_run_is_named_by_its_index(onnx_dirs: dict) -> None:
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    from edgesent.bench.runners import CallRunner, OrtRunner, UnitRunError, create_bench_session, measure_units

    session = create_bench_session(onnx_dirs["fp32"] / "model.onnx", "cpu", 1)
    too_long = synthetic_inputs(1, 300, 100, 0)  # beyond the tiny model's 128 positions: ONNX Runtime refuses it
    units = [CallRunner(lambda item: None), OrtRunner(session, io_binding=False)]
    with pytest.raises(UnitRunError) as info:
        measure_units(units, [too_long], warmup=1, runs=1, budget_s=None)
    assert info.value.index == 1 and isinstance(info.value.error, Fail)
    assert "Status Message" not in info.value.brief() and "\n" not in info.value.brief()


def test_only_runtime_errors_become_unit_run_errors() -> None:
    from edgesent.bench.runners import CallRunner, UnitRunError, measure_units

    def out_of_memory(item: object) -> None:
        raise MemoryError

    with pytest.raises(UnitRunError) as info:
        measure_units(
            [CallRunner(lambda item: None), CallRunner(out_of_memory)], ["x"], warmup=0, runs=1, budget_s=None
        )
    assert info.value.index == 1 and info.value.brief() == "MemoryError"
    with pytest.raises(TypeError):  # a bug stays a bug, with its traceback
        measure_units([CallRunner(len)], [3], warmup=0, runs=1, budget_s=None)


def test_flop_count_of_minilm_matches_hand_arithmetic() -> None:
    b, s, h, i, layers = 1, 128, 384, 1536, 6
    t = b * s
    per_layer = 3 * 2 * t * h * h + 2 * 2 * b * s * s * h + 2 * t * h * h + 2 * 2 * t * h * i
    expected = layers * per_layer + 2 * b * h * (h + 2)
    assert count_flops(MINILM, b, s) == expected
    assert expected / 1e9 == pytest.approx(2.87, abs=0.01)  # the figure the GOP/s in the issue rests on


def test_flop_count_of_a_pruned_config_shrinks_with_heads_ffn_and_layers() -> None:
    full = count_flops(MINILM, 1, 64)
    fewer_heads = count_flops({**MINILM, "pruned_heads": {"0": [0, 1, 2]}}, 1, 64)  # config.json keys are strings
    per_head_layer = 3 * 2 * 64 * 384 * 32 + 2 * 2 * 64 * 64 * 32 + 2 * 64 * 32 * 384
    assert full - fewer_heads == 3 * per_head_layer
    slim = count_flops({**MINILM, "intermediate_size": 768}, 1, 64)
    assert full - slim == 6 * 2 * 2 * 64 * 384 * 768
    shallow = count_flops({**MINILM, "num_hidden_layers": 3}, 1, 64)
    assert full - shallow == (full - 2 * 384 * (384 + 2)) // 2
    assert count_flops({"model_type": "gpt2"}, 1, 64) is None


def test_flops_split_into_weight_products_and_attention_products() -> None:
    b, s = 2, 128
    split = flops_by_kind(MINILM, b, s)
    assert split is not None and sum(split.values()) == count_flops(MINILM, b, s)
    assert split["attention"] == 6 * 2 * 2 * b * s * s * 384  # Q K^T and softmax(.) V in every layer
    pruned = flops_by_kind({**MINILM, "pruned_heads": {"1": [0, 1, 2, 3]}}, b, s)
    assert pruned is not None and split["attention"] - pruned["attention"] == 2 * 2 * b * s * s * 4 * 32
    assert flops_by_kind({"model_type": "gpt2"}, 1, 64) is None


def test_distilbert_config_names_are_understood() -> None:
    distil = {"dim": 384, "n_layers": 6, "n_heads": 12, "hidden_dim": 1536, "id2label": {"0": "a", "1": "b"}}
    assert count_flops(distil, 2, 32) == count_flops(MINILM, 2, 32)


# --------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"batch_sizes": (0,)}, "batch_sizes"),
        ({"seq_lens": (1,)}, "seq_lens"),
        ({"threads": ()}, "threads"),
        ({"providers": ("tpu",)}, "providers"),
        ({"names": ("a", "b")}, "names"),
        ({"reference": "nope"}, "reference"),
        ({"runs": 10, "time_budget_s": 1.0}, "runs and time_budget_s"),
        ({"tolerance": 0.0}, "tolerance"),
        ({"warmup": -1}, "warmup"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=f"^{field}"):
        BenchConfig(model_dirs=(Path("m"),), **kwargs)


def test_config_rejects_duplicate_default_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'model' is used twice"):
        BenchConfig(model_dirs=(tmp_path / "a" / "model", tmp_path / "b" / "model"))


def test_config_round_trips_through_dict() -> None:
    cfg = BenchConfig(model_dirs=(Path("a"), Path("b")), names=("x", "y"), seq_lens=(16, 64), gate_path=Path("g.toml"))
    again = BenchConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    with pytest.raises(ConfigError, match="unknown setting"):
        BenchConfig.from_dict({**cfg.to_dict(), "bogus": 1})


# ---------------------------------------------------------------------------------------------- gates

GATES = """
[defaults]
provider = "cpu"
threads = 1
batch_size = 1

[[rule]]
name = "int8 vs torch fp32"
kind = "speedup"
variant = "int8"
reference = "torch-fp32"
seq_len = 128
min = 2.5

[[rule]]
kind = "p99_over_p50"
variant = "int8"
seq_len = 128
max = 3.0

[[rule]]
kind = "e2e_over_session"
variant = "int8"
max = 1.15

[[rule]]
kind = "absolute_ms"
variant = "int8"
provider = "cuda"
seq_len = 128
max = 2.0
hardware = "NVIDIA H100"
"""


def test_gate_file_parses_with_defaults_and_default_names(tmp_path: Path) -> None:
    rules = load_gate_file(_write(tmp_path / "gates.toml", GATES))
    assert [r.kind for r in rules] == ["speedup", "p99_over_p50", "e2e_over_session", "absolute_ms"]
    assert rules[0].name == "int8 vs torch fp32"
    assert rules[1].name == "p99_over_p50 int8 b1 s128 t1 cpu"
    assert rules[0].cell == Cell("cpu", 1, 1, 128)
    assert rules[2].cell == Cell("cpu", 1, 1, None, "data")
    assert rules[3].hardware == "NVIDIA H100" and rules[3].provider == "cuda"


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ('kind = "speedup"\nvariant = "a"\nreference = "b"\nseq_len = 128\nmin = 2\nbatch = 1', "unknown key.*batch"),
        ('kind = "fastest"\nvariant = "a"', "kind 'fastest'"),
        ('kind = "speedup"\nvariant = "a"\nseq_len = 128\nmin = 2', "speedup needs reference"),
        ('kind = "p99_over_p50"\nvariant = "a"\nmax = 3', "p99_over_p50 needs seq_len"),
        ('kind = "absolute_ms"\nvariant = "a"\nseq_len = 128\nmax = 5', "needs hardware.*named GPU hardware"),
        ('kind = "p99_over_p50"\nvariant = "a"\nseq_len = 128\nmax = -1', "max = -1"),
        ('kind = "p99_over_p50"\nvariant = "a"\nseq_len = 128\nmax = 3\nhardware = "x"', "hardware only applies"),
        ('kind = "speedup"\nvariant = "a"\nreference = "b"\nseq_len = 0\nmin = 2', "seq_len = 0"),
    ],
)
def test_bad_gate_rules_name_file_rule_and_key(tmp_path: Path, rule: str, message: str) -> None:
    path = _write(tmp_path / "gates.toml", "[[rule]]\n" + rule + "\n")
    with pytest.raises(ConfigError, match=f"gates.toml: rule 1: .*{message}"):
        load_gate_file(path)


def test_gate_file_errors_for_invalid_toml_and_no_rules(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_gate_file(_write(tmp_path / "bad.toml", "[[rule]\n"))
    with pytest.raises(ConfigError, match="no \\[\\[rule\\]\\] tables"):
        load_gate_file(_write(tmp_path / "empty.toml", "[defaults]\nthreads = 1\n"))
    with pytest.raises(ConfigError, match="gate file not found"):
        load_gate_file(tmp_path / "missing.toml")


def test_ci_gate_file_is_valid_and_uses_one_thread() -> None:
    rules = load_gate_file(REPO / "bench" / "gates.toml")
    assert {r.kind for r in rules} == {"speedup", "e2e_over_session", "p99_over_p50"}
    assert {r.variant for r in rules} | {r.reference for r in rules if r.reference} == {"int8", "torch-fp32"}
    assert all(r.threads == 1 and r.provider == "cpu" and r.hardware is None for r in rules)


def test_benchmark_sessions_do_not_spin() -> None:
    from edgesent.bench import session_options

    options = session_options(2)
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 1)
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_speedup_gate_passes_and_fails_with_measured_figure_and_bound() -> None:
    rule = parse_gate_rules(
        {
            "rule": [
                {
                    "name": "int8 fast",
                    "kind": "speedup",
                    "variant": "int8",
                    "reference": "torch-fp32",
                    "seq_len": 128,
                    "min": 3.0,
                }
            ]
        },
        Path("g.toml"),
    )[0]
    good = rule.evaluate([_row("torch-fp32", 37.6), _row("int8", 7.8)], MACHINE)
    assert good["status"] == "pass" and good["measured"] == pytest.approx(37.6 / 7.8)
    bad = rule.evaluate([_row("torch-fp32", 20.0), _row("int8", 8.0)], MACHINE)
    assert bad["status"] == "fail" and bad["measured"] == pytest.approx(2.5)
    assert bad["message"] == (
        "speedup of int8 over torch-fp32 = 2.50x, bound >= 3x [cpu, threads=1, batch=1, seq_len=128]"
    )


def test_ratio_gates_use_the_right_rows() -> None:
    p99 = GateRule("tail", "p99_over_p50", "int8", seq_len=128, max=3.0)
    assert p99.evaluate([_row("int8", 2.0, p99=7.0)], MACHINE)["status"] == "fail"
    assert p99.evaluate([_row("int8", 2.0, p99=5.0)], MACHINE)["measured"] == pytest.approx(2.5)
    e2e = GateRule("e2e", "e2e_over_session", "int8", max=1.15)
    rows = [_row("int8", 4.0, seq_len=None, source="data"), _row("int8", 4.8, seq_len=None, source="data", mode="e2e")]
    outcome = e2e.evaluate(rows, MACHINE)
    assert outcome["status"] == "fail" and outcome["measured"] == pytest.approx(1.2)
    assert "end-to-end/session of int8 = 1.20x, bound <= 1.15x" in outcome["message"]


def test_missing_row_fails_the_gate_instead_of_passing() -> None:
    rule = GateRule("r", "speedup", "int8", reference="torch-fp32", seq_len=128, min=2.0)
    outcome = rule.evaluate([_row("int8", 1.0)], MACHINE)
    assert outcome["status"] == "fail" and "not measured: torch-fp32 (session)" in outcome["message"]


def test_absolute_budget_applies_only_on_the_named_gpu() -> None:
    rule = GateRule("h100", "absolute_ms", "int8", provider="cuda", seq_len=128, max=2.0, hardware="NVIDIA H100")
    rows = [_row("int8", 2.5, provider="cuda")]
    skipped = rule.evaluate(rows, MACHINE)
    assert skipped["status"] == "skip" and "no GPU" in skipped["message"]
    failed = rule.evaluate(rows, {"gpus": ["NVIDIA H100 80GB HBM3"]})
    assert failed["status"] == "fail" and "p50 of int8 = 2.50 ms, bound <= 2 ms" in failed["message"]


def test_failed_gates_raise_one_error_listing_each_rule() -> None:
    rules = [
        GateRule("fast", "speedup", "int8", reference="torch-fp32", seq_len=128, min=3.0),
        GateRule("tail", "p99_over_p50", "int8", seq_len=128, max=2.0),
    ]
    rows = [_row("torch-fp32", 20.0), _row("int8", 10.0, p99=30.0)]
    result = _result(rows, gates=[r.evaluate(rows, MACHINE) for r in rules])
    assert not result.passed
    with pytest.raises(BenchmarkGateError) as info:
        result.raise_for_failures()
    message = str(info.value)
    assert message.startswith("2 latency check(s) failed:")
    assert "gate 'fast': speedup of int8 over torch-fp32 = 2.00x, bound >= 3x" in message
    assert "gate 'tail': p99/p50 of int8 = 3.00x, bound <= 2x" in message
    assert info.value.exit_code == 1


def test_plan_is_exactly_the_rule_cells_without_a_grid(tmp_path: Path) -> None:
    rules = load_gate_file(_write(tmp_path / "gates.toml", GATES))[:3]  # the absolute rule does not apply here
    gate_only = BenchConfig(model_dirs=(Path("m"),), data_path=Path("texts.csv"))
    assert plan_cells(gate_only, rules) == [Cell("cpu", 1, 1, None, "data"), Cell("cpu", 1, 1, 128)]
    with_grid = BenchConfig(model_dirs=(Path("m"),), seq_lens=(16,), data_path=Path("texts.csv"))
    assert plan_cells(with_grid, rules) == [
        Cell("cpu", 1, 1, None, "data"),
        Cell("cpu", 1, 1, 16),
        Cell("cpu", 1, 1, 128),
    ]
    with pytest.raises(ConfigError, match="times real texts; pass --data FILE"):
        plan_cells(BenchConfig(model_dirs=(Path("m"),)), rules)


def test_default_grid_without_gates() -> None:
    cells = plan_cells(BenchConfig(model_dirs=(Path("m"),), threads=(1, 2)), [])
    assert (
        len(cells) == 8 and {c.seq_len for c in cells} == {16, 64, 128, 256} and {c.threads for c in cells} == {1, 2}
    )


def test_default_lengths_beyond_the_models_limit_are_left_out() -> None:
    cfg = BenchConfig(model_dirs=(Path("m"),))
    assert {c.seq_len for c in plan_cells(cfg, [], max_seq_len=128)} == {16, 64, 128}
    assert skipped_default_lengths(cfg, 128) == (256,) and skipped_default_lengths(cfg, None) == ()
    given = BenchConfig(model_dirs=(Path("m"),), seq_lens=(16, 256))
    assert {c.seq_len for c in plan_cells(given, [], max_seq_len=128)} == {16, 256}  # refused later, not dropped
    assert skipped_default_lengths(given, 128) == ()
    with pytest.raises(ConfigError, match="every default length .* exceeds the 8 positions a model allows"):
        plan_cells(cfg, [], max_seq_len=8)


# ------------------------------------------------------------------------------------------- baseline


def test_baseline_comparison_fails_beyond_tolerance_only() -> None:
    base = [_row("int8", 10.0), _row("torch-fp32", 40.0), _row("int8", 3.0, seq_len=16)]
    now = [_row("int8", 11.2), _row("torch-fp32", 43.0), _row("int8", 1.0, seq_len=64)]
    compared = compare_to_baseline(now, base, tolerance=0.10)
    assert [(c["variant"], c["status"]) for c in compared] == [("int8", "fail"), ("torch-fp32", "pass")]
    assert compared[0]["change"] == pytest.approx(0.12)
    with pytest.raises(BenchmarkGateError, match=r"regression int8 .*p50 11.200 ms vs baseline 10.000 ms \(\+12.0%"):
        _result(now, regression=compared).raise_for_failures()


# ------------------------------------------------------------------------------------ tiny-model runs


def _bench_args(*dirs: Path, names: tuple[str, ...], extra: tuple[str, ...] = ()) -> list[str]:
    args = ["bench", *map(str, dirs)]
    for name in names:
        args += ["--name", name]
    return [*args, "--warmup", "1", "--runs", "3", "--no-rss", *extra]


def test_bench_help(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["bench", "--help"])
    assert result.exit_code == 0
    for option in ("--batch-sizes", "--seq-lens", "--threads", "--provider", "--gate", "--baseline", "--report"):
        assert option in result.output


def test_tiny_bench_json_schema_and_ratios(runner: CliRunner, tiny_model_dir: Path, onnx_dirs: dict) -> None:
    args = _bench_args(
        tiny_model_dir,
        onnx_dirs["fp32"],
        onnx_dirs["int8"],
        names=("torch-fp32", "onnx", "int8"),
        extra=("--seq-lens", "8,16", "--batch-sizes", "1,2", "--json"),
    )
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["schema"] == "edgesent.bench/1" and doc["passed"] is True
    assert set(doc) >= {
        "config",
        "machine",
        "variants",
        "reference",
        "gemm_peak",
        "rows",
        "gates",
        "regression",
        "notes",
    }
    assert {
        "cpu_model",
        "cpu_flags",
        "logical_cores",
        "usable_cores",
        "onnxruntime",
        "ort_providers",
        "torch",
        "gpus",
    } <= set(doc["machine"])
    assert doc["machine"]["torch"] is not None  # a PyTorch variant ran, so torch's version is recorded
    assert [(v["name"], v["kind"], v["precision"]) for v in doc["variants"]] == [
        ("torch-fp32", "pytorch", "fp32"),
        ("onnx", "onnx", "fp32"),
        ("int8", "onnx", "int8"),
    ]
    assert doc["reference"] == "torch-fp32"
    rows = doc["rows"]
    assert len(rows) == 3 * 2 * 2  # variants x lengths x batch sizes
    for row in rows:
        assert row["runs"] == 3 and row["p50_ms"] > 0 and row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
        assert row["source"] == "synthetic" and row["mode"] == "session" and row["threads"] == 1
        assert row["gops"] > 0
        ref = next(
            r
            for r in rows
            if r["variant"] == "torch-fp32" and r["seq_len"] == row["seq_len"] and r["batch_size"] == row["batch_size"]
        )
        assert row["speedup"] == pytest.approx(ref["p50_ms"] / row["p50_ms"])
    peak = doc["gemm_peak"]["1"]
    assert peak["shape"] == [128, 384, 1536] and peak["fp32_gops"] > 0 and peak["int8_gops"] > 0
    int8_row = next(r for r in rows if r["variant"] == "int8")
    assert int8_row["peak_fraction"] == pytest.approx(int8_row["gops"] / peak["int8_gops"])


def test_gate_run_measures_rule_cells_and_fails_with_rule_figure_and_bound(
    runner: CliRunner, onnx_dirs: dict, tmp_path: Path
) -> None:
    gate = _write(
        tmp_path / "gates.toml",
        '[[rule]]\nname = "impossible"\nkind = "speedup"\nvariant = "int8"\n'
        'reference = "fp32"\nseq_len = 24\nmin = 1000\n',
    )
    args = _bench_args(
        onnx_dirs["fp32"], onnx_dirs["int8"], names=("fp32", "int8"), extra=("--gate", str(gate), "--no-peak")
    )
    result = runner.invoke(cli, args)
    assert result.exit_code == 1
    assert "Error: 1 latency check(s) failed:" in result.output
    assert "gate 'impossible': speedup of int8 over fp32 = " in result.output
    assert "bound >= 1000x [cpu, threads=1, batch=1, seq_len=24]" in result.output
    table_lines = [line for line in result.output.splitlines() if line.startswith(("fp32 ", "int8 "))]
    assert len(table_lines) == 2 and all(" 24 " in line for line in table_lines)  # only the rule's cell


def test_gate_naming_an_unknown_variant_is_a_user_error(runner: CliRunner, onnx_dirs: dict, tmp_path: Path) -> None:
    gate = _write(tmp_path / "gates.toml", '[[rule]]\nkind = "p99_over_p50"\nvariant = "int4"\nseq_len = 8\nmax = 3\n')
    result = runner.invoke(cli, _bench_args(onnx_dirs["int8"], names=("int8",), extra=("--gate", str(gate))))
    assert result.exit_code == 2
    assert "names variant 'int4', but this run has int8; map directories to names with --name" in result.output


def test_passing_gate_and_baseline_round_trip(runner: CliRunner, onnx_dirs: dict, tmp_path: Path) -> None:
    gate = _write(
        tmp_path / "gates.toml", '[[rule]]\nkind = "p99_over_p50"\nvariant = "int8"\nseq_len = 8\nmax = 1e6\n'
    )
    first = runner.invoke(
        cli, _bench_args(onnx_dirs["int8"], names=("int8",), extra=("--gate", str(gate), "--no-peak", "--json"))
    )
    assert first.exit_code == 0, first.output
    doc = json.loads(first.output)
    assert [g["status"] for g in doc["gates"]] == ["pass"]
    baseline = tmp_path / "baseline.json"
    doc["rows"][0]["p50_ms"] /= 1000  # a baseline 1000x faster: this run must count as a regression
    baseline.write_text(json.dumps(doc))
    second = runner.invoke(
        cli,
        _bench_args(
            onnx_dirs["int8"], names=("int8",), extra=("--gate", str(gate), "--no-peak", "--baseline", str(baseline))
        ),
    )
    assert second.exit_code == 1
    assert "regression int8 [cpu, threads=1, batch=1, seq_len=8, session]: p50" in second.output


def test_bad_baseline_file_is_a_data_error(onnx_dirs: dict, tmp_path: Path) -> None:
    from edgesent.bench import run_benchmark

    bad = _write(tmp_path / "baseline.json", '{"rows": []}')
    with pytest.raises(DataError, match="not an edgesent bench result"):
        run_benchmark(BenchConfig(model_dirs=(onnx_dirs["int8"],), baseline_path=bad, measure_rss=False))


def test_time_budget_measures_at_least_the_minimum_rounds(onnx_dirs: dict) -> None:
    from edgesent.bench import MIN_BUDGET_ROUNDS, run_benchmark

    cfg = BenchConfig(
        model_dirs=(onnx_dirs["int8"],),
        seq_lens=(8,),
        warmup=0,
        time_budget_s=1e-6,
        measure_rss=False,
        measure_peak=False,
    )
    assert cfg.runs is None
    (row,) = run_benchmark(cfg).rows
    assert row["runs"] == MIN_BUDGET_ROUNDS  # the budget is spent after the first round


def test_cuda_without_the_cuda_provider_is_a_user_error(runner: CliRunner, onnx_dirs: dict) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    result = runner.invoke(
        cli, _bench_args(onnx_dirs["int8"], names=("int8",), extra=("--provider", "cuda", "--seq-lens", "8"))
    )
    assert result.exit_code == 2
    assert "has no CUDAExecutionProvider; install the GPU build" in result.output


def test_not_a_model_dir_is_one_line_exit_2(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["bench", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"Error: {tmp_path}: no edgesent.json; is this an edgesent model directory?"
    ]


def test_report_writes_markdown_plot_and_results(runner: CliRunner, onnx_dirs: dict, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "report"
    args = _bench_args(
        onnx_dirs["fp32"],
        onnx_dirs["int8"],
        names=("fp32", "int8"),
        extra=("--seq-lens", "8,16", "--no-peak", "--report", str(out)),
    )
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "edgesent.json",  # every artifact directory carries a manifest: --overwrite may replace it later
        "edgesent_config.json",
        "latency_vs_length.png",
        "report.md",
        "results.json",
    ]
    assert (out / "latency_vs_length.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    assert (
        "| variant | provider |" in report
        and "![p50 latency against sequence length](latency_vs_length.png)" in report
    )
    assert json.loads((out / "results.json").read_text())["schema"] == "edgesent.bench/1"
    again = runner.invoke(cli, args)
    assert again.exit_code == 2 and "already exists; pass --overwrite" in again.output
    manifest = json.loads((out / "edgesent.json").read_text())
    assert manifest["kind"] == "bench-report" and manifest["summary"]["variants"] == ["fp32", "int8"]
    assert set(manifest["files"]) == {"edgesent_config.json", "latency_vs_length.png", "report.md", "results.json"}
    replaced = runner.invoke(cli, [*args, "--overwrite"])
    assert replaced.exit_code == 0, replaced.output


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads VmRSS from Linux /proc")
def test_peak_rss_is_measured_per_variant_in_a_subprocess(onnx_dirs: dict) -> None:
    from edgesent.bench import run_benchmark

    cfg = BenchConfig(
        model_dirs=(onnx_dirs["fp32"], onnx_dirs["int8"]), seq_lens=(8,), warmup=0, runs=2, measure_peak=False
    )
    result = run_benchmark(cfg)
    # This test process holds torch (the tiny model was built with it); the probe for an ONNX variant loads only
    # onnxruntime, so its peak must be far below ours. A peak inherited from the parent (ru_maxrss carries over
    # fork+exec on Linux) would not be.
    ours = next(
        int(line.split()[1]) / 1024
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    for variant in result.variants:
        assert 10 < variant["peak_rss_mb"] < ours * 0.6, (variant, ours)


def test_onnx_only_bench_never_imports_torch(onnx_dirs: dict, tmp_path: Path) -> None:
    texts = write_csv(tmp_path / "texts.csv", make_texts(2))
    code = (
        "import sys; from pathlib import Path; from edgesent.bench import BenchConfig, run_benchmark; "
        f"run_benchmark(BenchConfig(model_dirs=(Path({str(onnx_dirs['int8'])!r}),), seq_lens=(8,), warmup=0, runs=2, "
        f"data_path=Path({str(texts)!r}), measure_rss=False)); assert 'torch' not in sys.modules, 'torch was imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_real_texts_are_timed_end_to_end_and_bare(
    runner: CliRunner, tiny_model_dir: Path, onnx_dirs: dict, tmp_path: Path
) -> None:
    pytest.importorskip("edgesent.runtime")
    texts = write_csv(tmp_path / "texts.csv", make_texts(4))
    gate = _write(tmp_path / "gates.toml", '[[rule]]\nkind = "e2e_over_session"\nvariant = "int8"\nmax = 1e6\n')
    args = _bench_args(
        tiny_model_dir,
        onnx_dirs["int8"],
        names=("torch-fp32", "int8"),
        extra=(
            "--data",
            str(texts),
            "--gate",
            str(gate),
            "--batch-sizes",
            "2",
            "--seq-lens",
            "8",
            "--no-peak",
            "--json",
        ),
    )
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    data_rows = [r for r in doc["rows"] if r["source"] == "data"]
    assert sorted((r["variant"], r["mode"], r["batch_size"]) for r in data_rows) == [
        ("int8", "e2e", 1),
        ("int8", "e2e", 2),
        ("int8", "session", 1),
        ("int8", "session", 2),
        ("torch-fp32", "e2e", 1),
        ("torch-fp32", "e2e", 2),
        ("torch-fp32", "session", 1),
        ("torch-fp32", "session", 2),
    ]
    assert all(r["seq_len"] is None and r["gops"] is None for r in data_rows)
    assert doc["gates"][0]["status"] == "pass" and doc["gates"][0]["measured"] > 0


def test_span_models_are_measured_like_classifiers(
    runner: CliRunner, _tiny_span_model_master: Path, tiny_span_onnx_dir: Path, tmp_path: Path
) -> None:
    """A span model's PyTorch dir and ONNX export: synthetic cells, and real texts end to end (spans decoded)."""
    texts = write_csv(tmp_path / "texts.csv", [("great 😀 service was awful", "x"), ("服务很好 the staff", "y")])
    args = _bench_args(
        _tiny_span_model_master,
        tiny_span_onnx_dir,
        names=("torch-spans", "onnx-spans"),
        extra=("--data", str(texts), "--batch-sizes", "2", "--seq-lens", "8", "--no-peak", "--json"),
    )
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert [(v["name"], v["kind"], v["task"]) for v in doc["variants"]] == [
        ("torch-spans", "pytorch", "token-classification"),
        ("onnx-spans", "onnx", "token-classification"),
    ]
    cells = sorted((r["variant"], r["source"], r["mode"], r["batch_size"]) for r in doc["rows"])
    assert cells == sorted(
        (variant, source, mode, batch)
        for variant in ("torch-spans", "onnx-spans")
        for source, mode, batch in (("synthetic", "session", 2), ("data", "session", 2), ("data", "e2e", 2))
    )
    assert all(r["p50_ms"] > 0 for r in doc["rows"])
    speedups = [r["speedup"] for r in doc["rows"] if r["variant"] == "onnx-spans"]
    assert all(speedup > 0 for speedup in speedups)


def test_cuda_session_binds_inputs_and_outputs_on_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """The IO-binding path, checked against a fake session since CI has no GPU."""
    import onnxruntime as ort

    from edgesent.bench.runners import OrtRunner

    calls = []

    class FakeBinding:
        def bind_ortvalue_input(self, name, value):
            calls.append(("input", name, value))

        def bind_output(self, name, device, device_id):
            calls.append(("output", name, device, device_id))

    class FakeIO:
        def __init__(self, name):
            self.name = name

    class FakeSession:
        def get_inputs(self):
            return [FakeIO("input_ids"), FakeIO("attention_mask")]

        def get_outputs(self):
            return [FakeIO("logits")]

        def io_binding(self):
            return FakeBinding()

        def run_with_iobinding(self, binding):
            calls.append(("run", binding))

    monkeypatch.setattr(ort.OrtValue, "ortvalue_from_numpy", staticmethod(lambda a, d, i: ("ortvalue", d, i, a.shape)))
    unit = OrtRunner(FakeSession(), io_binding=True)
    feeds = {
        "input_ids": np.ones((2, 8), np.int64),
        "attention_mask": np.ones((2, 8), np.int64),
        "token_type_ids": np.zeros((2, 8), np.int64),
    }
    prepared = unit.prepare(feeds)
    unit.run(prepared)
    assert calls[:3] == [
        ("input", "input_ids", ("ortvalue", "cuda", 0, (2, 8))),
        ("input", "attention_mask", ("ortvalue", "cuda", 0, (2, 8))),
        ("output", "logits", "cuda", 0),
    ]
    assert calls[3] == ("run", prepared[0])


@pytest.mark.gpu
def test_cuda_bench_torch_fp16_against_onnx(runner: CliRunner, tiny_model_dir: Path, onnx_dirs: dict) -> None:
    args = _bench_args(
        tiny_model_dir,
        onnx_dirs["fp32"],
        names=("torch", "onnx"),
        extra=("--provider", "cuda", "--seq-lens", "16", "--no-peak", "--json"),
    )
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["rows"]
    assert {(r["variant"], r["provider"]) for r in rows} == {("torch", "cuda"), ("onnx", "cuda")}


# ------------------------------------------------------------------- checked before anything is measured


def _assert_one_line_error(result) -> str:
    """Exit 2, a single ``Error: ...`` line and no traceback; returns the line."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


@pytest.fixture
def no_measuring(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything is measured (GEMM peak, cells) or a runner is created."""

    def measured(*args: object, **kwargs: object) -> None:
        raise AssertionError("measured before the inputs were checked")

    import edgesent.bench.run as run_module

    for name in ("_measure_cells", "measure_gemm_peak", "measure_peak_rss", "RunnerPool"):
        monkeypatch.setattr(run_module, name, measured)


@pytest.mark.parametrize(
    ("gate", "message"),
    [
        ("rule = [1, 2]\n", "gates.toml: rule 1: 1 is not a table"),
        ('defaults = 5\n[[rule]]\nkind = "p99_over_p50"\nvariant = "int8"\nseq_len = 8\nmax = 3\n', "defaults = 5"),
        ('[[rule]]\nkind = "p99_over_p50"\nvariant = "int8"\nseq_len = 8\nmax = inf\n', "max = inf"),
        ('[[rule]]\nkind = "speedup"\nvariant = "int8"\nreference = 3\nseq_len = 8\nmin = 2\n', "reference = 3"),
    ],
)
def test_malformed_gate_file_is_one_line_error(
    runner: CliRunner, onnx_dirs: dict, tmp_path: Path, no_measuring: None, gate: str, message: str
) -> None:
    path = _write(tmp_path / "gates.toml", gate)
    result = runner.invoke(cli, _bench_args(onnx_dirs["int8"], names=("int8",), extra=("--gate", str(path))))
    assert message in _assert_one_line_error(result)


@pytest.mark.parametrize("p50", [0, -1.0, "fast", None])
def test_baseline_with_a_non_positive_p50_is_one_line_error(
    runner: CliRunner, onnx_dirs: dict, tmp_path: Path, no_measuring: None, p50: object
) -> None:
    doc = {"schema": "edgesent.bench/1", "machine": {}, "rows": [{**_row("int8", 1.0, seq_len=8), "p50_ms": p50}]}
    baseline = _write(tmp_path / "baseline.json", json.dumps(doc))
    result = runner.invoke(cli, _bench_args(onnx_dirs["int8"], names=("int8",), extra=("--baseline", str(baseline))))
    assert f"row 1 (int8) has p50_ms = {p50!r}" in _assert_one_line_error(result)


def test_zero_baseline_p50_does_not_divide_by_zero() -> None:
    (compared,) = compare_to_baseline([_row("int8", 1.0)], [_row("int8", 0.0)], tolerance=0.1)
    assert compared["status"] == "fail" and compared["change"] == float("inf")


@pytest.mark.parametrize(
    ("option", "value", "field"),
    [
        ("--time-budget", "inf", "time_budget_s"),
        ("--time-budget", "nan", "time_budget_s"),
        ("--time-budget", "0", "time_budget_s"),
        ("--time-budget", "1e9", "time_budget_s"),
        ("--runs", "0", "runs"),
        ("--warmup", "-1", "warmup"),
        ("--tolerance", "nan", "tolerance"),
        ("--tolerance", "inf", "tolerance"),
        ("--tolerance", "-0.1", "tolerance"),
        ("--seed", "-1", "seed"),
        ("--batch-sizes", "0", "batch_sizes"),
        ("--seq-lens", "1", "seq_lens"),
        ("--threads", "0", "threads"),
    ],
)
def test_numeric_options_are_checked_before_measuring(
    runner: CliRunner, onnx_dirs: dict, no_measuring: None, option: str, value: str, field: str
) -> None:
    args = ["bench", str(onnx_dirs["int8"]), "--no-rss", option, value]
    assert _assert_one_line_error(runner.invoke(cli, args)).startswith(f"Error: {field}")


def test_existing_report_dir_fails_before_measuring(
    runner: CliRunner, onnx_dirs: dict, tmp_path: Path, no_measuring: None
) -> None:
    pytest.importorskip("matplotlib")
    existing = tmp_path / "report"
    existing.mkdir()
    args = _bench_args(onnx_dirs["int8"], names=("int8",), extra=("--report", str(existing)))
    assert "already exists; pass --overwrite" in _assert_one_line_error(runner.invoke(cli, args))
    # --overwrite replaces only a directory edgesent wrote: this one has no manifest, so it is refused, also up front.
    line = _assert_one_line_error(runner.invoke(cli, [*args, "--overwrite"]))
    assert "is not an edgesent artifact" in line
    assert [p.name for p in tmp_path.iterdir()] == ["report"]  # the dry run left nothing behind


def test_report_may_not_replace_a_model_directory(
    runner: CliRunner, onnx_dirs: dict, tmp_path: Path, no_measuring: None
) -> None:
    pytest.importorskip("matplotlib")
    export = Path(shutil.copytree(onnx_dirs["fp32"], tmp_path / "export"))
    before = sorted(p.name for p in export.iterdir())
    args = _bench_args(
        onnx_dirs["int8"], names=("int8",), extra=("--seq-lens", "8", "--report", str(export), "--overwrite")
    )
    line = _assert_one_line_error(runner.invoke(cli, args))
    assert f"{export} is an edgesent 'onnx' directory, not a bench-report" in line
    assert sorted(p.name for p in export.iterdir()) == before


def test_default_lengths_beyond_the_model_are_skipped_with_a_note(runner: CliRunner, onnx_dirs: dict) -> None:
    args = ["bench", str(onnx_dirs["fp32"]), "--name", "fp32", "--warmup", "0", "--runs", "1", "--no-rss", "--no-peak"]
    note = "default seq_lens 256 skipped: beyond the 128 positions of fp32"
    result = runner.invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert sorted(r["seq_len"] for r in doc["rows"]) == [16, 64, 128] and note in doc["notes"]
    assert doc["config"]["seq_lens"] is None  # the config records what was asked for
    table = runner.invoke(cli, args)
    assert table.exit_code == 0 and f"note: {note}" in table.output
    given = runner.invoke(cli, [*args, "--seq-lens", "64,256"])
    assert "seq_lens: 256 exceeds the 128 positions of fp32" in _assert_one_line_error(given)


@pytest.mark.parametrize("error", ["memory", "onnxruntime"])
def test_a_cell_the_runtime_cannot_run_is_one_line_error(
    runner: CliRunner, onnx_dirs: dict, monkeypatch: pytest.MonkeyPatch, error: str
) -> None:
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    from edgesent.bench.runners import OrtRunner

    arena = (
        "[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running MatMul node. Name:'m' "
        "Status Message: /onnxruntime_src/onnxruntime/core/framework/bfc_arena.cc:360 void* "
        "onnxruntime::BFCArena::AllocateRawInternal(size_t, bool, onnxruntime::Stream*) Failed to allocate memory "
        "for requested buffer of size 26214400000"
    )

    def fail(self: OrtRunner, prepared: object) -> None:
        raise MemoryError if error == "memory" else Fail(arena)

    monkeypatch.setattr(OrtRunner, "run", fail)
    args = _bench_args(
        onnx_dirs["int8"], names=("int8",), extra=("--seq-lens", "8", "--batch-sizes", "4", "--no-peak")
    )
    line = _assert_one_line_error(runner.invoke(cli, args))
    assert line.startswith("Error: int8 (session) failed to run the cell cpu, threads=1, batch=4, seq_len=8: ")
    reason = (
        "MemoryError" if error == "memory" else "Failed to allocate memory for requested buffer of size 26214400000"
    )
    assert line.endswith(f": {reason}; try smaller --batch-sizes or --seq-lens")


def test_report_dir_may_not_replace_an_input(runner: CliRunner, onnx_dirs: dict, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from edgesent.bench.report import check_report_dir

    model = tmp_path / "int8"
    shutil.copytree(onnx_dirs["int8"], model)
    with pytest.raises(ConfigError, match="this command's input"):
        check_report_dir(BenchConfig(model_dirs=(model,), report_dir=model, overwrite=True))


def test_config_writes_the_same_json_as_before() -> None:
    cfg = BenchConfig(model_dirs=(Path("a"),), seq_lens=(16,), report_dir=Path("out"), time_budget_s=2.0)
    assert cfg.to_dict() == {
        "model_dirs": ["a"],
        "names": [],
        "reference": None,
        "batch_sizes": None,
        "seq_lens": [16],
        "threads": None,
        "providers": None,
        "warmup": 10,
        "runs": None,
        "time_budget_s": 2.0,
        "data_path": None,
        "text_column": "text",
        "gate_path": None,
        "baseline_path": None,
        "tolerance": 0.1,
        "report_dir": "out",
        "overwrite": False,
        "measure_rss": True,
        "measure_peak": True,
        "seed": 0,
    }


def test_auto_provider_resolves_against_the_machine_facts() -> None:
    cfg = BenchConfig(model_dirs=(Path("m"),), providers=("auto",), seq_lens=(8,))
    assert {c.provider for c in plan_cells(cfg, [], {"devices": ["cpu"]})} == {"cpu"}
    assert {c.provider for c in plan_cells(cfg, [], {"devices": ["cpu", "cuda"]})} == {"cpu", "cuda"}


# ------------------------------------------------------------------------------------ sessions and units


def test_real_text_cells_run_with_the_synthetic_cells_session_settings(onnx_dirs: dict) -> None:
    """Predictor sessions in --data cells are benchmark sessions: same threads, same (no) spinning."""
    from edgesent.bench.config import SOURCE_DATA, SOURCE_SYNTHETIC
    from edgesent.bench.runners import OrtRunner, RunnerPool, load_variant

    pool = RunnerPool([load_variant(onnx_dirs["int8"], "int8")])

    def options(source: str) -> tuple:
        (session_unit,) = [u for _, mode, u in pool.units("cpu", 2, source) if mode == "session"]
        assert isinstance(session_unit, OrtRunner)
        o = session_unit.session.get_session_options()
        spinning = o.get_session_config_entry("session.intra_op.allow_spinning")
        return (o.intra_op_num_threads, o.inter_op_num_threads, o.graph_optimization_level, o.execution_mode, spinning)

    synthetic, data = options(SOURCE_SYNTHETIC), options(SOURCE_DATA)
    assert synthetic == data
    assert synthetic[:2] == (2, 1) and synthetic[-1] == "0"


def test_torch_e2e_run_returns_none() -> None:
    torch = pytest.importorskip("torch")
    from edgesent.bench.runners import TorchE2E

    class Model:
        labels = ("negative", "positive")

        def tensors(self, texts: list[str]) -> list[str]:
            return texts

        def forward(self, tensors: list[str]):
            return torch.tensor([[0.1, 0.9]] * len(tensors))

    assert TorchE2E(Model()).run(["a", "b"]) is None


def test_gates_import_without_onnxruntime_or_numpy() -> None:
    code = (
        "import sys; import edgesent.bench.gates, edgesent.bench.config, edgesent.bench; "
        "heavy = sorted(m for m in ('onnxruntime', 'numpy', 'torch') if m in sys.modules); assert not heavy, heavy"
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_a_roberta_allows_two_positions_fewer_than_it_has() -> None:
    """RoBERTa numbers positions from pad_token_id + 1: bench's limit is the one finetune and export use."""
    from edgesent.flops import position_limit

    assert position_limit({"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 1}) == 512
    assert position_limit({"model_type": "bert", "max_position_embeddings": 512}) == 512
    assert position_limit({"model_type": "bert"}) is None
