"""Plain-text tables for the terminal (JSON output is the machine-readable twin)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned first column, right-aligned numbers; floats to 4 decimals."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths)))

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def format_metrics(report: dict[str, Any]) -> str:
    """Accuracy/macro-F1 line, per-class table and confusion matrix of a classification report."""
    labels = report["labels"]
    per_class = format_table(
        ["class", "precision", "recall", "f1", "support"],
        [[c, m["precision"], m["recall"], m["f1"], m["support"]] for c, m in report["per_class"].items()],
    )
    confusion = format_table(
        ["true \\ pred", *labels], [[lab, *row] for lab, row in zip(labels, report["confusion_matrix"])]
    )
    head = f"n={report['n']}  accuracy={report['accuracy']:.4f}  macro_f1={report['macro_f1']:.4f}"
    return f"{head}\n\n{per_class}\n\n{confusion}"
