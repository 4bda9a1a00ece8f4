"""``edgesent serve``: exported models as an HTTP service (needs the ``serve`` extra)."""

from __future__ import annotations

from pathlib import Path

import click

from edgesent.config.providers import PROVIDERS


@click.command()
@click.argument("model_dirs", nargs=-1, required=True, metavar="MODEL_DIR...")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (0.0.0.0: all).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="TCP port.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Server processes.")
@click.option("--provider", type=click.Choice(PROVIDERS), default="auto", show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="ONNX Runtime threads per model.")
@click.option("--max-batch", type=click.IntRange(min=1), default=64, show_default=True, help="Texts per model call.")
@click.option("--max-wait-ms", type=click.FloatRange(0, 10_000), default=5.0, show_default=True, help="Batch wait.")
@click.option("--no-batching", is_flag=True, help="One model call per request (no merging of requests).")
@click.option(
    "--max-queue", type=click.IntRange(min=1), default=2048, show_default=True, help="Waiting texts; then 429."
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(0, min_open=True),
    default=30.0,
    show_default=True,
    help="Seconds before a request gets 503.",
)
@click.option("--max-body-bytes", type=click.IntRange(min=64), default=1 << 20, show_default=True)
@click.option("--max-texts", type=click.IntRange(min=1), default=256, show_default=True, help="Texts per request.")
@click.option(
    "--max-chars", type=click.IntRange(min=1), default=20_000, show_default=True, help="Characters per text."
)
@click.option(
    "--api-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Keys, one per line (else EDGESENT_API_KEYS, comma-separated); then 'Authorization: Bearer KEY'.",
)
@click.option("--log-texts", is_flag=True, help="Put request texts in the access log (default: counts only).")
@click.option("--no-verify", is_flag=True, help="Skip the sha256 check of the model files.")
def serve(model_dirs: tuple[str, ...], no_batching: bool, no_verify: bool, **options: object) -> None:
    """Serve exported models (MODEL_DIR, or NAME=MODEL_DIR) over HTTP until SIGTERM or Ctrl-C.

    POST /v1/models/NAME/predict {"texts": [...], "top_k": k}; GET /v1/models, /healthz, /readyz, /metrics,
    /openapi.json. One JSON access-log line per request on stderr.
    """
    from edgesent.serve import ServeConfig, require_serve_extra

    require_serve_extra("edgesent serve")
    cfg = ServeConfig.from_dict({**options, "batching": not no_batching, "verify": not no_verify})
    from edgesent.serve import serve_models

    serve_models(list(model_dirs), cfg)
    click.echo("server stopped", err=True)
