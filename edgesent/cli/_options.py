"""Options shared by several commands, declared once (pip-tools' scripts/options.py pattern)."""

from __future__ import annotations

import click


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
no_verify_option = click.option(
    "--no-verify",
    is_flag=True,
    help="Skip the sha256 check of the model's files and manifest (only for a model you changed on purpose).",
)
