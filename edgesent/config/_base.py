"""The shared machinery of every stage's config: validation helpers and one ``to_dict``/``from_dict``.

Stdlib only, so the CLI, the runtime and the server can build and check a config without importing torch
or onnxruntime. Every stage config is a dataclass that inherits :class:`ConfigBase` and validates itself in
``__post_init__`` with the ``check_*`` helpers below, so a bad value fails with a ``ConfigError`` naming the
field and the value before any work starts. NaN and infinity are refused everywhere: ``nan > 0`` is False
but ``not nan <= 0`` is True, and a comparison-only check lets one through into a model's weights.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgesent.errors import ConfigError


if TYPE_CHECKING:
    from typing_extensions import Self


def check_number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
) -> None:
    """Raise ConfigError unless ``value`` is a finite number (an int with ``integer``) inside the bounds.

    Args:
        name: the field name, for the message.
        value: the value to check.
        low: smallest allowed value (None: unbounded); excluded too when ``low_open``.
        high: largest allowed value (None: unbounded); excluded too when ``high_open``.
        integer: require an ``int`` (bools are refused: ``True`` is not a batch size).
    """
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise ConfigError(f"{name} must be {kind}, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left = "(" if low_open or low is None else "["
        right = ")" if high_open or high is None else "]"
        span = f"{left}{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}{right}"
        raise ConfigError(f"{name} must be in {span}, got {value!r}")


def check_optional_number(name: str, value: Any, **bounds: Any) -> None:
    """``check_number`` for a field where None means "not set" (the default of another setting applies)."""
    if value is not None:
        check_number(name, value, **bounds)


def check_text(name: str, value: Any) -> None:
    """Raise ConfigError unless ``value`` is a non-empty string (a column name, a base model id)."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{name} must be a non-empty string, got {value!r}")


def check_texts(name: str, value: Any) -> tuple[str, ...]:
    """``value`` (a list or tuple of non-empty strings, e.g. span labels to drop) as a tuple without repeats."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ConfigError(f"{name} must be a list of span labels, got {value!r}")
    for item in value:
        check_text(name, item)
    return tuple(dict.fromkeys(value))


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    """Raise ConfigError unless ``value`` is one of ``choices``."""
    options = list(choices)
    if value not in options:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(map(str, options))}")


def check_bool(name: str, value: Any) -> None:
    """Raise ConfigError unless ``value`` is True or False."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False, got {value!r}")


def optional_path(value: str | Path | None) -> Path | None:
    """A ``Path`` for a path-like value, None for None: configs accept strings from JSON and the CLI."""
    return None if value is None else Path(value)


def field_default(cls: type, name: str) -> Any:
    """The default of dataclass field ``name`` of ``cls``: the CLI shows it in ``--help`` without repeating it."""
    assert dataclasses.is_dataclass(cls)
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            raise KeyError(f"{cls.__name__}.{name} has no default")
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def _plain(value: Any) -> Any:
    """A JSON-able copy: Paths as strings, tuples as lists, nested configs as dicts."""
    if isinstance(value, ConfigBase):
        return value.to_dict()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


class ConfigBase:
    """Mixin for the stage configs (dataclasses): one ``to_dict``/``from_dict`` for all of them.

    ``from_dict`` rejects unknown keys with the list of known ones, so a typo in a saved or hand-written
    config fails loudly instead of being dropped; a nested config field is rebuilt by the field's own
    ``__post_init__`` (it accepts a dict as well as the config).
    """

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON-able values (Paths as strings, nested configs as dicts)."""
        assert dataclasses.is_dataclass(self)
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Self:
        """Build the config from ``to_dict`` output (or any subset of its keys).

        Raises:
            ConfigError: ``values`` is not a mapping, holds a key the config does not have, or a bad value.
        """
        if not isinstance(values, Mapping):
            raise ConfigError(f"{cls.__name__}: expected a mapping of settings, got {type(values).__name__}")
        assert dataclasses.is_dataclass(cls)
        known = [f.name for f in dataclasses.fields(cls) if f.init]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(
                f"{cls.__name__}: unknown setting(s) {', '.join(map(repr, unknown))}; known: {', '.join(known)}"
            )
        return cls(**values)
