"""The shared config machinery: number checks refuse NaN/inf and bools, from_dict refuses unknown keys."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from edgesent.config import ConfigBase, check_bool, check_choice, check_number, optional_path
from edgesent.errors import ConfigError


@dataclass
class _Inner(ConfigBase):
    rate: float = 0.5

    def __post_init__(self) -> None:
        check_number("rate", self.rate, low=0, high=1)


@dataclass
class _Outer(ConfigBase):
    path: Path | None = None
    sizes: tuple[int, ...] = (1, 2)
    inner: _Inner = field(default_factory=_Inner)

    def __post_init__(self) -> None:
        self.path = optional_path(self.path)
        if isinstance(self.inner, dict):
            self.inner = _Inner.from_dict(self.inner)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, float("nan")])
def test_non_finite_numbers_are_refused(value: float) -> None:
    with pytest.raises(ConfigError, match="lr must be a finite number"):
        check_number("lr", value, low=0, low_open=True)


@pytest.mark.parametrize(
    ("value", "kwargs", "message"),
    [
        (0, {"low": 0, "low_open": True}, r"lr must be in \(0, inf\), got 0"),
        (-1, {"low": 0}, r"lr must be in \[0, inf\), got -1"),
        (1.0, {"low": 0, "high": 1, "high_open": True}, r"lr must be in \[0, 1\), got 1.0"),
        (True, {}, "lr must be a number, got True"),
        ("3", {}, "lr must be a number, got '3'"),
        (2.0, {"integer": True}, "lr must be an integer, got 2.0"),
    ],
)
def test_out_of_range_and_wrong_types_name_field_and_value(value: Any, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_number("lr", value, **kwargs)


def test_valid_numbers_pass() -> None:
    check_number("lr", 5e-5, low=0, low_open=True)
    check_number("batch_size", 1, low=1, integer=True)
    check_number("warmup", 0.0, low=0, high=1, high_open=True)


def test_choice_and_bool() -> None:
    check_choice("device", "cpu", ("auto", "cpu"))
    with pytest.raises(ConfigError, match="device='tpu' is not one of auto, cpu"):
        check_choice("device", "tpu", ("auto", "cpu"))
    check_bool("verify", False)
    with pytest.raises(ConfigError, match="verify must be True or False, got 1"):
        check_bool("verify", 1)


def test_to_dict_from_dict_round_trip_with_nested_config() -> None:
    cfg = _Outer(path="a/b", sizes=(4,), inner=_Inner(rate=0.25))
    plain = cfg.to_dict()
    assert plain == {"path": "a/b", "sizes": [4], "inner": {"rate": 0.25}}
    again = _Outer.from_dict(plain)
    assert again.path == Path("a/b") and again.inner == _Inner(rate=0.25)


def test_from_dict_refuses_unknown_keys_and_non_mappings() -> None:
    with pytest.raises(ConfigError, match=r"_Outer: unknown setting\(s\) 'colour'; known: path, sizes, inner"):
        _Outer.from_dict({"colour": "red"})
    with pytest.raises(ConfigError, match="expected a mapping"):
        _Outer.from_dict(["path"])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="rate must be in"):
        _Outer.from_dict({"inner": {"rate": 2}})


# --- the stage configs: light, validated, one to_dict/from_dict ---------------------------------------------


def test_config_modules_and_cli_help_do_not_import_heavy_libraries() -> None:
    import subprocess
    import sys

    code = """
