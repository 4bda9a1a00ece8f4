"""The predictor on a span model (task token-classification): character offsets of the original string on
Unicode text, agreement with the PyTorch model's decoded spans, batching, per-item errors, refusals and the
no-torch import guarantee."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import LONG_TEXT, SPAN_LABELS

from edgesent.errors import ConfigError, ModelError
from edgesent.runtime import Prediction, Predictor, _whole_word_offsets
from edgesent.tasks.spans import decode_spans


SPAN_KEYS = ["text", "start", "end", "label", "score"]
TEXTS = [
    "great 😀 service 👍🏽 was awful",
    "服务很好 the staff were rude",
    "Café naïve résumé, the hotel was perfect",
    "  leading and trailing spaces  ",
    "the phone is slow\tand\nbroken",
    "ÉCOLE crème brûlée 🇫🇷 and 👨‍👩‍👧 family",
    "unknownwordzzz qqq the food",
    "fast",
]


@pytest.fixture(scope="module")
def span_predictor(tiny_span_onnx_dir: Path) -> Predictor:
    return Predictor.load(tiny_span_onnx_dir, provider="cpu", threads=1)


def _torch_spans(torch_dir: Path, texts: list[str], max_length: int) -> list[list[dict]]:
    """The PyTorch model's spans: Transformers' fast tokenizer (offsets, word ids), forward, softmax, decode."""
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(torch_dir)
    model = AutoModelForTokenClassification.from_pretrained(torch_dir).eval()
    tags = [model.config.id2label[i] for i in range(model.config.num_labels)]
    batch = tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_offsets_mapping=True)
    offsets = batch.pop("offset_mapping")
    with torch.inference_mode():
        logits = model(**{k: torch.tensor(v) for k, v in batch.items()}).logits.softmax(-1).numpy()  # (B, T, K)
    return [
        [span.to_dict() for span in decode_spans(text, logits[i], offsets[i], batch.word_ids(i), tags)]
        for i, text in enumerate(texts)
    ]


def test_manifest_task_and_tags(span_predictor: Predictor) -> None:
    assert span_predictor.task == "token-classification"
    assert span_predictor.labels == SPAN_LABELS
    assert span_predictor.tags == ["O", "B-negative", "I-negative", "B-positive", "I-positive"]
    assert "token-classification" in repr(span_predictor)


def test_spans_are_character_offsets_of_the_original_text(span_predictor: Predictor) -> None:
    found = 0
    for text, pred in zip(TEXTS, span_predictor.predict(TEXTS, batch_size=3)):
        assert pred.label is None and pred.score is None and pred.scores == {}
        assert pred.spans is not None
        last_end = 0
        for span in pred.spans:
            assert list(span) == SPAN_KEYS
            assert isinstance(span["start"], int) and isinstance(span["end"], int)
            assert last_end <= span["start"] < span["end"] <= len(text)
            assert text[span["start"] : span["end"]] == span["text"]
            assert span["text"] == span["text"].strip()
            assert span["label"] in SPAN_LABELS
            assert 0.0 < span["score"] <= 1.0
            last_end = span["end"]
        found += len(pred.spans)
    assert found > len(TEXTS)  # the fixture's model tags most words: offsets are really exercised
    # emoji (surrogate pairs in UTF-16, several code points with a skin tone), CJK and accents are all covered
    covered = "".join(span["text"] for pred in span_predictor.predict(TEXTS) for span in pred.spans or [])
    assert any(ch in covered for ch in "😀👍服务好éïü")


def test_onnx_spans_equal_the_pytorch_models_decoded_spans(
    span_predictor: Predictor, _tiny_span_model_master: Path
) -> None:
    texts = [*TEXTS, LONG_TEXT]
    expected = _torch_spans(_tiny_span_model_master, texts, span_predictor.max_length)
    got = span_predictor.predict(texts, batch_size=4)
    for text, want, pred in zip(texts, expected, got):
        assert pred.spans is not None
        assert [(s["start"], s["end"], s["label"], s["text"]) for s in pred.spans] == [
            (s["start"], s["end"], s["label"], s["text"]) for s in want
        ], text
        np.testing.assert_allclose([s["score"] for s in pred.spans], [s["score"] for s in want], atol=1e-4)


def test_batching_and_order_do_not_change_spans(span_predictor: Predictor) -> None:
    one_by_one = [span_predictor.predict(text).spans for text in TEXTS]
    for batch_size in (1, 3, 64):
        batched = [p.spans for p in span_predictor.predict(TEXTS, batch_size=batch_size)]
        for a, b in zip(batched, one_by_one):
            assert [(s["start"], s["end"], s["label"]) for s in a] == [(s["start"], s["end"], s["label"]) for s in b]


def test_left_padding_reads_each_row_from_its_own_tokens(span_predictor: Predictor) -> None:
    p = span_predictor
    left = Predictor(
        p.session, p._tokenizer, p.labels, p.max_length, p._pad_id, False, p.model_dir, p.manifest, p.tags
    )
    texts = [TEXTS[2], "fast", "the staff"]  # the first is the longest: its row has no padding either way
    rows = left.predict(texts)
    assert rows[0].spans == p.predict(texts[0]).spans
    for text, row in zip(texts, rows):
        assert row.spans is not None
        assert all(text[s["start"] : s["end"]] == s["text"] for s in row.spans)


def test_to_dict_of_a_span_row() -> None:
    span = {"text": "battery", "start": 4, "end": 11, "label": "positive", "score": 0.9}
    row = Prediction(None, None, {}, truncated=True, unknown_tokens=1, spans=[span]).to_dict()
    assert row == {"spans": [span], "truncated": True, "unknown_tokens": 1}
    row["spans"][0]["label"] = "changed"
    assert span["label"] == "positive"  # a copy
    assert Prediction.failed("empty text", spans=True).to_dict() == {
        "spans": [],
        "truncated": False,
        "unknown_tokens": 0,
        "error": "empty text",
    }
    assert "spans" not in Prediction.failed("empty text").to_dict()


def test_truncated_text_gets_spans_of_its_start(span_predictor: Predictor) -> None:
    pred = span_predictor.predict(LONG_TEXT)
    assert pred.truncated
    assert pred.spans and max(s["end"] for s in pred.spans) < len(LONG_TEXT) // 2


def test_a_word_cut_by_truncation_keeps_its_whole_extent(span_predictor: Predictor) -> None:
    """The word at the cut is tagged at its first sub-token, which the model saw; its span must not end mid-word."""
    tokenizer, n = span_predictor._tokenizer, span_predictor.max_length - 3  # [CLS], n words, 1 sub-token, [SEP]
    text = "the " * n + "qwertyuiop the"
    enc = tokenizer.encode(text)
    assert enc.tokens[-2:] == ["q", "[SEP]"] and enc.overflowing
    offsets = _whole_word_offsets(enc)
    assert text[slice(*offsets[-2])] == "qwertyuiop" and offsets[:-2] == enc.offsets[:-2]
    tags = np.zeros(len(enc), dtype=np.int64)
    tags[-2] = span_predictor.tags.index(f"B-{SPAN_LABELS[0]}")
    (span,) = decode_spans(text, tags, offsets, enc.word_ids, span_predictor.tags)
    assert span.text == "qwertyuiop"
    whole = tokenizer.encode("the " * (n + 1) + "more")  # cut between words: nothing to extend
    assert _whole_word_offsets(whole) == whole.offsets


def test_predict_stream_gives_span_rows_and_per_item_errors(span_predictor: Predictor) -> None:
    texts = ["great 😀 service", "", None, "服务很好", 7]
    rows = list(span_predictor.predict_stream(texts, batch_size=2))
    assert [row.error for row in rows] == [None, "empty text", "no text", None, "not a string (int)"]
    assert all(row.spans == [] for row in rows if row.error)
    assert [row.spans for row in rows if not row.error] == [
        p.spans for p in span_predictor.predict([texts[0], texts[3]])
    ]


def test_top_k_and_predict_logits_are_refused(span_predictor: Predictor) -> None:
    with pytest.raises(ConfigError, match="top_k=2: a token-classification model returns spans"):
        span_predictor.predict("great", top_k=2)
    with pytest.raises(ConfigError, match="top_k"):
        next(span_predictor.predict_stream(["great"], top_k=1))
    with pytest.raises(ModelError, match="per-token outputs"):
        span_predictor.predict_logits(["great"])


def test_tags_must_match_the_output_width(span_predictor: Predictor) -> None:
    p = span_predictor
    with pytest.raises(ModelError, match="outputs 5 classes but the manifest lists 3 tags"):
        Predictor(p.session, p._tokenizer, p.labels, p.max_length, tags=["O", "B-x", "I-x"])


def test_span_prediction_imports_neither_torch_nor_transformers(tiny_span_onnx_dir: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        import edgesent.runtime
        predictor = edgesent.runtime.Predictor.load({str(tiny_span_onnx_dir)!r})
        assert predictor.predict("great 😀 service").spans is not None
        list(predictor.predict_stream(["服务很好", "", "awful rude staff"] * 20, batch_size=8))
        heavy = sorted(m for m in ("torch", "transformers", "optimum", "onnx") if m in sys.modules)
        assert not heavy, heavy
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.gpu
def test_cuda_spans_match_cpu_on_a_real_gpu(tiny_span_onnx_dir: Path, span_predictor: Predictor) -> None:
    cuda = Predictor.load(tiny_span_onnx_dir, provider="cuda")
    assert cuda.provider == "cuda"
    for a, b in zip(cuda.predict(TEXTS, batch_size=3), span_predictor.predict(TEXTS, batch_size=3)):
        assert [(s["start"], s["end"], s["label"]) for s in a.spans or []] == [
            (s["start"], s["end"], s["label"]) for s in b.spans or []
        ]
