"""Analytic FLOPs of BERT-family classifiers, and the tokens their positions allow, from the config alone.

One count serves the stage that shrinks models (``prune`` records FLOPs before and after, and searches
for a ``--speedup`` target) and the stage that times them (``bench`` reports achieved GOP/s), so a
pruned model's FLOPs ratio and its measured speed-up are computed on the same terms. It reads only
config fields, so it needs the stdlib alone: ``bench`` stays free of torch, and the count of a pruned
directory comes from the same fields Hugging Face rebuilds the model from.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgesent.errors import ConfigError


# Models that number positions from padding_idx + 1, so that many of their positions never hold a token.
_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text")


def _field(hf_config: Any, name: str) -> Any:
    """A config field from a Hugging Face config object or its ``config.json`` dict."""
    return hf_config.get(name) if isinstance(hf_config, Mapping) else getattr(hf_config, name, None)


def position_limit(hf_config: Any) -> int | None:
    """The most tokens per text the model's position embeddings allow (None: unknown or unlimited)."""
    positions = _field(hf_config, "max_position_embeddings")
    if not isinstance(positions, int) or isinstance(positions, bool) or positions <= 0:
        return None
    if _field(hf_config, "model_type") in _OFFSET_POSITIONS:
        positions -= (_field(hf_config, "pad_token_id") or 0) + 1
    return positions


def check_position_limit(max_length: int, hf_config: Any, model: str) -> None:
    """ConfigError when ``max_length`` exceeds the model's positions: the first longer text would crash the run
    with a tensor size mismatch. ``model`` names the model in the message. Shared by finetune, prune, export,
    parity and bench."""
    limit = position_limit(hf_config)
    if limit is not None and max_length > limit:
        raise ConfigError(
            f"max_length {max_length} exceeds the {limit} positions of {model}; pass --max-length {limit} or less"
        )


def layer_flops(hidden: int, attention_width: int, intermediate: int, batch_size: int, seq_len: int) -> int:
    """FLOPs (2 per multiply-add) of one encoder layer on ``batch_size`` sequences of ``seq_len`` tokens.

    Args:
        hidden: H, the model width.
        attention_width: A = heads the layer has * head size (smaller than H once heads are pruned).
        intermediate: I, the FFN width.
        batch_size: B.
        seq_len: S.
    """
    tokens = batch_size * seq_len  # T
    projections = 4 * 2 * tokens * hidden * attention_width  # Q, K, V: (T, H) @ (H, A); output: (T, A) @ (A, H)
    ffn = 2 * 2 * tokens * hidden * intermediate  # up (T, H) @ (H, I) and down (T, I) @ (I, H)
    return projections + attention_flops(attention_width, batch_size, seq_len) + ffn


def attention_flops(attention_width: int, batch_size: int, seq_len: int) -> int:
    """FLOPs of one layer's two products of activations, Q K^T and softmax(.) V ((B, S, S) per head).

    Counted apart because they have no weight: dynamic int8 quantizes only products with a constant
    operand, so these stay in fp32 and are held against the fp32 peak, not the int8 one (``flops_by_kind``).
    """
    return 2 * 2 * batch_size * seq_len * seq_len * attention_width


def count_flops(hf_config: dict[str, Any], batch_size: int, seq_len: int) -> int | None:
    """Analytic FLOPs (2 per multiply-add) of one forward pass of a BERT-family classifier.

    Counts the matrix products, which are >95% of the work: every encoder layer (``layer_flops``), the
    per-token embedding projection of models whose ``embedding_size`` differs from the width (ELECTRA),
    and the pooler (or pre-classifier) and classifier once per sequence. Embedding lookups, softmax,
    LayerNorm and activations are left out: they are small next to the matmuls and do not change with
    head or neuron counts. Pruned models (``edgesent prune``) are described by the same fields Hugging
    Face reloads them from: fewer ``num_hidden_layers``, a smaller ``intermediate_size`` and
    ``pruned_heads`` (layer -> removed heads), which narrows that layer's attention.

    Args:
        hf_config: config.json as a dict (BERT names, or DistilBERT's dim/n_layers/n_heads/hidden_dim).
        batch_size: B.
        seq_len: S.

    Returns:
        FLOPs, or None when the config lacks the sizes (not a BERT-family encoder).
    """
    split = flops_by_kind(hf_config, batch_size, seq_len)
    return None if split is None else sum(split.values())


def flops_by_kind(hf_config: dict[str, Any], batch_size: int, seq_len: int) -> dict[str, int] | None:
    """``count_flops`` split in two: ``"weights"`` (products with a weight matrix) and ``"attention"``
    (``attention_flops``).

    The split is what a ceiling on an int8 model's speed needs: the first kind runs as int8 GEMMs, the
    second stays in fp32 (``bench/profile_int8.py``).

    Returns:
        The two counts, or None when the config lacks the sizes (not a BERT-family encoder).
    """
    hidden = hf_config.get("hidden_size", hf_config.get("dim"))
    layers = hf_config.get("num_hidden_layers", hf_config.get("n_layers"))
    heads = hf_config.get("num_attention_heads", hf_config.get("n_heads"))
    intermediate = hf_config.get("intermediate_size", hf_config.get("hidden_dim"))
    if not all(isinstance(v, int) and v > 0 for v in (hidden, layers, heads, intermediate)):
        return None
    head_dim = hidden // heads
    pruned_heads = {int(k): v for k, v in (hf_config.get("pruned_heads") or {}).items()}  # JSON keys are strings
    num_labels = len(hf_config.get("id2label") or {}) or 2
    widths = [(heads - len(pruned_heads.get(layer, ()))) * head_dim for layer in range(layers)]
    total = sum(layer_flops(hidden, width, intermediate, batch_size, seq_len) for width in widths)
    embedding = hf_config.get("embedding_size")
    if isinstance(embedding, int) and embedding != hidden:
        total += 2 * batch_size * seq_len * embedding * hidden  # (T, E) @ (E, H) into the encoder's width
    total += 2 * batch_size * hidden * (hidden + num_labels)  # pooler / pre-classifier, classifier
    attention = sum(attention_flops(width, batch_size, seq_len) for width in widths)
    return {"weights": total - attention, "attention": attention}
