"""The one streaming reader (data.iter_records): one record per input record, in order, or one error naming
the line where the problem starts; property-based over generated CSV/TSV/JSONL content."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgesent.data import ReadStats, iter_records, label_list, load_dataset
from edgesent.errors import DataError


# Texts with everything a reader can trip on: quotes, commas, tabs, CR/LF, emoji, Unicode line separators.
_ALPHABET = st.sampled_from(list("ab ,\"'\t\r\n;é中😀\u2028\u0085\u00a0\\{}[]:"))
TEXTS = st.lists(st.text(_ALPHABET, min_size=1, max_size=20).filter(str.strip), min_size=1, max_size=12)
_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _csv(texts: list[str]) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out)  # RFC 4180: CRLF records, so a bare CR inside a text is quoted
    writer.writerow(["text", "label"])
    writer.writerows([text, str(i % 2)] for i, text in enumerate(texts))
    return out.getvalue().encode()


@_SETTINGS
@given(texts=TEXTS)
def test_csv_round_trip_keeps_every_record_in_order(
    tmp_path_factory: pytest.TempPathFactory, texts: list[str]
) -> None:
    path = tmp_path_factory.mktemp("csv") / "d.csv"
    path.write_bytes(_csv(texts))
    for strict in (True, False):
        records = list(iter_records(path, label_column="label", strict=strict))
        assert [r.text for r in records] == texts
        assert [r.label for r in records] == [str(i % 2) for i in range(len(texts))]
        assert all(r.error is None for r in records)


@_SETTINGS
@given(texts=TEXTS)
def test_jsonl_round_trip_with_unicode_separators(tmp_path_factory: pytest.TempPathFactory, texts: list[str]) -> None:
    path = tmp_path_factory.mktemp("jsonl") / "d.jsonl"
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    assert [r.text for r in iter_records(path, strict=True)] == texts
    assert [r.text for r in iter_records(path, strict=False)] == texts


@_SETTINGS
@given(
    texts=st.lists(
        st.text(st.sampled_from(list("ab ,\"'é中😀\u2028")), min_size=1, max_size=20).filter(str.strip),
        min_size=1,
        max_size=12,
    )
)
def test_tsv_is_unquoted_and_keeps_quotes_literally(
    tmp_path_factory: pytest.TempPathFactory, texts: list[str]
) -> None:
    path = tmp_path_factory.mktemp("tsv") / "d.tsv"
    path.write_text("text\tlabel\n" + "".join(f"{t}\t1\n" for t in texts), encoding="utf-8")
    assert [r.text for r in iter_records(path, label_column="label")] == texts


@_SETTINGS
@given(texts=TEXTS, cut=st.integers(min_value=0, max_value=11))
def test_an_unclosed_quote_is_an_error_naming_its_line_never_a_silent_merge(
    tmp_path_factory: pytest.TempPathFactory, texts: list[str], cut: int
) -> None:
    cut = cut % len(texts)
    lines = ["text,label", *(f"row{i},1" for i in range(len(texts)))]
    lines[cut + 1] = f'"row{cut} never closed,1'
    path = tmp_path_factory.mktemp("bad") / "d.csv"
    path.write_text("\n".join(lines) + "\n")
    for strict in (True, False):
        with pytest.raises(DataError, match=rf"d.csv:{cut + 2}: "):
            list(iter_records(path, label_column="label", strict=strict))


def test_hundred_records_with_one_unclosed_quote_is_refused_at_its_line(tmp_path: Path) -> None:
    rows = [f"review number {i},pos" for i in range(100)]
    rows[3] = '"review number 3 opens a quote,pos'
    path = tmp_path / "d.csv"
    path.write_text("text,label\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"d.csv:5: a quoted field that starts in this record is never closed"):
        load_dataset(path)


def test_duplicate_columns_and_keys_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("text,label,text\na,1,b\n")
    with pytest.raises(DataError, match=r"column 'text' appears twice in the header \(columns 1 and 3\)"):
        load_dataset(path)
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"text": "a", "label": 1, "text": "b"}\n')
    with pytest.raises(DataError, match=r"d.jsonl:1: invalid JSON: key 'text' appears twice"):
        load_dataset(jsonl)


def test_unicode_line_separators_inside_jsonl_strings_train_fine(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    texts = ["one\u2028two", "three\u0085four", "five\u2029six"]
    path.write_text(
        "".join(json.dumps({"text": t, "label": i % 2}, ensure_ascii=False) + "\n" for i, t in enumerate(texts))
    )
    assert load_dataset(path).texts == texts


def test_a_long_field_loads_the_same_whatever_ran_before(tmp_path: Path) -> None:
    long_text = "x" * 300_000
    path = tmp_path / "d.csv"
    path.write_text(f'text,label\n"{long_text}",1\nshort,0\n')
    assert load_dataset(path).texts == [long_text, "short"]


def test_a_malformed_csv_record_is_an_error_row_when_lenient(tmp_path: Path) -> None:
    """A bare carriage return in an unquoted field (or text after a closing quote) costs its record, not the run;
    a quoted CR is text, and a bad byte on the second line of a quoted record flags that record."""
    path = tmp_path / "d.csv"
    path.write_bytes(b'text,label\nok,1\nbad\rfield,1\n"a" b,2\n"quoted\rcr",3\n"two\nlin\xe9s",4\nlast,5\n')
    records = list(iter_records(path, "text", "label", strict=False))
    assert [(r.line, r.text, r.error) for r in records] == [
        (2, "ok", None),
        (3, "", "malformed CSV: a carriage return inside an unquoted field; quote the field"),
        (4, "", "malformed CSV: ',' expected after '\"'"),
        (5, "quoted\rcr", None),
        (6, "two\nlin\ufffds", None),
        (8, "last", None),
    ]
    assert [r.replaced for r in records] == [False, False, False, False, True, False]
    with pytest.raises(DataError, match=r"d.csv:3: malformed CSV \(a carriage return inside an unquoted field"):
        list(iter_records(path, "text", "label", strict=True))


def test_lenient_reading_keeps_one_row_per_record_and_repairs_bytes(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"text": "ok"}\nnot json\n\n{"text": "caf\xe9"}\n[1]\n' + b"[" * 100_000 + b"\n")
    stats = ReadStats()
    records = list(iter_records(path, strict=False, stats=stats))
    assert [(r.line, r.error) for r in records] == [
        (1, None),
        (2, "invalid JSON: Expecting value"),
        (3, "empty text"),
        (4, None),
        (5, "invalid JSON: not an object"),
        (6, "invalid JSON: nested too deeply"),
    ]
    assert [r.replaced for r in records] == [False, False, False, True, False, False]
    assert records[3].text == "caf\ufffd" and stats.unclaimed == []
    assert len(stats.sha256) == 64
    with pytest.raises(DataError, match=r"d.jsonl:2: invalid JSON"):  # strict: the first problem stops it
        list(iter_records(path, strict=True))


def test_superscript_digits_are_labels_not_integers(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("text,label\na,²\nb,1\nc,²\n")
    assert label_list(load_dataset(path)) == ["1", "²"]


def test_a_lone_surrogate_escape_is_refused_strictly_and_repaired_leniently(tmp_path: Path) -> None:
    """JSON can spell half an emoji ("\\ud83d"); the tokenizer would refuse it later with a bare TypeError."""
    path = tmp_path / "s.jsonl"
    path.write_text('{"text": "fine", "label": "a"}\n{"text": "cut \\ud83d", "label": "b"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"s.jsonl:2: text that is not valid Unicode"):
        list(iter_records(path, "text", "label", strict=True))
    records = list(iter_records(path, "text", "label", strict=False))
    assert records[1].text == "cut \ufffd" and records[1].replaced


def test_json_cells_of_the_wrong_type_are_problems_not_class_names(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "ok", "label": 1}\n{"text": 5, "label": "a"}\n{"text": "fine", "label": ["x"]}\n')
    records = list(iter_records(path, "text", "label", strict=False))
    assert [(r.text, r.label, r.error) for r in records] == [
        ("ok", "1", None),
        ("", "", "'text' is not a string (int)"),  # as Ray and Spark report it
        ("", "", "'label' is not a string, number or boolean (list)"),
    ]
    with pytest.raises(DataError, match=r"t.jsonl:2: 'text' is not a string \(int\)"):
        list(iter_records(path, "text", "label", strict=True))
