"""The span task's light core: tags, alignment, decoding, metrics, agreement, the three readers, the demo data."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

from edgesent.errors import DataError
from edgesent.tasks.spans import (
    IGNORE_INDEX,
    Span,
    align_labels,
    decode_spans,
    first_token_mask,
    span_agreement,
    span_metrics,
    spans_from_tags,
    tag_ids,
    tag_names,
    token_agreement,
    word_span_metrics,
)
from edgesent.tasks.spans_data import DEMO_SPANS_EVAL, DEMO_SPANS_TRAIN, load_span_dataset, read_span_records


SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "make_demo_spans.py"
TAGS = tag_names(["negative", "positive"])  # O, B-negative, I-negative, B-positive, I-positive
INDEX = tag_ids(TAGS)


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    """A BERT-style WordPiece tokenizer where "battery" -> "bat ##tery" and "screen" -> "scr ##een"."""
    words = ["the", "bat", "##tery", "life", "is", "great", "but", "scr", "##een", "dim", "caf", "##e", "good", "好"]
    chars = list("abcdefghijklmnopqrstuvwxyz,.!")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", *words, *chars, *(f"##{c}" for c in chars)]
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True, handle_chinese_chars=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return tok


def _one_hot(ids: list[int], k: int = len(TAGS), p: float = 0.9) -> np.ndarray:
    """(T, K) probabilities: ``p`` on the given tag, the rest spread evenly."""
    probs = np.full((len(ids), k), (1 - p) / (k - 1))
    probs[np.arange(len(ids)), ids] = p
    return probs


def _key(spans):
    return [(s.start, s.end, s.label) for s in spans]


# --- tags ------------------------------------------------------------------------------------------------------


def test_tag_names_stable_and_interleaved():
    assert tag_names(["positive", "negative", "positive"]) == TAGS
    assert TAGS == ["O", "B-negative", "I-negative", "B-positive", "I-positive"]
    assert INDEX["I-positive"] == 4


def test_spans_from_tags_repairs_and_reads_other_schemes():
    # I- after O starts a span; I- of another label starts a new one; B- always starts one
    assert spans_from_tags(["I-a", "I-a", "O", "B-a", "I-b", "B-b", "I-b"]) == [
        (0, 1, "a"),
        (3, 3, "a"),
        (4, 4, "b"),
        (5, 6, "b"),
    ]
    # BIOES and BILOU: E/L close a span, S/U are single-word spans
    assert spans_from_tags(["B-a", "E-a", "I-a", "S-b", "U-b", "B-a", "L-a"]) == [
        (0, 1, "a"),
        (2, 2, "a"),
        (3, 3, "b"),
        (4, 4, "b"),
        (5, 6, "a"),
    ]
    with pytest.raises(ValueError, match="unknown tag"):
        spans_from_tags(["X-a"])


# --- alignment -------------------------------------------------------------------------------------------------


def test_align_labels_first_subtoken_only(tokenizer):
    text = "The battery life is great but the screen is dim."
    spans = [Span(4, 16, "positive"), Span(34, 40, "negative")]
    enc = tokenizer.encode(text)
    assert enc.tokens[:5] == ["[CLS]", "the", "bat", "##tery", "life"]
    labels = align_labels(enc.offsets, enc.word_ids, spans, INDEX)
    got = [(tok, TAGS[lab] if lab != IGNORE_INDEX else None) for tok, lab in zip(enc.tokens, labels)]
    assert got == [
        ("[CLS]", None),
        ("the", "O"),
        ("bat", "B-positive"),
        ("##tery", None),
        ("life", "I-positive"),
        ("is", "O"),
        ("great", "O"),
        ("but", "O"),
        ("the", "O"),
        ("scr", "B-negative"),
        ("##een", None),
        ("is", "O"),
        ("dim", "O"),
        (".", "O"),
        ("[SEP]", None),
    ]
    assert first_token_mask(enc.word_ids) == [lab != IGNORE_INDEX for lab in labels]


def test_align_then_decode_round_trip(tokenizer):
    text = "The battery life is great but the screen is dim."
    gold = [Span(4, 16, "positive", "battery life"), Span(34, 40, "negative", "screen")]
    enc = tokenizer.encode(text)
    labels = align_labels(enc.offsets, enc.word_ids, gold, INDEX)
    ids = [lab if lab != IGNORE_INDEX else 0 for lab in labels]  # a perfect model: continuation tokens say O
    spans = decode_spans(text, _one_hot(ids), enc.offsets, enc.word_ids, TAGS)
    assert spans == gold
    assert [s.score for s in spans] == [pytest.approx(0.9), pytest.approx(0.9)]
    as_arrays = decode_spans(text, _one_hot(ids), np.array(enc.offsets), enc.word_ids, TAGS)
    assert json.dumps([s.to_dict() for s in as_arrays])  # plain ints and floats, even from numpy offsets
    assert decode_spans(text, np.array(ids), enc.offsets, enc.word_ids, TAGS)[0].score is None


def test_align_word_of_many_subtokens(tokenizer):
    text = "keys rock"
    enc = tokenizer.encode(text)
    assert enc.tokens == ["[CLS]", "k", "##e", "##y", "##s", "r", "##o", "##c", "##k", "[SEP]"]
    labels = align_labels(enc.offsets, enc.word_ids, [Span(0, 4, "positive")], INDEX)
    assert labels == [IGNORE_INDEX, INDEX["B-positive"], *[IGNORE_INDEX] * 3, 0, *[IGNORE_INDEX] * 3, IGNORE_INDEX]
    probs = _one_hot([0, INDEX["B-positive"], 1, 1, 1, 0, 3, 3, 3, 0])  # continuation tokens disagree: not read
    assert decode_spans(text, probs, enc.offsets, enc.word_ids, TAGS) == [Span(0, 4, "positive", "keys")]


def test_align_with_transformers_fast_tokenizer(tmp_path, tokenizer):
    """Training aligns with the Transformers fast tokenizer: same offsets and word ids, same labels."""
    transformers = pytest.importorskip("transformers")
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    text = "The battery life is great but the screen is dim."
    spans = [Span(4, 16, "positive"), Span(34, 40, "negative")]
    batch = fast([text], return_offsets_mapping=True)
    enc = tokenizer.encode(text)
    assert align_labels(batch["offset_mapping"][0], batch.word_ids(0), spans, INDEX) == align_labels(
        enc.offsets, enc.word_ids, spans, INDEX
    )


def test_align_decode_round_trip_on_demo_data(tokenizer):
    """Perfect tag predictions decode back to the gold character spans for every demo sentence."""
    for ex in load_span_dataset(DEMO_SPANS_EVAL).examples:
        enc = tokenizer.encode(ex.text)
        tags = tag_names(["negative", "neutral", "positive"])
        ids = [max(lab, 0) for lab in align_labels(enc.offsets, enc.word_ids, ex.spans, tag_ids(tags))]
        assert decode_spans(ex.text, np.array(ids), enc.offsets, enc.word_ids, tags) == ex.spans, ex.text


# --- decoding --------------------------------------------------------------------------------------------------


def test_decode_repairs_invalid_bio(tokenizer):
    text = "The battery life is great but the screen is dim."
    enc = tokenizer.encode(text)
    # words: the battery life is great but the screen is dim .
    word_tags = ["O", "I-positive", "I-positive", "O", "O", "O", "O", "I-negative", "I-positive", "O", "O"]
    ids = []
    for word, first in zip(enc.word_ids, first_token_mask(enc.word_ids)):
        # continuation sub-tokens predict nonsense: decoding must read words at their first sub-token only
        ids.append(INDEX[word_tags[word]] if first else INDEX["B-negative"])
    probs = _one_hot(ids)
    probs[2, :] = [0.1, 0.1, 0.1, 0.1, 0.6]  # "bat": I-positive at 0.6
    spans = decode_spans(text, probs, enc.offsets, enc.word_ids, TAGS)
    assert [(s.text, s.label) for s in spans] == [
        ("battery life", "positive"),
        ("screen", "negative"),
        ("is", "positive"),
    ]
    assert spans[0].score == pytest.approx((0.6 + 0.9) / 2)  # mean over the span's words


def test_decode_offsets_with_emoji_accents_and_cjk(tokenizer):
    text = "😀 Café 好 battery 🔋 great"
    enc = tokenizer.encode(text)
    words = {}
    for (a, b), w in zip(enc.offsets, enc.word_ids):
        if w is not None:
            words.setdefault(w, [a, b])[1] = b
    assert [text[a:b] for a, b in words.values()] == ["😀", "Café", "好", "battery", "🔋", "great"]
    gold = [Span(2, 6, "positive", "Café"), Span(7, 8, "negative", "好"), Span(9, 18, "positive", "battery 🔋")]
    labels = align_labels(enc.offsets, enc.word_ids, gold, INDEX)
    ids = [lab if lab != IGNORE_INDEX else 0 for lab in labels]
    spans = decode_spans(text, _one_hot(ids), enc.offsets, enc.word_ids, TAGS)
    assert spans == gold
    assert all(text[s.start : s.end] == s.text for s in spans)


def test_decode_trims_whitespace_and_handles_truncation():
    text = "  bad   screen  "
    offsets = [(0, 0), (2, 5), (8, 14), (0, 0)]
    word_ids = [None, 0, 1, None]
    spans = decode_spans(text, np.array([0, 1, 2, 0]), offsets, word_ids, TAGS)
    assert spans == [Span(2, 14, "negative", "bad   screen")]
    # truncated predictions: only the tokens the model saw are decoded
    assert decode_spans(text, np.array([0, 1]), offsets, word_ids, TAGS) == [Span(2, 5, "negative", "bad")]


# --- metrics ---------------------------------------------------------------------------------------------------


def test_span_metrics_against_hand_computed_values():
    gold = [
        [Span(0, 4, "pos"), Span(10, 15, "neg")],
        [Span(3, 8, "neu")],
        [],
    ]
    pred = [
        [Span(0, 4, "pos"), Span(10, 15, "pos")],  # exact hit; right boundaries, wrong label
        [Span(3, 7, "neu")],  # wrong boundaries
        [Span(1, 2, "neg")],  # spurious
    ]
    m = span_metrics(gold, pred)
    assert (m["n_gold"], m["n_pred"], m["n_boundary_matches"]) == (3, 4, 2)
    assert m["precision"] == pytest.approx(1 / 4)
    assert m["recall"] == pytest.approx(1 / 3)
    assert m["f1"] == pytest.approx(2 * (1 / 4) * (1 / 3) / (1 / 4 + 1 / 3))  # 2/7
    assert m["span_precision"] == pytest.approx(2 / 4)
    assert m["span_recall"] == pytest.approx(2 / 3)
    assert m["span_f1"] == pytest.approx(4 / 7)
    # polarity on the 2 boundary matches: (pos, pos) right, (neg, pos) wrong
    assert m["label_accuracy"] == pytest.approx(1 / 2)
    # labels neg, neu, pos: F1 neg 0 (1 gold, 0 right), neu 0 (none), pos 2/3 (P 1/2, R 1)
    assert m["label_macro_f1"] == pytest.approx((0 + 0 + 2 / 3) / 3)
    assert m["labels"] == ["neg", "neu", "pos"]
    assert m["per_label"]["pos"] == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 1}
    assert m["per_label"]["neg"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["per_label"]["neu"]["support"] == 1 and m["per_label"]["neu"]["f1"] == 0.0
    json.dumps(m)  # JSON-able for evaluate's report


def test_span_metrics_perfect_and_empty():
    gold = [[Span(0, 3, "a")], []]
    assert span_metrics(gold, gold)["f1"] == 1.0
    empty = span_metrics([[]], [[]])
    assert empty["f1"] == 0.0 and empty["label_macro_f1"] == 0.0
    with pytest.raises(ValueError, match="gold texts"):
        span_metrics([[]], [[], []])


def test_word_span_metrics_for_trainer():
    # (N=2, T=6): -100 at special and continuation tokens; tags O B-neg I-neg B-pos I-pos
    labels = np.array([[-100, 3, -100, 4, 0, -100], [-100, 0, 1, -100, -100, -100]])
    preds = np.array([[0, 3, 0, 4, 0, 0], [0, 0, 3, 1, 0, 0]])  # row 0 exact; row 1 right word, wrong label
    m = word_span_metrics(preds, labels, TAGS)
    assert (m["n_gold"], m["n_pred"], m["f1"], m["span_f1"]) == (2, 2, 0.5, 1.0)
    assert m["labels"] == ["negative", "positive"] and m["label_accuracy"] == 0.5
    logits = np.eye(len(TAGS))[preds]  # (N, T, K) one-hot logits give the same numbers
    assert word_span_metrics(logits, labels, TAGS) == m


def test_span_and_token_agreement():
    ref = [[Span(0, 3, "a"), Span(5, 7, "b")], [], [Span(1, 2, "a")]]
    cand = [[Span(0, 3, "a"), Span(5, 7, "a")], [], [Span(1, 2, "a")]]
    agree = span_agreement(ref, cand)
    assert agree["span_f1"] == pytest.approx(2 / 3) and agree["texts_identical"] == pytest.approx(2 / 3)
    assert span_agreement([[], []], [[], []])["span_f1"] == 1.0  # both find nothing: full agreement
    logits_ref = np.array([[[5.0, 0.0], [0.0, 5.0], [0.0, 5.0], [5.0, 0.0]]])  # (B=1, T=4, K=2)
    logits_cand = np.array([[[0.0, 5.0], [0.0, 5.0], [5.0, 0.0], [5.0, 0.0]]])
    mask = np.array([[False, True, True, True]])  # position 0 (a special token) does not vote
    assert token_agreement(logits_ref, logits_cand, mask) == pytest.approx(2 / 3)
    assert token_agreement(np.array([[1, 2]]), np.array([[1, 2]]), np.array([[False, False]])) == 1.0


# --- readers ---------------------------------------------------------------------------------------------------


def _write(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    return path


def test_read_jsonl_spans_and_aspects(tmp_path):
    rows = [
        {"text": "The food was great but service slow.", "spans": [{"start": 4, "end": 8, "label": "positive"}]},
        {
            "text": "Service slow, food great.",
            "aspects": [
                {"term": "food", "from": 14, "to": 18, "polarity": "positive"},
                {"term": "Service", "from": "0", "to": "7", "polarity": "negative"},
            ],
        },
        {"text": "No aspects here.", "spans": []},
    ]
    path = _write(tmp_path, "a.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    examples = list(read_span_records(path))
    assert [ex.line for ex in examples] == [1, 2, 3]
    assert examples[0].spans == [Span(4, 8, "positive", "food")]
    assert examples[1].spans == [Span(0, 7, "negative", "Service"), Span(14, 18, "positive", "food")]  # sorted
    assert examples[2].spans == []
    data = load_span_dataset(path)
    assert data.labels() == ["negative", "positive"] and len(data) == 3
    assert data.fingerprint()["label_counts"] == {"negative": 1, "positive": 2}
    assert len(data.sha256) == 64


def test_read_conll_bio_and_bioes(tmp_path):
    content = (
        "-DOCSTART- O\n\n"
        "The O\nbattery B-positive\nlife I-positive\nrocks O\n\n"
        "screen\tI-negative\nand O\nkeys S-positive\n\n\n"
        "café NN B-neutral\nmenu NN E-neutral\n"
    )
    examples = list(read_span_records(_write(tmp_path, "a.conll", content)))
    assert [ex.text for ex in examples] == ["The battery life rocks", "screen and keys", "café menu"]
    assert [ex.line for ex in examples] == [3, 8, 13]
    assert [_key(ex.spans) for ex in examples] == [
        [(4, 16, "positive")],
        [(0, 6, "negative"), (11, 15, "positive")],
        [(0, 9, "neutral")],
    ]
    assert examples[0].spans[0].text == "battery life"


SEMEVAL_XML = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<sentences>
    <sentence id="1">
        <text>The sushi was fresh but the wait &amp; noise were awful.</text>
        <aspectTerms>
            <aspectTerm term="sushi" polarity="positive" from="4" to="9"/>
            <aspectTerm term="wait" polarity="negative" from="28" to="32"/>
            <aspectTerm term="noise" polarity="conflict" from="35" to="40"/>
        </aspectTerms>
        <aspectCategories><aspectCategory category="food" polarity="positive"/></aspectCategories>
    </sentence>
    <sentence id="2">
        <text>We went on a Tuesday.</text>
    </sentence>
</sentences>
"""