import sys
import edgesent.config, edgesent.config.train, edgesent.config.prune, edgesent.config.export
import edgesent.config.parity, edgesent.config.quantize
from edgesent.config import ExportConfig, ParityConfig, PredictorConfig, PruneConfig, QuantizeConfig, TrainConfig
TrainConfig(); ExportConfig(); ParityConfig(); QuantizeConfig.avx2(); PredictorConfig(threads=1)
heavy = ("torch", "transformers", "onnxruntime", "onnx", "optimum")
print(sorted(m for m in heavy if m in sys.modules))
from click.testing import CliRunner
from edgesent.cli import cli
for command in ("finetune", "export", "parity", "prune"):
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0, result.output
print(sorted(m for m in heavy if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:2] == ["[]", "[]"], out


def test_stage_configs_round_trip_and_refuse_unknown_keys() -> None:
    from edgesent.config import ExportConfig, ParityConfig, PruneConfig, QuantizeConfig, TrainConfig

    configs = [
        TrainConfig(data="t.csv", lr=1e-3, class_weights="auto"),
        PruneConfig(model_dir="m", data="t.csv", eval_data="e.csv", out="o", heads=0.5, recovery={"epochs": 1.0}),
        PruneConfig(model_dir="m", data="t.csv", eval_data="e.csv", out="o", layers=1, recovery=None),
        ExportConfig(precision="int8", quantize="avx2", parity={"min_agreement": 0.9}),
        ParityConfig(data="x.csv", max_abs_diff=0.5),
        QuantizeConfig.arm64(),
    ]
    for cfg in configs:
        assert type(cfg).from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
        with pytest.raises(ConfigError, match=r"unknown setting\(s\) 'colour'"):
            type(cfg).from_dict({**cfg.to_dict(), "colour": "red"})


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"lr": math.nan}, "lr must be a finite number, got nan"),
        ({"lr": math.inf}, "lr must be a finite number, got inf"),
        ({"weight_decay": math.nan}, "weight_decay must be a finite number, got nan"),
        ({"epochs": math.inf}, "epochs must be a finite number, got inf"),
        ({"warmup_ratio": math.nan}, "warmup_ratio must be a finite number, got nan"),
        ({"seed": -1}, r"seed must be in \[0, 4.29497e\+09\], got -1"),
        ({"batch_size": True}, "batch_size must be an integer, got True"),
        ({"max_steps": 2.5}, "max_steps must be an integer, got 2.5"),
        ({"eval_split": math.nan}, "eval_split must be a finite number"),
        ({"class_weights": "balanced"}, "class_weights='balanced' is not one of none, auto"),
        ({"device": "tpu"}, "device='tpu' is not one of auto, cpu, cuda"),
    ],
)
def test_train_config_refuses_non_finite_and_out_of_range_values(settings: dict, message: str) -> None:
    from edgesent.config import TrainConfig

    with pytest.raises(ConfigError, match=message):
        TrainConfig(**settings)


def test_prune_config_nests_the_recovery_train_config() -> None:
    from edgesent.config import PruneConfig, TrainConfig

    paths = {"model_dir": "m", "data": "t.csv", "eval_data": "e.csv", "out": "o"}
    cfg = PruneConfig(**paths, heads=0.5, batch_size=8, seed=3, recovery={"epochs": 1.0, "lr": 1e-3})
    assert isinstance(cfg.recovery, TrainConfig) and cfg.recovery.epochs == 1.0
    merged = cfg.train_config(64)
    assert (merged.batch_size, merged.seed, merged.max_length, merged.lr) == (8, 3, 64, 1e-3)
    assert merged.data == Path("t.csv") and merged.eval_data == Path("e.csv")
    with pytest.raises(ConfigError, match=r"recovery.seed: set on the prune config itself"):
        PruneConfig(**paths, heads=0.5, recovery={"seed": 7})
    with pytest.raises(ConfigError, match="lr must be a finite number, got nan"):
        PruneConfig(**paths, heads=0.5, recovery={"lr": math.nan})
    with pytest.raises(ConfigError, match="temperature must be a finite number"):
        PruneConfig(**paths, heads=0.5, temperature=math.inf)
    with pytest.raises(ConfigError, match="heads must be a finite number, got nan"):
        PruneConfig(**paths, heads=math.nan)


def test_export_config_nests_quantize_presets_and_parity() -> None:
    from edgesent.config import ExportConfig, QuantizeConfig

    assert ExportConfig(precision="int8", quantize="avx2").quantize == QuantizeConfig.avx2()
    tuned = ExportConfig(precision="int8", quantize={"target": "arm64", "per_channel": True}).quantize
    assert tuned == QuantizeConfig(target="arm64", per_channel=True, reduce_range=False)
    with pytest.raises(ConfigError, match="target, static: only used by int8 exports; add --int8"):
        ExportConfig(quantize={"target": "avx2", "static": True})
    with pytest.raises(ConfigError, match="opset must be in"):
        ExportConfig(opset=9)
    with pytest.raises(ConfigError, match="min_agreement must be a finite number, got nan"):
        ExportConfig(parity={"min_agreement": math.nan})
    with pytest.raises(ConfigError, match="unknown setting"):
        QuantizeConfig.for_target("avx2", per_chanel=True)
