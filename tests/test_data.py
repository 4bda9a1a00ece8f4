"""Data loading: formats, column fallbacks, label handling and one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edgesent.data import LabelledTexts, encode_labels, label_list, load_dataset, stratified_sample, stratified_split
from edgesent.errors import DataError


def test_csv_tsv_jsonl_read_the_same_rows(tmp_path):
    rows = [('good, really "good"', "pos"), ("bad", "neg"), ("meh", "neu")]
    csv_path = tmp_path / "d.csv"
    csv_path.write_text('text,label\n"good, really ""good""",pos\nbad,neg\nmeh,neu\n')
    tsv_path = tmp_path / "d.tsv"
    tsv_path.write_text("sentence\tlabel\n" + "".join(f"{t}\t{lab}\n" for t, lab in rows))
    jsonl_path = tmp_path / "d.jsonl"
    jsonl_path.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows))
    for path in (csv_path, tsv_path, jsonl_path):
        data = load_dataset(path)
        assert list(zip(data.texts, data.labels)) == rows, path
        assert data.fingerprint()["rows"] == 3 and len(data.fingerprint()["sha256"]) == 64


def test_integer_labels_are_ordered_numerically(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"text": f"t{i}", "label": i % 11}) + "\n" for i in range(22)))
    data = load_dataset(path)
    assert label_list(data) == [str(i) for i in range(11)]
    assert encode_labels(data, label_list(data))[:3] == [0, 1, 2]


def test_string_labels_sorted_and_custom_columns(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("review,stars\nnice,positive\nugly,negative\nfine,neutral\n")
    data = load_dataset(path, text_column="review", label_column="stars")
    assert label_list(data) == ["negative", "neutral", "positive"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("d.xml", "<a/>", "unknown format '.xml'"),
        ("d.csv", "", "the file is empty"),
        ("d.csv", "text,label\n", "no data rows"),
        ("d.csv", "body,label\nx,a\n", "no text column 'text' (columns: body, label)"),
        ("d.csv", "text,y\nx,a\n", "no label column 'label'"),
        (
            "d.csv",
            "text,label\nx,a\n  ,b\n,c\n",
            "2 row(s) with empty text (line 3, 4); fix them or pass --skip-empty",
        ),
        ("d.csv", "text,label\nx,\n", "d.csv:2: empty label"),
        ("d.jsonl", '{"text": "a", "label": 1}\n{oops\n', "d.jsonl:2: invalid JSON"),
        ("d.csv", "text,label\nx,a,extra\n", "d.csv:2: more fields than the header"),
    ],
)
def test_bad_files_give_one_line_errors(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError) as err:
        load_dataset(path)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_dataset(tmp_path / "nope.csv")


def test_undecodable_bytes_name_the_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"text,label\nok,a\nbad \xff\xfe,b\n")
    with pytest.raises(DataError, match=r"d.csv:3: bytes that are not UTF-8"):
        load_dataset(path)


def test_skip_empty_counts_skipped_rows(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\nx,a\n ,b\ny,b\n")
    data = load_dataset(path, skip_empty=True)
    assert data.texts == ["x", "y"] and data.skipped_empty == 1


def test_single_class_and_unseen_labels_are_refused(tmp_path):
    one = tmp_path / "one.csv"
    one.write_text("text,label\nx,a\ny,a\n")
    with pytest.raises(DataError, match="at least two classes"):
        label_list(load_dataset(one))
    dev = tmp_path / "dev.csv"
    dev.write_text("text,label\nx,a\ny,zzz\n")
    with pytest.raises(DataError, match="'zzz' not among the training labels"):
        encode_labels(load_dataset(dev), ["a", "b"])


def test_stratified_split_is_seeded_and_keeps_every_class(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\n" + "".join(f"t{i},{'ab'[i % 2] if i < 40 else 'c'}\n" for i in range(50)))
    data = load_dataset(path)
    train_a, eval_a = stratified_split(data, 0.2, seed=3)
    train_b, eval_b = stratified_split(data, 0.2, seed=3)
    assert eval_a.texts == eval_b.texts and train_a.texts == train_b.texts
    assert sorted(eval_a.labels) == ["a"] * 4 + ["b"] * 4 + ["c"] * 2
    assert not set(eval_a.texts) & set(train_a.texts)
    assert len(train_a) + len(eval_a) == 50


def test_reading_records_imports_no_torch(tmp_path) -> None:
    """``edgesent.data`` is on the runtime path (predict, serve, the engines): reading a file needs no torch."""
    path = tmp_path / "t.csv"
    path.write_text("text,label\ngood,pos\n", encoding="utf-8")
    code = (
        f"import sys, edgesent.data; assert edgesent.data.load_dataset({str(path)!r}).texts == ['good']; "
        "heavy = [m for m in ('torch', 'transformers', 'onnxruntime') if m in sys.modules]; assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_stratified_sample_never_refuses_a_rare_class_and_keeps_the_size() -> None:
    """The parity sample is drawn after training: a one-row class must not throw the finished run away."""
    labels = ["pos"] * 700 + ["neg"] * 300 + ["rare"]
    data = LabelledTexts(texts=[f"t{i}" for i in range(len(labels))], labels=labels, source="dev")
    sample = stratified_sample(data, 1000, seed=3)
    assert len(sample) == 1000 and sample.texts == sorted(sample.texts, key=lambda t: int(t[1:]))
    assert (sample.labels.count("pos"), sample.labels.count("neg")) in {(700, 300), (699, 300), (700, 299)}
    assert stratified_sample(data, 1000, seed=3).texts == sample.texts  # seeded
    assert stratified_sample(data, 5000, seed=3) is data
    with pytest.raises(DataError, match="class 'rare' has 1 row"):  # a split still needs both sides
        stratified_split(data, 0.5, seed=3)
