"""Shared fixtures: a tiny random BERT (2 layers, hidden 32), a WordPiece tokenizer built offline, its ONNX exports.

Built once per session. The PyTorch model is copied per test, so every test can write to its own model directory;
the ONNX exports are shared read-only, and a test that changes files takes a copy (``short_onnx_copy``, or its own).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import random
import shutil
import socket
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner


LABELS = ["negative", "neutral", "positive"]
_WORDS = {
    "negative": ["terrible", "awful", "broken", "rude", "slow", "hate", "worst", "refund"],
    "neutral": ["okay", "average", "arrived", "tuesday", "ordinary", "fine", "standard", "plain"],
    "positive": ["great", "excellent", "love", "friendly", "fast", "best", "perfect", "happy"],
}
# Below the tokenizer's model_max_length (64): tests see truncation at the manifest's max_length, not the tokenizer's.
SHORT_MAX_LENGTH = 32
LONG_TEXT = " ".join(["the service was really great and the staff friendly"] * 20)
BENCH = Path(__file__).resolve().parents[1] / "bench"
_FILLER = ["the", "service", "was", "food", "phone", "hotel", "and", "really", "quite", "staff", "it", "is", "a"]


def _vocab() -> list[str]:
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-")
    words = sorted(({w for ws in _WORDS.values() for w in ws} | set(_FILLER)) - set(chars))
    return special + chars + [f"##{c}" for c in chars] + words


def make_texts(n_per_class: int, seed: int = 0) -> list[tuple[str, str]]:
    """Deterministic labelled sentences whose label is given away by a keyword."""
    rng = random.Random(seed)
    rows = []
    for label in LABELS:
        for _ in range(n_per_class):
            words = rng.sample(_FILLER, 4) + [rng.choice(_WORDS[label])]
            rng.shuffle(words)
            rows.append((" ".join(words), label))
    rng.shuffle(rows)
    return rows


def write_csv(path: Path, rows: list[tuple[str, str]], header: tuple[str, str] = ("text", "label")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def no_leftovers(parent: Path, name: str) -> bool:
    """``parent/name`` was not written, and no temporary sibling of it (``.name.tmp-*``) was left behind."""
    return not (parent / name).exists() and not [p for p in parent.iterdir() if p.name.startswith(f".{name}.")]


def load_bench_script(name: str):
    """``bench/<name>.py`` imported as a module (the bench scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    """A free TCP port on the loopback interface (servers and torchrun rendezvous in tests bind only there)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prune_args(model_dir: Path, data: tuple[Path, Path], out: Path, *options: str) -> list[str]:
    """The CLI arguments ``prune MODEL_DIR --data TRAIN --eval-data DEV --out OUT OPTIONS...``."""
    train, dev = data
    return ["prune", str(model_dir), "--data", str(train), "--eval-data", str(dev), "--out", str(out), *options]


def torchrun(nproc: int = 2) -> list[str]:
    """The command prefix of a local DDP launch through the real launcher, on a free loopback port."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "--master_port",
        str(free_port()),
    ]


def _tiny_bert(root: Path, outputs: list[str]) -> tuple[object, object]:
    """(tokenizer, BertConfig) of the tiny random BERT (2 layers, hidden 32, offline WordPiece vocab) with
    ``outputs`` as its id2label; torch is seeded, so the weights built from it are the same every session."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    vocab_path = root / "vocab.txt"
    vocab_path.write_text("\n".join(_vocab()) + "\n")
    tokenizer = transformers.BertTokenizerFast(vocab_file=str(vocab_path), do_lower_case=True, model_max_length=64)
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(_vocab()),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        id2label=dict(enumerate(outputs)),
        label2id={name: i for i, name in enumerate(outputs)},
    )
    return tokenizer, config


@pytest.fixture(scope="session")
def _tiny_model_master(tmp_path_factory) -> Path:
    transformers = pytest.importorskip("transformers")
    from edgesent.artifacts import KIND_PYTORCH, write_manifest

    root = tmp_path_factory.mktemp("tiny")
    tokenizer, config = _tiny_bert(root, LABELS)
    model = transformers.BertForSequenceClassification(config).eval()
    model_dir = root / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    write_manifest(model_dir, KIND_PYTORCH, {"labels": LABELS, "base_model": "tiny-random-bert", "max_length": 64})
    return model_dir


@pytest.fixture
def tiny_model_dir(_tiny_model_master: Path, tmp_path: Path) -> Path:
    """A fresh copy of the tiny PyTorch model directory (HF files + edgesent.json) for one test."""
    return Path(shutil.copytree(_tiny_model_master, tmp_path / "tiny-model"))


@pytest.fixture
def tiny_data(tmp_path: Path) -> tuple[Path, Path]:
    """(train.csv, eval.csv): 3 balanced classes, keyword-labelled."""
    train = write_csv(tmp_path / "train.csv", make_texts(20, seed=1))
    dev = write_csv(tmp_path / "eval.csv", make_texts(6, seed=2))
    return train, dev


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread() -> None:
    """Tiny models gain nothing from threads, and on a shared machine OpenMP's spinning makes 2 threads ~40x slower.

    Applies to every test; torch is imported only where installed, so torch-free tests still run without it.
    """
    if importlib.util.find_spec("torch") is not None:
        import torch

        torch.set_num_threads(1)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def _export(model_dir: Path, out: Path, **settings: object) -> Path:
    pytest.importorskip("optimum.exporters.onnx")
    from edgesent.export import ExportConfig, export_model

    export_model(model_dir, out, ExportConfig(**settings))
    return out


@pytest.fixture(scope="session")
def tiny_openvino_dir(_tiny_model_master: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny classifier exported with ``--int8 --runtime openvino`` (NNCF static int8). Read-only."""
    if any(importlib.util.find_spec(name) is None for name in ("openvino", "nncf")):
        pytest.skip("the openvino extra is not installed")
    return _export(
        _tiny_model_master, tmp_path_factory.mktemp("onnx") / "openvino", precision="int8", runtime="openvino"
    )


