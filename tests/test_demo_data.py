"""The shipped demo data set: present, well-formed, balanced, split-disjoint, and reproducible from its script."""

from __future__ import annotations

import collections
import csv
import importlib.util
from pathlib import Path

from edgesent.demo import DEMO_DIR, DEMO_EVAL, DEMO_TRAIN


LABELS = {"negative", "neutral", "positive"}
SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "make_demo_data.py"


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def _load_script():
    spec = importlib.util.spec_from_file_location("make_demo_data", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_files_exist_in_package():
    assert DEMO_TRAIN.parent == DEMO_DIR == DEMO_EVAL.parent
    assert DEMO_TRAIN.is_file() and DEMO_EVAL.is_file()
    assert DEMO_TRAIN.stat().st_size + DEMO_EVAL.stat().st_size < 200_000


def test_header_labels_and_balance():
    for path, minimum in ((DEMO_TRAIN, 300), (DEMO_EVAL, 50)):
        header, rows = _read(path)
        assert header == ["text", "label"]
        counts = collections.Counter(r["label"] for r in rows)
        assert set(counts) == LABELS
        assert len(set(counts.values())) == 1, f"{path.name} is not balanced: {counts}"
        assert min(counts.values()) >= minimum
        assert all(r["text"].strip() for r in rows)
        texts = [r["text"] for r in rows]
        assert len(texts) == len(set(texts)), f"{path.name} has duplicate texts"


def test_no_text_in_both_splits():
    train = {r["text"] for r in _read(DEMO_TRAIN)[1]}
    evals = {r["text"] for r in _read(DEMO_EVAL)[1]}
    assert not train & evals


def test_regenerating_reproduces_shipped_files(tmp_path):
    mod = _load_script()
    assert mod.main(["--out-dir", str(tmp_path)]) == 0
    for name in ("train.csv", "eval.csv"):
        assert (tmp_path / name).read_bytes() == (DEMO_DIR / name).read_bytes(), f"{name} differs from the script"


def test_other_seed_and_size(tmp_path):
    mod = _load_script()
    train, evals = mod.generate(seed=1, train_per_class=20, eval_per_class=5)
    assert len(train) == 60 and len(evals) == 15
    assert not {t for t, _ in train} & {t for t, _ in evals}
    assert collections.Counter(lab for _, lab in evals) == {lab: 5 for lab in LABELS}