def test_read_semeval_xml_with_conflict_dropped(tmp_path):
    path = _write(tmp_path, "r.xml", SEMEVAL_XML)
    examples = list(read_span_records(path))
    assert [ex.line for ex in examples] == [3, 12]
    assert examples[0].text == "The sushi was fresh but the wait & noise were awful."
    assert _key(examples[0].spans) == [(4, 9, "positive"), (28, 32, "negative"), (35, 40, "conflict")]
    assert examples[1].spans == []
    dropped: Counter = Counter()
    kept = list(read_span_records(path, drop_labels=["conflict"], dropped=dropped))
    assert _key(kept[0].spans) == [(4, 9, "positive"), (28, 32, "negative")]
    assert dropped == {"conflict": 1}
    assert load_span_dataset(path, drop_labels=["conflict"]).fingerprint()["dropped"] == {"conflict": 1}


OVERLAPPING = json.dumps(
    {"text": "good food", "spans": [{"start": 0, "end": 9, "label": "p"}, {"start": 5, "end": 9, "label": "n"}]}
)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.jsonl", '{"text": "good food", "spans": [{"start": 5, "end": 12, "label": "positive"}]}\n', ":1: span"),
        ("a.jsonl", '{"text": "good food", "spans": [{"start": 5, "end": 5, "label": "p"}]}\n', "is empty"),
        (
            "a.jsonl",
            '{"text": "ok"}\n' + OVERLAPPING,
            ":1: no list of span objects",
        ),
        (
            "a.jsonl",
            '{"text": "good food", "spans": []}\n' + OVERLAPPING,
            ":2: spans [0, 9) 'good food' and [5, 9) 'food' overlap",
        ),
        (
            "a.jsonl",
            '{"text": "good food", "spans": [{"start": 0, "end": 4, "label": "p", "term": "food"}]}\n',
            ":1: span [0, 4) (p) covers 'good' but its term is 'food'",
        ),
        ("a.jsonl", '{"text": "good food", "spans": [{"start": 0, "end": 4}]}\n', "without 'label'"),
        ("a.jsonl", '{"text": "x", "spans": [{"start": true, "end": 1, "label": "p"}]}\n', "must be an integer"),
        ("a.jsonl", "{not json\n", ":1: invalid JSON"),
        ("a.conll", "good O\nfood B-positive\n\nnice BEGIN-positive\n", ":4: unknown tag 'BEGIN-positive'"),
        ("a.conll", "good O\nfood positive\n", ":2: unknown tag 'positive'"),
        ("a.conll", "good O\nfood\n", ":2: a line without a tag"),
        ("a.xml", SEMEVAL_XML.replace('from="28"', 'from="27"'), ":7: span [27, 32) (negative) covers ' wait'"),
        ("a.xml", SEMEVAL_XML.replace('to="9"', 'to="90"'), ":6: span [4, 90) (positive) is outside the text"),
        (
            "a.xml",
            SEMEVAL_XML.replace('from="35"', 'from="30"').replace('term="noise"', 'term="it &amp; noise"'),
            ":3: spans",
        ),
        ("a.xml", SEMEVAL_XML.replace("</sentence>\n    <sentence", "<sentence", 1), "malformed XML"),
        ("a.csv", "text,label\n", "unknown format '.csv'"),
    ],
)
def test_bad_input_is_one_line_data_error(tmp_path, name, content, message):
    path = _write(tmp_path, name, content)
    with pytest.raises(DataError) as info:
        list(read_span_records(path))
    text = str(info.value)
    assert text.startswith(str(path)) and "\n" not in text
    assert message in text
    assert info.value.exit_code == 2


