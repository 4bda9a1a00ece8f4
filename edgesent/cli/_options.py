"""Options shared by several commands, declared once (pip-tools' scripts/options.py pattern), and the helpers
that turn a command's options into a config: only the options the user gave are passed on, so every default
lives in the config (``--help`` shows it, read from the config's field defaults)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import click
from click.core import ParameterSource

from edgesent.config import field_default


max_length_option = click.option(
    "--max-length",
    type=click.IntRange(min=8),
    default=None,
    help="Maximum tokens per text; longer texts are truncated. Default: the model's own setting.",
)
overwrite_option = click.option("--overwrite", is_flag=True, help="Replace the output directory if it exists.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
text_column_option = click.option(
    "--text-column",
    default="text",
    show_default=True,
    help="Column holding the text (falls back to 'sentence' when 'text' is absent).",
)
label_column_option = click.option(
    "--label-column", default="label", show_default=True, help="Column holding the label."
)
drop_label_option = click.option(
    "--drop-label",
    "drop_labels",
    multiple=True,
    help="Span data: leave out spans with this label, e.g. conflict (repeatable).",
)
no_verify_option = click.option(
    "--no-verify",
    is_flag=True,
    help="Skip the sha256 check of the model's files and manifest (only for a model you changed on purpose).",
)


def given_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The options the user set (on the command line or in the environment), by parameter name.

    Options left out are not passed at all, so the config's own defaults apply; a flag pair such as
    ``--recovery/--no-recovery`` passes False when the user chose ``--no-...``.
    """
    ctx = click.get_current_context()
    return {
        name: value
        for name, value in options.items()
        if ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT)
    }


def nest(options: dict[str, Any], section: str, names: Mapping[str, str] | Iterable[str]) -> dict[str, Any]:
    """Move ``names`` (option name -> field name, or the same names) from ``options`` into ``options[section]``.

    Nothing is added when none of them was given, so the nested config keeps its defaults.
    """
    renames = dict(names) if isinstance(names, Mapping) else {name: name for name in names}
    moved = {field: options.pop(option) for option, field in renames.items() if option in options}
    if moved:
        options[section] = moved
    return options


def with_default(text: str, config: type, name: str) -> str:
    """``text`` followed by the config field's default, as ``show_default`` would print it."""
    value = field_default(config, name)
    shown = "on" if value is True else "off" if value is False else value
    return f"{text}  [default: {shown}]".strip()
