"""The shared config machinery: number checks refuse NaN/inf and bools, from_dict refuses unknown keys."""

from __future__ import annotations

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
