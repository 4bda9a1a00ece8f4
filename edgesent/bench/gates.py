"""Latency checks on result rows: gate files (``GateRule``), and the comparison against a saved baseline.

Light: the stdlib only (no numpy, no onnxruntime), so a CI job can parse and evaluate gates, or compare a
saved result with a baseline, on any machine; ``import edgesent.bench.gates`` never imports onnxruntime
(a subprocess test holds it to that). Every malformed gate file or baseline is a one-line ``ConfigError``
or ``DataError`` naming the file, the rule or row, and the bad value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgesent.bench.config import DEVICES, MODE_E2E, MODE_SESSION, ROW_KEY, SOURCE_DATA, Cell
from edgesent.errors import ConfigError, DataError, MissingDependencyError


SCHEMA = "edgesent.bench/1"
GATE_KINDS = ("speedup", "p99_over_p50", "e2e_over_session", "absolute_ms")
_RULE_KEYS = {
    "name",
    "kind",
    "variant",
    "reference",
    "provider",
    "threads",
    "batch_size",
    "seq_len",
    "min",
    "max",
    "stat",
    "hardware",
}
_STATS = ("p50", "p90", "p99")
_NEEDS = {
    "speedup": ("reference", "min"),
    "p99_over_p50": ("max",),
    "e2e_over_session": ("max",),
    "absolute_ms": ("max", "hardware"),
}


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``; infinite rather than ZeroDivisionError for a zero denominator."""
    if denominator == 0:
        return math.inf if numerator > 0 else math.nan
    return numerator / denominator


@dataclass(frozen=True)
class GateRule:
    """One rule of a gate file; see bench/README.md for the format.

    Kinds: ``speedup`` (p50 of ``reference`` / p50 of ``variant``, needs ``min``), ``p99_over_p50``
    (needs ``max``), ``e2e_over_session`` (predictor end to end / bare session on the same real
    texts, needs ``max`` and ``--data``) and ``absolute_ms`` (``stat`` in ms, needs ``max`` and
    ``hardware``: a GPU model name; skipped on any other machine).
    """

    name: str
    kind: str
    variant: str
    reference: str | None = None
    provider: str = "cpu"
    threads: int = 1
    batch_size: int = 1
    seq_len: int | None = None
    min: float | None = None
    max: float | None = None
    stat: str = "p50"
    hardware: str | None = None

    @property
    def cell(self) -> Cell:
        """The cell the rule reads (a real-text cell for ``e2e_over_session``)."""
        if self.kind == "e2e_over_session":
            return Cell(self.provider, self.threads, self.batch_size, None, SOURCE_DATA)
        return Cell(self.provider, self.threads, self.batch_size, self.seq_len)

    def applies_to(self, machine: Mapping[str, Any]) -> bool:
        """Absolute budgets hold only on the named hardware; ratio rules hold everywhere."""
        if self.hardware is None:
            return True
        return any(self.hardware.lower() in gpu.lower() for gpu in machine.get("gpus", []))

    def bound_text(self) -> str:
        """``>= 2.5x``, ``<= 1.15x`` or ``<= 2 ms``, as messages show the bound."""
        unit = " ms" if self.kind == "absolute_ms" else "x"
        parts = [
            f">= {self.min:g}{unit}" if self.min is not None else "",
            f"<= {self.max:g}{unit}" if self.max is not None else "",
        ]
        return " and ".join(p for p in parts if p)

    def measure(self, rows: Sequence[Mapping[str, Any]]) -> float:
        """The rule's figure from result rows; KeyError naming the row that is missing."""
        cell = self.cell
        if self.kind == "speedup":
            return ratio(find_row(rows, self.reference, cell)["p50_ms"], find_row(rows, self.variant, cell)["p50_ms"])
        if self.kind == "p99_over_p50":
            row = find_row(rows, self.variant, cell)
            return ratio(row["p99_ms"], row["p50_ms"])
        if self.kind == "e2e_over_session":
            e2e = find_row(rows, self.variant, cell, MODE_E2E)["p50_ms"]
            return ratio(e2e, find_row(rows, self.variant, cell, MODE_SESSION)["p50_ms"])
        return float(find_row(rows, self.variant, cell)[f"{self.stat}_ms"])

    def evaluate(self, rows: Sequence[Mapping[str, Any]], machine: Mapping[str, Any]) -> dict[str, Any]:
        """Outcome dict: name, kind, variant, cell, status (pass|fail|skip), measured, bound, message."""
        outcome: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "variant": self.variant,
            "cell": self.cell.describe(),
            "status": "pass",
            "measured": None,
            "bound": self.bound_text(),
        }
        if not self.applies_to(machine):
            gpus = ", ".join(machine.get("gpus", [])) or "no GPU"
            return {
                **outcome,
                "status": "skip",
                "message": f"needs hardware {self.hardware!r}; this machine has {gpus}",
            }
        try:
            measured = self.measure(rows)
        except KeyError as err:
            return {**outcome, "status": "fail", "message": f"not measured: {err.args[0]}"}
        failed = (
            math.isnan(measured)
            or (self.min is not None and measured < self.min)
            or (self.max is not None and measured > self.max)
        )
        what = {
            "speedup": f"speedup of {self.variant} over {self.reference}",
            "p99_over_p50": f"p99/p50 of {self.variant}",
            "e2e_over_session": f"end-to-end/session of {self.variant}",
            "absolute_ms": f"{self.stat} of {self.variant}",
        }[self.kind]
        figure = f"{measured:.2f} ms" if self.kind == "absolute_ms" else f"{measured:.2f}x"
        message = f"{what} = {figure}, bound {self.bound_text()} [{self.cell.describe()}]"
        return {**outcome, "status": "fail" if failed else "pass", "measured": measured, "message": message}