@pytest.fixture(scope="session")
def tiny_onnx_dir(_tiny_model_master: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model exported by ``export_model`` with the default ExportConfig (fp32, max_length 64). Read-only."""
    return _export(_tiny_model_master, tmp_path_factory.mktemp("onnx") / "fp32")


@pytest.fixture(scope="session")
def tiny_int8_dir(_tiny_model_master: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model exported to int8 with the fixed avx512_vnni preset (not this CPU's detection). Read-only."""
    from edgesent.quantize import QuantizeConfig

    return _export(
        _tiny_model_master,
        tmp_path_factory.mktemp("onnx") / "int8",
        precision="int8",
        quantize=QuantizeConfig.avx512_vnni(),
    )


@pytest.fixture(scope="session")
def short_onnx_dir(_tiny_model_master: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An fp32 export with max_length ``SHORT_MAX_LENGTH`` (for the predictor's truncation tests). Read-only."""
    return _export(_tiny_model_master, tmp_path_factory.mktemp("onnx") / "short", max_length=SHORT_MAX_LENGTH)


@pytest.fixture
def short_onnx_copy(short_onnx_dir: Path, tmp_path: Path) -> Path:
    """A copy of ``short_onnx_dir`` that one test may tamper with."""
    return Path(shutil.copytree(short_onnx_dir, tmp_path / "onnx"))


@pytest.fixture(scope="session")
def outlier_model_dir(_tiny_model_master: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny classifier with one channel of layer 0's attention LayerNorm 40x the others: the FFN's input
    gets the kind of outlier dimension real BERTs have (channel 3, 40x). Read-only."""
    import torch
    import transformers

    from edgesent.artifacts import KIND_PYTORCH, read_manifest, write_manifest

    model_dir = tmp_path_factory.mktemp("outlier") / "model"
    shutil.copytree(_tiny_model_master, model_dir)
    model = transformers.BertForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.no_grad():
        model.bert.encoder.layer[0].attention.output.LayerNorm.weight[3] = 40.0
    model.save_pretrained(model_dir)
    manifest = read_manifest(model_dir)
    write_manifest(model_dir, KIND_PYTORCH, {k: manifest[k] for k in ("labels", "base_model", "max_length")})
    return model_dir


# --- span models (task token-classification) ---------------------------------------------------------------------

SPAN_LABELS = ["negative", "positive"]


def make_span_rows(n: int, seed: int = 0) -> list[dict[str, object]]:
    """Deterministic span records: filler words with one or two keyword aspects, each labelled by its polarity."""
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    for _ in range(n):
        words = rng.sample(_FILLER, 4)
        keywords = [(rng.choice(_WORDS[label]), label) for label in rng.sample(SPAN_LABELS, rng.choice([1, 2]))]
        for word, label in keywords:
            words.insert(rng.randrange(len(words) + 1), f"\0{label}\0{word}")
        text, spans = "", []
        for word in words:
            text += " " if text else ""
            if word.startswith("\0"):
                _, label, word = word.split("\0")
                spans.append({"start": len(text), "end": len(text) + len(word), "label": label, "term": word})
            text += word
        rows.append({"text": text, "spans": spans})
    return rows


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def _tiny_span_model_master(tmp_path_factory) -> Path:
    """A tiny random BERT tagger (BIO tags of ``SPAN_LABELS``) with the tiny tokenizer and a span manifest."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from edgesent.artifacts import KIND_PYTORCH, TASK_SPANS, write_manifest
    from edgesent.tasks.spans import tag_names

    root = tmp_path_factory.mktemp("tiny-spans")
    tags = tag_names(SPAN_LABELS)
    tokenizer, config = _tiny_bert(root, tags)
    model = transformers.BertForTokenClassification(config).eval()
    with torch.no_grad():  # larger head weights: tags vary from word to word, so most texts get spans
        model.classifier.weight.normal_(0.0, 1.0)
    model_dir = root / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    write_manifest(
        model_dir,
        KIND_PYTORCH,
        {
            "task": TASK_SPANS,
            "labels": SPAN_LABELS,
            "tags": tags,
            "base_model": "tiny-random-bert",
            "max_length": 64,
        },
    )
    return model_dir


@pytest.fixture
def tiny_span_model_dir(_tiny_span_model_master: Path, tmp_path: Path) -> Path:
    """A fresh copy of the tiny span (token-classification) model directory for one test."""
    return Path(shutil.copytree(_tiny_span_model_master, tmp_path / "tiny-span-model"))


@pytest.fixture
def tiny_span_data(tmp_path: Path) -> tuple[Path, Path]:
    """(train.jsonl, eval.jsonl): keyword aspects labelled negative/positive by the keyword."""
    return (
        write_jsonl(tmp_path / "spans_train.jsonl", make_span_rows(60, seed=1)),
        write_jsonl(tmp_path / "spans_eval.jsonl", make_span_rows(16, seed=2)),
    )


@pytest.fixture(scope="session")
def tiny_span_onnx_dir(_tiny_span_model_master: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny span model exported by ``export_model`` with the default ExportConfig (fp32). Read-only."""
    return _export(_tiny_span_model_master, tmp_path_factory.mktemp("onnx") / "spans-fp32")