def test_other_file_errors(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        list(read_span_records(tmp_path / "missing.jsonl"))
    bad = tmp_path / "b.conll"
    bad.write_bytes(b"caf\xe9 O\n")
    with pytest.raises(DataError, match=r":1: bytes that are not UTF-8"):
        list(read_span_records(bad))
    no_spans = _write(tmp_path, "n.jsonl", '{"text": "x", "spans": [{"start": 0, "end": 1, "label": "conflict"}]}\n')
    with pytest.raises(DataError, match="no spans in 1 sentence.*after dropping conflict"):
        load_span_dataset(no_spans, drop_labels=["conflict"])
    with pytest.raises(DataError, match="has no sentences"):
        load_span_dataset(_write(tmp_path, "e.jsonl", "\n"))


def test_light_modules_import_no_torch():
    code = "import sys, edgesent.tasks.spans, edgesent.tasks.spans_data; assert 'torch' not in sys.modules"
    code += "; assert 'transformers' not in sys.modules; assert 'onnxruntime' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- demo data -------------------------------------------------------------------------------------------------


def _load_script():
    spec = importlib.util.spec_from_file_location("make_demo_spans", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_demo_spans_shipped_and_valid():
    for path, minimum in ((DEMO_SPANS_TRAIN, 600), (DEMO_SPANS_EVAL, 150)):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        assert len(rows) >= minimum
        for row in rows:
            assert all(row["text"][s["start"] : s["end"]] == s["term"] for s in row["spans"])
        data = load_span_dataset(path)  # the reader validates offsets, terms and overlaps too
        assert data.labels() == ["negative", "neutral", "positive"]
        opposite = sum({"positive", "negative"} <= {s.label for s in ex.spans} for ex in data.examples)
        assert opposite >= 0.3 * len(data)
        assert any(len(s.text.split()) > 1 for ex in data.examples for s in ex.spans)  # multi-word aspects (I- tags)
    train = {ex.text for ex in load_span_dataset(DEMO_SPANS_TRAIN).examples}
    assert not train & {ex.text for ex in load_span_dataset(DEMO_SPANS_EVAL).examples}


def test_demo_spans_regenerate_byte_for_byte(tmp_path):
    assert _load_script().main(["--out-dir", str(tmp_path)]) == 0
    for path in (DEMO_SPANS_TRAIN, DEMO_SPANS_EVAL):
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), f"{path.name} differs from the script"


def test_gold_spans_are_trimmed_of_whitespace_and_checked(tmp_path: Path) -> None:
    """The predictor never returns a span that starts or ends in whitespace, so neither may gold."""
    rows = [
        {"text": "the battery  is great", "spans": [{"start": 3, "end": 13, "label": "pos"}]},
        {"text": "ok screen", "spans": [{"start": 2, "end": 9, "label": "neg", "term": " screen"}]},
    ]
    examples = list(read_span_records(_write(tmp_path, "a.jsonl", "\n".join(map(json.dumps, rows)) + "\n")))
    assert [(s.start, s.end, s.text) for ex in examples for s in ex.spans] == [(4, 11, "battery"), (3, 9, "screen")]
    blank = {"text": "a   b", "spans": [{"start": 1, "end": 4, "label": "pos"}]}
    with pytest.raises(DataError, match=r"b.jsonl:1: span \[1, 4\) \(pos\) covers only whitespace"):
        list(read_span_records(_write(tmp_path, "b.jsonl", json.dumps(blank) + "\n")))


def test_span_labels_must_be_strings_and_texts_valid_unicode(tmp_path: Path) -> None:
    numeric = {"text": "good food", "spans": [{"start": 5, "end": 9, "label": 1}]}
    with pytest.raises(DataError, match=r"c.jsonl:1: a span label must be a string, got 1"):
        list(read_span_records(_write(tmp_path, "c.jsonl", json.dumps(numeric) + "\n")))
    half_emoji = '{"text": "good food \\ud83d", "spans": []}\n'
    with pytest.raises(DataError, match=r"d.jsonl:1: text that is not valid Unicode"):
        list(read_span_records(_write(tmp_path, "d.jsonl", half_emoji)))


def test_a_file_without_spans_loads_only_when_spans_are_not_required(tmp_path: Path) -> None:
    path = _write(tmp_path, "e.jsonl", '{"text": "nothing to see", "spans": []}\n')
    with pytest.raises(DataError, match="no spans in 1 sentence"):
        load_span_dataset(path)
    assert load_span_dataset(path, require_spans=False).texts == ["nothing to see"]
