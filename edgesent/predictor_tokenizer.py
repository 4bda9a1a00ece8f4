"""The predictor's tokenizer: ``tokenizer.json`` set up as Transformers' ``AutoTokenizer`` would be, without it.

Light (json and ``tokenizers`` only), like the rest of the runtime path. The Predictor loads its tokenizer here,
and so does export's ``--runtime auto`` timing, which builds Predictors on candidate models.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from edgesent.artifacts import TOKENIZER_FILE_NAME
from edgesent.errors import ModelError


logger = logging.getLogger(__name__)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelError(f"{path}: unreadable JSON ({err})") from err
    return data if isinstance(data, dict) else {}


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json stores it: a string or an AddedToken dict."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def load_predictor_tokenizer(model_dir: Path, max_length: int) -> tuple[Tokenizer, int, bool]:
    """The fast tokenizer set up like ``AutoTokenizer(..., truncation=True, max_length=max_length, padding=True)``.

    Transformers takes the pad token and padding/truncation sides from tokenizer_config.json and overrides
    whatever padding tokenizer.json stores (sentence-transformers models ship fixed 128-token padding), so
    this does the same: truncation set once here, padding per batch in :meth:`Predictor._pad`.

    Returns:
        (tokenizer, pad_id, pad_right)
    """
    path = model_dir / TOKENIZER_FILE_NAME
    if not path.is_file():
        raise ModelError(f"{path}: missing; the predictor needs the fast tokenizer file (re-export the model)")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as err:  # tokenizers raises a bare Exception for a malformed file
        raise ModelError(f"{path}: unreadable tokenizer ({err})") from err
    settings = _read_json(model_dir / "tokenizer_config.json")
    special = _read_json(model_dir / "special_tokens_map.json")
    stored = tokenizer.padding or {}
    pad_token = (
        _token_text(settings.get("pad_token")) or _token_text(special.get("pad_token")) or stored.get("pad_token")
    )
    pad_id = tokenizer.token_to_id(pad_token) if pad_token else None
    if pad_id is None:
        pad_id = int(stored.get("pad_id", 0))
        logger.debug("%s: no pad token found; padding with id %d (masked out either way)", model_dir, pad_id)
    truncation_side = settings.get("truncation_side", "right")
    if truncation_side not in ("left", "right"):
        raise ModelError(f"{model_dir}: tokenizer_config.json truncation_side={truncation_side!r} is not left/right")
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length, direction=truncation_side)
    return tokenizer, pad_id, settings.get("padding_side", "right") != "left"
