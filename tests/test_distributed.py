"""edgesent.distributed: the shared per-partition function, Ray Data and Spark in local mode, ``predict --engine``.

Ray and Spark each start once for the module (seconds each) and only when a test of theirs runs; tests that need
neither run without the extras. Every engine result is compared, row for row, with ``Predictor.predict``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LABELS, make_span_rows

from edgesent.cli import cli
from edgesent.errors import ConfigError, DataError, MissingDependencyError
from edgesent.runtime import Predictor


pd = pytest.importorskip("pandas")

DEMO = Path(__file__).resolve().parents[1] / "edgesent" / "demo" / "eval.csv"
PREDICTED = ["label", "score", *(f"score_{label}" for label in LABELS), "truncated", "unknown_tokens", "error"]
# Rows that must get an error, never fail the job: empty, whitespace only, missing.
BAD_TEXTS = ["", "   ", None]
SPAN_COLUMNS = ["spans", "truncated", "unknown_tokens", "error"]


@pytest.fixture(scope="module")
def predictor(short_onnx_dir: Path) -> Predictor:
    return Predictor.load(short_onnx_dir, provider="cpu", threads=1)


@pytest.fixture(scope="module")
def span_predictor(tiny_span_onnx_dir: Path) -> Predictor:
    return Predictor.load(tiny_span_onnx_dir, provider="cpu", threads=1)


@pytest.fixture(scope="module")
def span_frame() -> pd.DataFrame:
    """Twelve aspect sentences and the texts that cannot be tagged, with an ``id`` column."""
    texts = [row["text"] for row in make_span_rows(12, seed=3)] + BAD_TEXTS
    return pd.DataFrame({"id": [str(i) for i in range(len(texts))], "text": texts})


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """The demo eval set (180 rows, with its ``label`` column) plus three texts that cannot be classified."""
    demo = pd.read_csv(DEMO, dtype=str, keep_default_na=False)
    bad = pd.DataFrame({"text": BAD_TEXTS, "label": ["neutral"] * len(BAD_TEXTS)})
    data = pd.concat([demo.iloc[:90], bad, demo.iloc[90:]], ignore_index=True)
    data.insert(0, "row", range(len(data)))
    return data


def _expected(predictor: Predictor, texts: list) -> list[dict]:
    """What the single-process predictor says, row by row (None for a row that must carry an error)."""
    good = [t for t in texts if isinstance(t, str) and t.strip()]
    preds = iter(predictor.predict(good))
    return [next(preds).to_dict() if isinstance(t, str) and t.strip() else None for t in texts]


def _assert_same_spans(result: pd.DataFrame, source: pd.DataFrame, predictor: Predictor) -> None:
    """A span model's rows: ``spans`` is the JSON of ``Predictor.predict``'s spans; an error row has null spans."""
    result = result.sort_values("id", key=lambda ids: ids.astype(int)).reset_index(drop=True)
    assert list(result.columns) == [*source.columns, *SPAN_COLUMNS]
    assert result["id"].tolist() == source["id"].tolist()
    expected = _expected(predictor, source["text"].tolist())
    assert any(row and row["spans"] for row in expected)  # the tiny tagger finds spans, so the check means something
    for row, want in zip(result.itertuples(), expected, strict=True):
        if want is None:
            assert row.error in ("empty text", "no text") and pd.isna(row.spans)
            continue
        assert pd.isna(row.error)
        got = json.loads(row.spans)
        assert [{**s, "score": None} for s in got] == [{**s, "score": None} for s in want["spans"]]
        assert [s["score"] for s in got] == pytest.approx([s["score"] for s in want["spans"]], abs=1e-6)


def _assert_same_as_predictor(result: pd.DataFrame, source: pd.DataFrame, predictor: Predictor) -> None:
    result = result.sort_values("row").reset_index(drop=True)
    assert list(result.columns) == ["row", "text", "input_label", *PREDICTED]
    assert result["row"].tolist() == source["row"].tolist()
    assert result["input_label"].tolist() == source["label"].tolist()  # the input's label column kept, renamed
    for i, expected in enumerate(_expected(predictor, source["text"].tolist())):
        row = result.iloc[i]
        if expected is None:
            assert row["error"] in ("empty text", "no text") and pd.isna(row["label"]) and pd.isna(row["score"])
            continue
        assert pd.isna(row["error"])
        assert row["label"] == expected["label"]
        assert row["score"] == pytest.approx(expected["score"], abs=1e-6)
        for label, p in expected["scores"].items():
            assert row[f"score_{label}"] == pytest.approx(p, abs=1e-6)
        assert bool(row["truncated"]) == expected["truncated"]
        assert int(row["unknown_tokens"]) == expected["unknown_tokens"]


# --- the shared per-partition function (no engine) ---------------------------------------------------------


def test_partition_function_matches_the_predictor(frame: pd.DataFrame, short_onnx_dir: Path, predictor) -> None:
    from edgesent.distributed.partition import predict_partition, prepare_config

    cfg = prepare_config(short_onnx_dir, list(frame.columns), batch_size=8)
    assert cfg.labels == tuple(LABELS) and cfg.text_column == "text"
    chunks = [frame.iloc[:50], frame.iloc[50:]]
    out = pd.concat(list(predict_partition(chunks, cfg)), ignore_index=True)
    _assert_same_as_predictor(out, frame, predictor)
    odd = pd.DataFrame({"row": [0, 1], "text": pd.Series([12, float("nan")], dtype=object)})  # a number, a gap
    (out,) = predict_partition([odd], cfg)
    assert out["error"].tolist() == ["not a string (int)", "no text"]


def test_partition_span_model_gets_a_spans_column(span_frame, tiny_span_onnx_dir: Path, span_predictor) -> None:
    from edgesent.distributed.partition import predict_partition, prepare_config

    cfg = prepare_config(tiny_span_onnx_dir, list(span_frame.columns), batch_size=4)
    assert cfg.task == "token-classification"
    _assert_same_spans(next(predict_partition([span_frame], cfg)), span_frame, span_predictor)
    with pytest.raises(DataError, match="'input_spans' is taken"):
        prepare_config(tiny_span_onnx_dir, ["text", "spans", "input_spans"])


def test_partition_predictor_is_loaded_once_per_process(short_onnx_dir: Path, monkeypatch) -> None:
    from edgesent.distributed import partition

    monkeypatch.setattr(partition, "_PREDICTORS", {})
    loads = []
    real = Predictor.load
    monkeypatch.setattr(Predictor, "load", classmethod(lambda cls, *a, **k: loads.append(a) or real(*a, **k)))
    cfg = partition.PartitionConfig(model_dir=short_onnx_dir, labels=tuple(LABELS))
    for _ in range(3):
        list(partition.predict_partition([pd.DataFrame({"text": ["great"]})], cfg))
    assert len(loads) == 1
    with pytest.raises(Exception, match="labels"):
        list(partition.predict_partition([], partition.PartitionConfig(model_dir=short_onnx_dir, labels=("a", "b"))))


def test_prepare_config_fails_fast(short_onnx_copy: Path) -> None:
    from edgesent.distributed.partition import prepare_config

    with pytest.raises(DataError, match="no text column 'body'"):
        prepare_config(short_onnx_copy, ["text"], text_column="body")
    with pytest.raises(DataError, match="'input_label' is taken"):
        prepare_config(short_onnx_copy, ["text", "label", "input_label"])
    with open(short_onnx_copy / "model.onnx", "ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(Exception, match="model.onnx"):
        prepare_config(short_onnx_copy, ["text"])


def test_find_input_files(tmp_path: Path) -> None:
    from edgesent.distributed.files import find_input_files, read_columns

    (tmp_path / "a.csv").write_text("text,id\nhello,1\n")
    (tmp_path / "b.csv").write_text("text,id\nbye,2\n")
    (tmp_path / "_SUCCESS").write_text("")
    (tmp_path / "notes.txt").write_text("skip me")
    assert find_input_files(tmp_path) == ("csv", [tmp_path / "a.csv", tmp_path / "b.csv"])
    assert find_input_files(f"{tmp_path}/b*.csv") == ("csv", [tmp_path / "b.csv"])
    assert read_columns(tmp_path / "a.csv", "csv") == ["text", "id"]
    (tmp_path / "c.jsonl").write_text('{"text": "x", "n": 1}\n')
    assert read_columns(tmp_path / "c.jsonl", "jsonl") == ["text", "n"]
    with pytest.raises(DataError, match="mixes formats"):
        find_input_files(tmp_path)
    with pytest.raises(DataError, match="no file matches"):
        find_input_files(tmp_path / "nothing*.parquet")
    (tmp_path / "deep.jsonl").write_text("[" * 100_000 + "\n")  # json.loads raises RecursionError
    with pytest.raises(DataError, match="deep.jsonl: cannot read its columns"):
        read_columns(tmp_path / "deep.jsonl", "jsonl")


def test_csv_headers_are_matched_by_name(tmp_path: Path) -> None:
    from edgesent.distributed.files import header_groups, input_columns

    a, b, c = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    a.write_text("text,id\nhello,1\n")
    b.write_text("id,text\n2,bye\n")  # the same columns, in another order
    c.write_text("text,id\nagain,3\n")
    assert header_groups([a, b, c], "csv") == {("text", "id"): [a, c], ("id", "text"): [b]}
    assert input_columns([a, b, c], "csv") == ["text", "id"]
    b.write_text("id,body\n2,bye\n")
    with pytest.raises(DataError, match=rf"^{b}: its columns \(id, body\) are not those of {a} \(text, id\)"):
        input_columns([a, b], "csv")


def test_missing_extra_is_one_line_with_the_install_command(monkeypatch, short_onnx_dir: Path, runner) -> None:
    import edgesent.distributed as dist

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name.split(".")[0] in ("ray", "pyspark") else real(name)
    )
    with pytest.raises(MissingDependencyError, match=r"pip install 'edgesent\[ray\]'"):
        dist.predict_dataset(object(), short_onnx_dir)
    with pytest.raises(MissingDependencyError, match=r"pip install 'edgesent\[spark\]'"):
        dist.predict_dataframe(object(), short_onnx_dir)
    result = runner.invoke(cli, ["predict", str(short_onnx_dir), "--engine", "spark", "--input", "x", "--output", "o"])
    assert result.exit_code == 2
    expected = "Error: the spark engine needs the 'spark' extra (missing: pyspark); install it with: "
    assert result.stderr.strip().splitlines() == [expected + "pip install 'edgesent[spark]'"]


def test_import_is_light() -> None:
    code = (
        "import sys, edgesent.distributed, edgesent.distributed.partition, edgesent.distributed.files; "
        "print([m for m in ('torch', 'ray', 'pyspark', 'pandas', 'transformers') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_cli_engine_option_checks(runner, short_onnx_copy: Path, tmp_path: Path) -> None:
    base = ["predict", str(short_onnx_copy)]
    result = runner.invoke(cli, [*base, "great", "--engine", "ray", "--output", str(tmp_path / "o")])
    assert result.exit_code == 2 and "not TEXT arguments" in result.stderr
    result = runner.invoke(cli, [*base, "--engine", "ray", "--input", str(DEMO)])
    assert result.exit_code == 2 and "--output OUT_DIR" in result.stderr
    result = runner.invoke(cli, [*base, "--engine", "ray", "--input", str(DEMO), "--output", "o", "--top-k", "2"])
    assert result.exit_code == 2 and "--top-k does not apply" in result.stderr
    result = runner.invoke(cli, [*base, "--input", str(tmp_path / "missing.csv")])  # no engine: as before
    assert result.exit_code == 2 and "does not exist" in result.stderr
    # A tampered model fails on the driver, before any engine starts: one line, exit 2, no output.
    with open(short_onnx_copy / "tokenizer.json", "ab") as fh:
        fh.write(b" ")
    args = [*base, "--engine", "ray", "--input", str(DEMO), "--output", str(tmp_path / "out")]
    result = runner.invoke(cli, args)
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "tokenizer.json" in result.stderr and not (tmp_path / "out").exists()


# --- Ray Data, local mode ----------------------------------------------------------------------------------


def test_ray_local_cluster_fits_actors_of_several_threads(short_onnx_dir: Path, tmp_path: Path) -> None:
    """Runs before ``ray_local`` starts: ``predict_files`` starts its own cluster, sized for 1 actor of 2 threads."""
    pytest.importorskip("ray")
    pd.DataFrame({"text": ["great", "awful", ""]}).to_csv(tmp_path / "in.csv", index=False)
    code = (
        "from edgesent.distributed.files import predict_files; "
        f"s = predict_files({str(short_onnx_dir)!r}, {str(tmp_path / 'in.csv')!r}, {str(tmp_path / 'out')!r}, "
        "engine='ray', workers=1, threads=2); print(s['rows'], s['predicted'])"
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_USAGE_STATS_ENABLED": "0"}
    out = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, env=env, timeout=240
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "3 2"


@pytest.fixture(scope="module")
def ray_local() -> Iterator[object]:
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(
        num_cpus=3, include_dashboard=False, log_to_driver=False, logging_level="ERROR", object_store_memory=80 << 20
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


def test_ray_predict_dataset_matches_the_predictor(ray_local, frame, short_onnx_dir: Path, predictor) -> None:
    from edgesent.distributed import predict_dataset

    ds = ray_local.data.from_pandas(frame).repartition(4)
    out = predict_dataset(ds, short_onnx_dir, concurrency=2, rows_per_batch=64, batch_size=16)
    _assert_same_as_predictor(out.to_pandas(), frame, predictor)


def test_ray_span_model_matches_the_predictor(ray_local, span_frame, tiny_span_onnx_dir: Path, span_predictor) -> None:
    from edgesent.distributed import predict_dataset

    ds = ray_local.data.from_pandas(span_frame).repartition(2)
    out = predict_dataset(ds, tiny_span_onnx_dir, concurrency=1, rows_per_batch=8, batch_size=4)
    _assert_same_spans(out.to_pandas(), span_frame, span_predictor)


def test_ray_cluster_too_small_for_one_actor_is_refused(ray_local, short_onnx_dir: Path, tmp_path: Path) -> None:
    from edgesent.distributed.files import predict_files
    from edgesent.distributed.ray_engine import check_cluster

    check_cluster(2)  # 3 CPUs: one actor of 2 threads, and 1 CPU to read
    with pytest.raises(
        ConfigError, match=r"the Ray cluster has 3 CPU\(s\), at most 3 on one node; each actor needs 3"
    ):
        predict_files(short_onnx_dir, DEMO, tmp_path / "out", engine="ray", workers=1, threads=3)
    assert not (tmp_path / "out").exists()


def test_ray_cluster_named_by_ray_address_may_autoscale(
    ray_local, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A joined cluster too small now is warned about, not refused: its autoscaler may add the node."""
    from edgesent.distributed.ray_engine import check_cluster

    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    with caplog.at_level("WARNING", logger="edgesent.distributed.ray_engine"):
        check_cluster(3)
    assert "each actor needs 3 on one node (--threads) plus 1 for reading: the job waits" in caplog.text