def _rule_error(path: Path, index: int, problem: str) -> ConfigError:
    return ConfigError(f"{path}: rule {index}: {problem}")


def _check_rule(path: Path, index: int, merged: dict[str, Any]) -> None:
    """Every key of one merged rule, with the first problem as a one-line ConfigError."""
    unknown = sorted(set(merged) - _RULE_KEYS)
    if unknown:
        raise _rule_error(path, index, f"unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_RULE_KEYS))}")
    kind = merged.get("kind")
    if kind not in GATE_KINDS:
        raise _rule_error(path, index, f"kind {kind!r}; use one of {', '.join(GATE_KINDS)}")
    if not isinstance(merged.get("name", ""), str):
        raise _rule_error(path, index, f"name = {merged['name']!r}; need a string")
    if not isinstance(merged.get("variant"), str):
        raise _rule_error(path, index, 'needs variant = "<name given with --name>"')
    for key in ("reference", "hardware"):
        if merged.get(key) is not None and not isinstance(merged[key], str):
            raise _rule_error(path, index, f"{key} = {merged[key]!r}; need a string")
    for key in ("threads", "batch_size", "seq_len"):
        value = merged.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise _rule_error(path, index, f"{key} = {value!r}; need a positive integer")
    for key in ("min", "max"):
        value = merged.get(key)
        if value is not None and (
            not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0
        ):
            raise _rule_error(path, index, f"{key} = {value!r}; need a positive number")
    if merged.get("provider", "cpu") not in DEVICES:
        raise _rule_error(path, index, f"provider = {merged['provider']!r}; use cpu or cuda")
    if merged.get("stat", "p50") not in _STATS:
        raise _rule_error(path, index, f"stat = {merged['stat']!r}; use one of {', '.join(_STATS)}")
    needs = _NEEDS[kind] if kind == "e2e_over_session" else (*_NEEDS[kind], "seq_len")
    missing = [key for key in needs if merged.get(key) is None]
    if missing:
        hint = " (absolute budgets are only for named GPU hardware)" if "hardware" in missing else ""
        raise _rule_error(path, index, f"{kind} needs {', '.join(missing)}{hint}")
    if kind != "absolute_ms" and merged.get("hardware") is not None:
        raise _rule_error(path, index, "hardware only applies to absolute_ms rules")


def parse_gate_rules(data: Mapping[str, Any], path: Path) -> list[GateRule]:
    """Rules from a parsed gate file: ``[defaults]`` merged into every ``[[rule]]``, each validated.

    Args:
        data: the parsed TOML document.
        path: the file, for messages.

    Returns:
        The rules, in file order; a rule without a name gets one built from its kind, variant and cell.

    Raises:
        ConfigError: naming the file, the rule (1-based) and the bad key or value; also when ``defaults``
            is not a table or ``rule`` is not an array of tables.
    """
    unknown_top = sorted(set(data) - {"rule", "defaults"})
    if unknown_top:
        raise ConfigError(f"{path}: unknown top-level key(s) {', '.join(unknown_top)}; use [defaults] and [[rule]]")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise ConfigError(f"{path}: defaults = {defaults!r}; write it as a [defaults] table of rule keys")
    raw_rules = data.get("rule", [])
    if not isinstance(raw_rules, list) or not raw_rules:
        raise ConfigError(f"{path}: no [[rule]] tables; a gate file needs at least one rule")
    rules = []
    for index, raw in enumerate(raw_rules, start=1):
        if not isinstance(raw, dict):
            raise _rule_error(path, index, f"{raw!r} is not a table; write each rule as a [[rule]] table")
        merged = {**defaults, **raw}
        _check_rule(path, index, merged)
        merged.setdefault("name", _default_rule_name(merged))
        rules.append(GateRule(**{**merged, "min": _float(merged.get("min")), "max": _float(merged.get("max"))}))
    return rules


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _default_rule_name(rule: Mapping[str, Any]) -> str:
    against = f" vs {rule['reference']}" if rule.get("reference") else ""
    length = f" s{rule['seq_len']}" if rule.get("seq_len") else ""
    return (
        f"{rule['kind']} {rule['variant']}{against} b{rule.get('batch_size', 1)}{length} "
        f"t{rule.get('threads', 1)} {rule.get('provider', 'cpu')}"
    )