def test_cli_ray_parquet_folder(ray_local, runner, frame, short_onnx_dir: Path, predictor, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    lake.mkdir()
    frame.iloc[:100].to_parquet(lake / "part-0.parquet")
    frame.iloc[100:].to_parquet(lake / "part-1.parquet")
    out = tmp_path / "scored"
    args = ["predict", str(short_onnx_dir), "--input", str(lake), "--engine", "ray", "--output", str(out)]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert f"predicted {len(frame) - 3} of {len(frame)} text(s) with ray" in result.stderr
    _assert_same_as_predictor(pd.read_parquet(out / "predictions"), frame, predictor)
    manifest = json.loads((out / "edgesent.json").read_text())
    assert manifest["kind"] == "predictions" and manifest["engine"] == "ray" and manifest["rows"] == len(frame)
    assert manifest["errors"] == {"empty text": 2, "no text": 1}
    assert runner.invoke(cli, args).exit_code == 2  # exists: needs --overwrite
    assert runner.invoke(cli, [*args, "--overwrite"]).exit_code == 0


# --- Spark, local[2] ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spark() -> Iterator[object]:
    pytest.importorskip("pyspark")
    from edgesent.distributed.spark_engine import start_local

    session, _ = start_local(2, memory="512m")
    yield session
    session.stop()


def test_spark_predict_dataframe_matches_the_predictor(spark, frame, short_onnx_dir: Path, predictor) -> None:
    from edgesent.distributed import predict_dataframe

    df = spark.createDataFrame(frame).repartition(3)
    out = predict_dataframe(df, short_onnx_dir, batch_size=16, ship=True)
    _assert_same_as_predictor(out.toPandas(), frame, predictor)


def test_cli_spark_csv_glob(spark, runner, frame, short_onnx_dir: Path, predictor, tmp_path: Path) -> None:
    frame.iloc[:100].to_csv(tmp_path / "a.csv", index=False)
    frame.iloc[100:].to_csv(tmp_path / "b.csv", index=False)
    out = tmp_path / "scored"
    args = ["predict", str(short_onnx_dir), "--input", f"{tmp_path}/*.csv", "--engine", "spark", "--output", str(out)]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    scored = pd.read_parquet(out / "predictions")
    scored["row"] = scored["row"].astype(int)  # CSV columns are read as strings
    source = frame.assign(text=frame["text"].fillna(""))  # CSV cannot tell a missing text from an empty one
    _assert_same_as_predictor(scored, source, predictor)
    assert json.loads((out / "edgesent.json").read_text())["engine"] == "spark"


def test_spark_reads_csv_columns_by_name_and_writes_spans(
    spark, span_frame, tiny_span_onnx_dir: Path, span_predictor, tmp_path: Path
) -> None:
    from edgesent.distributed.files import predict_files

    half = len(span_frame) // 2
    span_frame.iloc[:half].to_csv(tmp_path / "a.csv", index=False)
    span_frame.iloc[half:][["text", "id"]].to_csv(tmp_path / "b.csv", index=False)  # columns in another order
    summary = predict_files(tiny_span_onnx_dir, tmp_path, tmp_path / "scored", engine="spark", workers=2)
    assert summary["task"] == "token-classification" and summary["predicted"] == len(span_frame) - len(BAD_TEXTS)
    source = span_frame.assign(text=span_frame["text"].fillna(""))  # CSV cannot tell a missing text from an empty one
    _assert_same_spans(pd.read_parquet(tmp_path / "scored" / "predictions"), source, span_predictor)