def load_gate_file(path: Path) -> list[GateRule]:
    """Parse a TOML gate file into rules.

    Args:
        path: the gate file.

    Returns:
        The validated rules (see ``parse_gate_rules``).

    Raises:
        ConfigError: missing file, invalid TOML, or an invalid rule (named by file and index).
        MissingDependencyError: Python 3.10 without tomli.
    """
    path = Path(path)
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError as err:
            raise MissingDependencyError("gate files need tomllib (Python 3.11+) or: pip install tomli") from err
    if not path.is_file():
        raise ConfigError(f"{path}: gate file not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid TOML ({err})") from err
    return parse_gate_rules(data, path)


def check_rule_names(rules: Sequence[GateRule], names: Sequence[str], gate_path: Path | None) -> None:
    """Fail before measuring when a rule names a variant this run does not have.

    Raises:
        ConfigError: naming the rule, the unknown variant and the run's variants.
    """
    for rule in rules:
        for role in filter(None, (rule.variant, rule.reference)):
            if role not in names:
                raise ConfigError(
                    f"{gate_path}: rule {rule.name!r} names variant {role!r}, but this run has "
                    f"{', '.join(names)}; map directories to names with --name"
                )


def row_key(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """The fields that identify a result row (``ROW_KEY``), as a tuple."""
    return tuple(row.get(k) for k in ROW_KEY)


def row_cell(row: Mapping[str, Any]) -> Cell:
    """The cell a result row was measured in."""
    return Cell(row["provider"], row["threads"], row["batch_size"], row["seq_len"], row["source"])


def find_row(
    rows: Sequence[Mapping[str, Any]], variant: str | None, cell: Cell, mode: str = MODE_SESSION
) -> Mapping[str, Any]:
    """The result row of ``variant`` in ``cell``; KeyError with a readable description if absent."""
    key = (variant, cell.provider, cell.threads, cell.batch_size, cell.seq_len, cell.source, mode)
    row = next((r for r in rows if row_key(r) == key), None)
    if row is None:
        raise KeyError(f"{variant} ({mode}) at {cell.describe()}")
    return row


def compare_to_baseline(
    rows: Sequence[Mapping[str, Any]], baseline_rows: Sequence[Mapping[str, Any]], tolerance: float
) -> list[dict[str, Any]]:
    """p50 of each row against the baseline row with the same key (variant, cell, mode).

    Args:
        rows: this run's rows.
        baseline_rows: the saved run's rows (checked by ``load_baseline``: positive, finite p50).
        tolerance: allowed relative slow-down (0.10 = 10%).

    Returns:
        One dict per matched row: the key fields, ``baseline_p50_ms``, ``p50_ms``, ``change``
        (relative, +0.12 = 12% slower) and ``status`` ("fail" beyond ``tolerance``, else "pass").
    """
    baseline = {row_key(row): row for row in baseline_rows}
    out = []
    for row in rows:
        base = baseline.get(row_key(row))
        if base is None:
            continue
        change = ratio(row["p50_ms"], base["p50_ms"]) - 1.0
        out.append(
            {
                **{k: row[k] for k in ROW_KEY},
                "baseline_p50_ms": base["p50_ms"],
                "p50_ms": row["p50_ms"],
                "change": change,
                "status": "fail" if change > tolerance else "pass",
            }
        )
    return out


def _positive_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def load_baseline(path: Path) -> dict[str, Any]:
    """Read a saved ``--json`` result to compare against.

    Args:
        path: the file written by ``edgesent bench --json``.

    Returns:
        The document; every row is a table with a positive, finite ``p50_ms``.

    Raises:
        DataError: unreadable, not a bench result, or a row whose p50 is not a positive number (the file
            was edited or written by something else), naming the row.
    """
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(
            f"{path}: cannot read baseline ({err}); pass a file written by 'edgesent bench --json'"
        ) from err
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or not isinstance(doc.get("rows"), list):
        raise DataError(
            f"{path}: not an edgesent bench result (schema {SCHEMA}); save one with 'edgesent bench --json'"
        )
    if not isinstance(doc.get("machine", {}), dict):
        raise DataError(f"{path}: 'machine' is not an object; save the baseline again with 'edgesent bench --json'")
    for index, row in enumerate(doc["rows"], start=1):
        if not isinstance(row, dict):
            raise DataError(
                f"{path}: row {index} is not an object; save the baseline again with 'edgesent bench --json'"
            )
        if not _positive_number(row.get("p50_ms")):
            raise DataError(
                f"{path}: row {index} ({row.get('variant')}) has p50_ms = {row.get('p50_ms')!r}; a baseline p50 "
                "must be a positive number of milliseconds; save the baseline again with 'edgesent bench --json'"
            )
    return doc
