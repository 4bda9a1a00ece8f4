"""The parity gate: an exported ONNX model is verified only if it reproduces its PyTorch source.

Both models see the same tokenized batches, so any difference is the export's, not padding's or
the tokenizer's. The texts that decide are the given data, else the source model's own labelled sample of its
evaluation split (``parity_sample.jsonl``), else built-in probes; the probes always run too, for the edges a
real predictor meets (empty and whitespace-only text, one character, emoji, non-Latin scripts, text far over
the maximum length, a batch mixing short and long texts). With labels the accuracy of both models is compared
too. Every check is collected before judging, so one report names every
failure with its measured value and bound (optimum's ``_run_validation`` pattern).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from edgesent.agreement import agreement_verdict
from edgesent.artifacts import (
    KIND_ONNX,
    KIND_PYTORCH,
    LOGITS_OUTPUT,
    MANIFEST_NAME,
    ONNX_FILE_NAME,
    RUNTIME_ONNXRUNTIME,
    RUNTIME_OPENVINO,
    TASK_CLASSIFY,
    TOKENIZER_FILE_NAME,
    ModelDir,
    read_model_dir,
)
from edgesent.config.parity import DEFAULT_BATCH_SIZE, DEFAULT_THRESHOLDS, PRECISIONS, ParityConfig
from edgesent.data import encode_labels, load_dataset
from edgesent.errors import ConfigError, DataError, ModelError, ParityError
from edgesent.evaluate import iter_torch_logits, load_torch_model
from edgesent.flops import check_position_limit
from edgesent.metrics import softmax
from edgesent.runtime import predictor_batches
from edgesent.sessions import Session, create_session, require_openvino
from edgesent.tasks import get_task


logger = logging.getLogger(__name__)

# ParityConfig and its constants live in edgesent.config.parity; re-exported here for existing imports.
__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_THRESHOLDS",
    "PRECISIONS",
    "PROBE_TEXTS",
    "ParityConfig",
    "ParityReport",
    "TorchReference",
    "check_parity",
    "load_parity_texts",
]

PROBE_SOURCE = "probe texts"
_LONG_SENTENCE = "the service was slow and the food was cold but the staff were really friendly and kind"
PROBE_TEXTS: dict[str, str] = {
    "empty": "",
    "whitespace_only": " \t\n  ",
    "one_char": "a",
    "one_word": "great",
    "sentence": "The staff were friendly and the food arrived quickly.",
    "negation": "not bad at all, but I would not come back",
    "emoji": "loved it 😍🔥👍",
    "cjk": "这家酒店的服务非常好",
    "cyrillic": "обслуживание было ужасным",
    "arabic": "كانت الخدمة ممتازة",
    "accents": "Le service était très décevant, à éviter !",
    "digits_caps": "ORDER #4821 arrived 3 DAYS late!!!",
    "far_over_max_length": " ".join([_LONG_SENTENCE] * 64),  # ~1,000 words: truncation at any max_length
}
# check(name, measured value, bound, passed, message shown when it failed)
_Check = Callable[[str, float | None, float | None, bool, str], None]


@dataclass
class ParityReport:
    """The outcome of one parity run. ``checks`` lists every check with its value and bound.

    ``n_texts`` texts gave ``n_rows`` compared rows (probe texts run once in a mixed batch and once
    alone), truncated to ``max_length`` tokens. Accuracies are fractions, None without labels;
    ``accuracy_delta`` is onnx - torch.

    For span models (``task`` ``token-classification``) ``agreement`` is per token (each word's first
    sub-token), ``span_f1`` the exact-match F1 of the ONNX spans against the PyTorch spans, and the accuracies
    are the exact-match span F1 on the gold spans; differences are taken over the real (unpadded) tokens.
    For classification, ``agreement_verdict`` holds the sample-size-aware agreement rule's figures
    (``edgesent.agreement``: flips, near-tie flips, the confidence bound on the flip rate). ``runtime`` is the
    runtime that ran the ONNX model (``onnxruntime`` on the CPU, or ``openvino``): the one the export ships for.
    """

    passed: bool
    precision: str
    source: str
    n_texts: int
    n_rows: int
    max_length: int
    max_abs_diff: float | None
    mean_abs_diff: float | None
    agreement: float | None
    accuracy_torch: float | None
    accuracy_onnx: float | None
    accuracy_delta: float | None
    tokenizer_match: float | None
    thresholds: dict[str, float | None]
    checks: list[dict[str, Any]]
    disagreements: list[dict[str, Any]] = field(default_factory=list)
    onnx_file: str = ""
    task: str = TASK_CLASSIFY
    span_f1: float | None = None
    agreement_verdict: dict[str, Any] | None = None
    runtime: str = RUNTIME_ONNXRUNTIME

    @property
    def failures(self) -> list[str]:
        """One phrase per failed check, e.g. ``max_abs_diff 3.1e-01 > 1e-04``."""
        return [c["message"] for c in self.checks if not c["passed"]]

    def summary(self) -> str:
        """One line: the failures, or the headline figures when everything passed."""
        if not self.passed:
            return "; ".join(self.failures)
        parts = [f"max_abs_diff {self.max_abs_diff:.2e}", f"agreement {self.agreement:.2%}"]
        if self.span_f1 is not None:
            parts.append(f"span_f1 {self.span_f1:.4f}")
        if self.accuracy_torch is not None:
            parts.append(f"accuracy {self.accuracy_torch:.4f} -> {self.accuracy_onnx:.4f}")
        return ", ".join(parts)

    def raise_if_failed(self) -> None:
        """Raise ParityError naming every failed check with its measured value and bound."""
        if not self.passed:
            raise ParityError(
                f"parity failed for {self.onnx_file} ({self.precision}, {self.n_texts} texts from {self.source}): "
                f"{self.summary()}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "failures": self.failures}


def load_parity_texts(cfg: ParityConfig, labels: list[str]) -> tuple[list[str], list[str] | None, str]:
    """The texts (and raw labels) parity runs on: ``cfg.data`` or the probe texts.

    Empty rows of a data file are skipped rather than fatal: the probes cover empty text anyway.

    Returns:
        (texts, raw labels or None, a description of the source for the report).

    Raises:
        DataError: unreadable file, missing column, or labels the model does not know.
    """
    if cfg.data is None:
        return list(PROBE_TEXTS.values()), None, PROBE_SOURCE
    data = load_dataset(cfg.data, cfg.text_column, cfg.label_column, skip_empty=True)
    if cfg.label_column is None:
        return data.texts, None, str(cfg.data)
    encode_labels(data, labels)  # fails early, naming labels the model has never seen
    return data.texts, data.labels, str(cfg.data)


def class_ids(labels: list[str], n_texts: int, vocab: list[str]) -> np.ndarray:
    """(N,) class ids of raw label strings, one per text: the classification gold parity compares accuracy on.

    Raises:
        ConfigError: not one label per text. DataError: labels the model does not know.
    """
    if len(labels) != n_texts:
        raise ConfigError(f"labels: {len(labels)} labels for {n_texts} texts")
    index = {label: i for i, label in enumerate(vocab)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise DataError(f"labels {unknown!r} are not among the model's ({', '.join(vocab)})")
    return np.asarray([index[label] for label in labels])


def _max_prob_diff(onnx_logits: np.ndarray, torch_logits: np.ndarray, attention_mask: np.ndarray | None) -> float:
    """Largest absolute probability difference of one batch: over classes of (B, C) logits, or over classes of
    the real (unpadded) tokens of a tagger's (B, T, K) logits."""
    diff = np.abs(softmax(onnx_logits) - softmax(torch_logits))
    if diff.ndim == 3 and attention_mask is not None:
        diff = diff[attention_mask.astype(bool)]
    return float(diff.max(initial=0.0))


def _cannot_run(err: Exception, onnx_path: Path, runtime: str, check: _Check) -> None:
    reason = " ".join(str(err).split())[:300]
    check("runs", None, None, False, f"{runtime} cannot run {onnx_path.name}: {reason}")


def _open_session(onnx_path: Path, runtime: str, check: _Check) -> Session | None:
    """A CPU session of ``runtime`` on the model, or None after recording the failed ``runs`` check."""
    try:
        return create_session(onnx_path, "openvino" if runtime == RUNTIME_OPENVINO else "cpu")
    except Exception as err:  # noqa: BLE001 - runtimes raise their own exception types; all mean "cannot run"
        _cannot_run(err, onnx_path, runtime, check)
        return None


def _onnx_path(onnx_dir: Path, verify: bool = True) -> tuple[Path, dict[str, Any]]:
    """The ONNX file to judge and its manifest. An edgesent export is read through ``read_model_dir``, so a
    modified model, an edited manifest or label map, or a missing tokenizer is refused here as by ``predict``;
    a bare folder holding a ``model.onnx`` (another exporter's) is judged as it is."""
    onnx_dir = Path(onnx_dir)
    if not onnx_dir.is_dir():
        raise ModelError(f"{onnx_dir}: not a directory")
    if (onnx_dir / MANIFEST_NAME).is_file():
        model = read_model_dir(onnx_dir, kind=KIND_ONNX, verify=verify)
        return model.model_path, model.manifest
    path = onnx_dir / ONNX_FILE_NAME
    if not path.is_file():
        raise ModelError(f"{onnx_dir}: no {path.name}; is this an ONNX directory written by edgesent export?")
    return path, {}


class TorchReference:
    """PyTorch logits on a fixed set of tokenized batches, computed once and compared to many ONNX files.

    The export tries several int8 variants against one reference, so the (slow) PyTorch pass runs once.
    """

    def __init__(
        self,
        model_dir: Path,
        cfg: ParityConfig,
        texts: list[str] | None = None,
        labels: list[Any] | None = None,
    ) -> None:
        """Tokenize the texts and run the PyTorch model on them.

        Args:
            model_dir: The PyTorch source directory (checked with ``artifacts.read_model_dir``).
            cfg: Data, max_length and batch size; ``texts``/``labels`` given here take precedence.
            texts: Texts to compare on; None: ``cfg.data`` or the probe texts.
            labels: Gold per text, compared when given: raw label strings (classification), or lists of
                ``Span`` (span models; their span F1 is compared).
        """
        self.model_dir = Path(model_dir)
        self.cfg = cfg
        source = read_model_dir(self.model_dir, kind=KIND_PYTORCH, verify=cfg.verify)
        self.task = get_task(source.task)
        self.task_name = source.task
        self.labels_vocab: list[str] = list(source.labels)
        self.outputs_vocab: list[str] = list(source.outputs)  # what each output unit means (labels or tags)
        gold: Any
        if texts is None:
            texts, gold, self.source = self.task.parity_data(_with_model_sample(cfg, source), source)
        else:
            gold, self.source = labels, "given texts"
        if not texts:
            raise ConfigError("texts: parity needs at least one text")
        self.texts = list(texts)
        # the task's gold annotations (classification: class ids; spans: span lists), None without labels
        self.gold = self.task.parity_gold(gold, len(self.texts), source) if gold is not None else None
        self.max_length = int(cfg.max_length or source.max_length)
        self.tokenizer, model = load_torch_model(self.model_dir, source.task)
        check_position_limit(self.max_length, model.config, f"{self.model_dir}/config.json")
        self._forward(model)
        # Real texts decide; the probes still run beside them (shapes, finiteness, tokenizer, probabilities).
        self.probes: TorchReference | None = None
        if self.source != PROBE_SOURCE:
            probes = copy.copy(self)  # same model, tokenizer and settings; its own texts and batches
            probes.texts, probes.source, probes.gold, probes.probes = (
                list(PROBE_TEXTS.values()),
                PROBE_SOURCE,
                None,
                None,
            )
            probes._forward(model)
            self.probes = probes

    def _forward(self, model: Any) -> None:
        """Tokenize ``texts`` into the planned batches and keep PyTorch's logits of each."""
        self.rows = self._plan(probes=self.source == PROBE_SOURCE)
        self.batches: list[dict[str, np.ndarray]] = []  # (B, T) inputs per batch, fed to the ONNX model as is
        self.outputs: list[np.ndarray] = []  # logits per batch: (B, C), or (B, T, K) for a tagger
        for batch, logits in iter_torch_logits(
            model, self.tokenizer, self.texts, self.rows, self.max_length, desc=f"parity: pytorch, {self.source}"
        ):
            self.batches.append(batch)
            self.outputs.append(logits)
        self.row_text = np.concatenate([np.asarray(r) for r in self.rows])  # (R,) text index of each row

    @property
    def y_true(self) -> np.ndarray | None:
        """Classification: the gold class id of each text (None without labels)."""
        return self.gold

    @property
    def logits(self) -> np.ndarray:
        """Classification: (R, C) logits over all batches, R = rows."""
        return np.concatenate(self.outputs)

    @property
    def text_logits(self) -> np.ndarray:
        """Classification: (N, C) logits in text order, one row per text (what one-at-a-time runs compare to;
        batch-1 float differences are far below a flip)."""
        return np.concatenate([self.logits[np.flatnonzero(self.row_text == i)] for i in range(len(self.texts))])

    def _plan(self, probes: bool) -> list[list[int]]:
        """Text indices per batch: real texts in the predictor's own batches, probes mixed and then one by one.

        Real texts are batched as ``Predictor.predict`` batches them (length-sorted windows): dynamic int8 takes
        one activation range per batch, so the gate judges the batches a deployed model sees, not random ones
        padded to their longest text. The probes keep their mixed batch (short beside over-long, on purpose)
        and also run one by one: batch 1 without padding is the commonest runtime call.
        """
        n, size = len(self.texts), self.cfg.batch_size
        if not probes:
            return self._predictor_rows(self.texts)
        chunks = [list(range(start, min(start + size, n))) for start in range(0, n, size)]
        return chunks + [[i] for i in range(n)]

    def _predictor_rows(self, texts: list[str]) -> list[list[int]]:
        """Indices of ``texts`` per batch, as ``Predictor.predict`` batches them (length-sorted windows)."""
        encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        return predictor_batches([len(ids) for ids in encoded], self.cfg.batch_size)

    def alone_feeds(self, texts: list[str], inputs: list[str]) -> list[dict[str, np.ndarray]]:
        """One unpadded (1, T) int64 feed per text, with the model's input names ``inputs``: calibration data
        (padding would skew activation ranges) and the batch-1 call a deployed model sees most."""
        feeds = []
        for text in texts:
            encoded = self.tokenizer(text, truncation=True, max_length=self.max_length, return_tensors="np")
            feeds.append({name: encoded[name].astype(np.int64) for name in inputs})
        return feeds

    def batch_feeds(self, texts: list[str], inputs: list[str]) -> list[dict[str, np.ndarray]]:
        """(B, T) int64 feeds of ``texts`` in the predictor's padded batches (length-sorted windows of
        ``cfg.batch_size``): calibration for what dynamic int8 sees, whose one range per batch covers the padding
        positions too (activation smoothing calibrated on unpadded texts amplified channels that only padding
        fills, and raised the int8 error of padded batches above no smoothing at all)."""
        feeds = []
        for rows in self._predictor_rows(texts):
            encoded = self.tokenizer(
                [texts[i] for i in rows],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="np",
            )
            feeds.append({name: encoded[name].astype(np.int64) for name in inputs})
        return feeds

    def _tokenizer_match(self, tokenizer_path: Path) -> float:
        """Fraction of texts the exported tokenizer.json encodes to the same ids as the source tokenizer."""
        from tokenizers import Tokenizer

        exported = Tokenizer.from_file(str(tokenizer_path))
        exported.no_padding()
        exported.enable_truncation(self.max_length)
        texts = self.texts + (self.probes.texts if self.probes is not None else [])
        ours = [e.ids for e in exported.encode_batch(texts)]
        theirs = self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        return float(np.mean([a == list(b) for a, b in zip(ours, theirs, strict=True)]))

    def compare(
        self,
        onnx_path: Path,
        precision: str,
        tokenizer_path: Path | None = None,
        runtime: str = RUNTIME_ONNXRUNTIME,
    ) -> ParityReport:
        """Run ``onnx_path`` on the reference batches and judge the differences.

        Args:
            onnx_path: The ONNX model to verify.
            precision: Its precision; picks the default bounds.
            tokenizer_path: The tokenizer.json shipped with it, checked against the source tokenizer.
            runtime: What runs it: ``"onnxruntime"`` (default, CPUExecutionProvider) or ``"openvino"`` (OpenVINO
                on the CPU), the runtime the export ships for, so the gate verifies what the predictor will run.

        Returns:
            A ParityReport; ``passed`` is False when any check failed or the model could not run.
        """
        bounds = self.cfg.thresholds(precision, self.task_name)
        checks: list[dict[str, Any]] = []

        def check(name: str, value: float | None, bound: float | None, ok: bool, message: str) -> None:
            checks.append(
                {"name": name, "value": value, "bound": bound, "passed": ok, "message": None if ok else message}
            )

        # one session serves the real texts and the probes
        session = _open_session(onnx_path, runtime, check)
        onnx_outputs = self._run_onnx(session, onnx_path, check, runtime) if session is not None else None
        metrics: dict[str, Any] = dict.fromkeys(
            ("max_abs_diff", "mean_abs_diff", "agreement", "accuracy_torch", "accuracy_onnx", "accuracy_delta")
        )
        disagreements: list[dict[str, Any]] = []
        if onnx_outputs is not None:
            # the task's measure: logits and labels for classification, tags and spans for span models
            metrics, disagreements = self.task.judge_parity(self, self.outputs, onnx_outputs, bounds, check)
        if self.probes is not None and session is not None and onnx_outputs is not None:
            self.probes._judge_probes(session, onnx_path, runtime, bounds["probe_max_prob_diff"], check)
        tokenizer_match = None
        if tokenizer_path is not None and tokenizer_path.is_file():
            tokenizer_match = self._tokenizer_match(tokenizer_path)
            check(
                "tokenizer_match",
                tokenizer_match,
                1.0,
                tokenizer_match == 1.0,
                f"tokenizer: {tokenizer_path} encodes {1 - tokenizer_match:.1%} of texts differently "
                "from the source tokenizer",
            )
        report = ParityReport(
            passed=all(c["passed"] for c in checks),
            precision=precision,
            source=self.source,
            n_texts=len(self.texts),
            n_rows=len(self.row_text),
            max_length=self.max_length,
            **metrics,
            tokenizer_match=tokenizer_match,
            thresholds=bounds,
            checks=checks,
            disagreements=disagreements,
            onnx_file=str(onnx_path),
            task=self.task_name,
            runtime=runtime,
        )
        logger.info("parity %s: %s", "passed" if report.passed else "FAILED", report.summary())
        return report

    def _run_onnx(self, session: Session, onnx_path: Path, check: _Check, runtime: str) -> list[np.ndarray] | None:
        try:
            names = [i.name for i in session.get_inputs()]
            missing = [n for n in names if n not in self.batches[0]]
            if missing:
                raise ValueError(f"inputs {missing} are not produced by the tokenizer")
            if LOGITS_OUTPUT not in [o.name for o in session.get_outputs()]:
                raise ValueError(f"no output named '{LOGITS_OUTPUT}'")
            outputs = [
                session.run([LOGITS_OUTPUT], {n: batch[n] for n in names})[0]
                for batch in tqdm(self.batches, desc="parity: onnx", disable=None, leave=False)
            ]
        except Exception as err:  # noqa: BLE001 - runtimes raise their own exception types; all mean "cannot run"
            _cannot_run(err, onnx_path, runtime, check)
            return None
        outputs = [o.astype(np.float32) for o in outputs]  # (B, C') or (B, T, K') per batch
        bad = next(((o.shape, t.shape) for o, t in zip(outputs, self.outputs) if o.shape != t.shape), None)
        if bad is not None and all(o.ndim == 2 for o in outputs + self.outputs):  # classifiers: the whole (R, C)
            bad = (np.concatenate(outputs).shape, self.logits.shape)
        check("output_shape", None, None, bad is None, f"logits shape {bad and bad[0]} != PyTorch's {bad and bad[1]}")
        if bad is not None:
            return None
        nonfinite = sum(int((~np.isfinite(o)).any(-1).sum()) for o in outputs)
        check("finite", None, None, not nonfinite, f"non-finite logits in {nonfinite} rows")
        return outputs

    def _judge_probes(
        self, session: Session, onnx_path: Path, runtime: str, bound: float | None, check: _Check
    ) -> None:
        """The probe texts beside real data: the model runs on them (mixed batch and one by one), with the same
        shapes as PyTorch's, finite outputs, and no probability moved by more than ``bound``. Their labels are
        not compared: out-of-domain edge cases say little about agreement."""

        def probe_check(name: str, value: float | None, limit: float | None, ok: bool, message: str) -> None:
            check(f"probes_{name}", value, limit, ok, f"probe texts: {message}")

        outputs = self._run_onnx(session, onnx_path, probe_check, runtime)
        if outputs is None:
            return
        worst = max(
            _max_prob_diff(o, t, b.get("attention_mask")) for o, t, b in zip(outputs, self.outputs, self.batches)
        )
        check(
            "probes_max_prob_diff",
            worst,
            bound,
            bound is None or worst <= bound,
            f"probe texts: a probability moved by {worst:.4f} > {bound} against PyTorch",
        )

    def judge_classes(
        self, onnx_outputs: list[np.ndarray], bounds: dict[str, float | None], check: _Check
    ) -> tuple[dict, list]:
        """The classification measure: logit differences, label agreement and, with labels, accuracy."""
        onnx_logits = np.concatenate(onnx_outputs)  # (R, C)
        torch_logits = self.logits  # (R, C)
        diff = np.abs(onnx_logits - torch_logits)  # (R, C)
        pred_torch, pred_onnx = torch_logits.argmax(-1), onnx_logits.argmax(-1)  # (R,)
        agree = pred_torch == pred_onnx
        rows = np.arange(len(agree))
        # How far PyTorch preferred its label over the one ONNX picked: near 0 means the source model itself
        # was undecided there (a fresh head), so a flip says little about the export.
        margin = torch_logits[rows, pred_torch] - torch_logits[rows, pred_onnx]  # (R,)
        metrics: dict[str, Any] = {
            "max_abs_diff": float(diff.max()),
            "mean_abs_diff": float(diff.mean()),
            "agreement": float(agree.mean()),
            "accuracy_torch": None,
            "accuracy_onnx": None,
            "accuracy_delta": None,
        }
        bound = bounds["max_abs_diff"]
        if bound is not None:
            check(
                "max_abs_diff",
                metrics["max_abs_diff"],
                bound,
                metrics["max_abs_diff"] <= bound,
                f"max_abs_diff {metrics['max_abs_diff']:.2e} > {bound:.0e}",
            )
        bound = bounds["min_agreement"]
        # The rule of edgesent.agreement: flips on near-ties are reported, not judged, and the bound accounts for
        # the sample size; each text counts once (probe texts run twice). With labels the accuracy drop below is
        # the primary check (ParityConfig.labels_decide), unless the bound was set or is fp32's exact 1.0.
        verdict = agreement_verdict(
            torch_logits,
            onnx_logits,
            None if self.y_true is None else self.y_true[self.row_text],
            min_agreement=bound,
            max_accuracy_drop=bounds["max_accuracy_drop"] or 0.0,
            near_tie_margin=bounds["near_tie_margin"] or 0.0,
            groups=self.row_text,
        )
        metrics["agreement_verdict"] = verdict.to_dict()
        check(
            "agreement",
            metrics["agreement"],
            bound,
            verdict.agreement_passed or (self.y_true is not None and self.cfg.labels_decide("min_agreement", bound)),
            f"agreement {metrics['agreement']:.4f} {'<' if metrics['agreement'] < bound else '>='} {bound:.4f} "
            f"({int((~agree).sum())} of {len(agree)} rows changed their predicted label; PyTorch's margin there "
            f"<= {margin.max(initial=0.0):.3g} logits; {verdict.message()})",
        )
        if self.y_true is not None:
            y_true = self.y_true[self.row_text]
            acc_torch, acc_onnx = float((pred_torch == y_true).mean()), float((pred_onnx == y_true).mean())
            metrics.update(accuracy_torch=acc_torch, accuracy_onnx=acc_onnx, accuracy_delta=acc_onnx - acc_torch)
            bound = bounds["max_accuracy_drop"]
            if bound is not None:
                drop = acc_torch - acc_onnx
                check(
                    "accuracy_drop",
                    drop,
                    bound,
                    drop <= bound + 1e-12,
                    f"accuracy drop {drop:.4f} > {bound:.4f} (torch {acc_torch:.4f}, onnx {acc_onnx:.4f})",
                )
        disagreements = [
            {
                "text": self.texts[self.row_text[r]][:80],
                "torch": self.outputs_vocab[pred_torch[r]],
                "onnx": self.outputs_vocab[pred_onnx[r]],
                "torch_margin": float(margin[r]),
            }
            for r in np.flatnonzero(~agree)[:5]
        ]
        return metrics, disagreements


def _with_model_sample(cfg: ParityConfig, source: ModelDir) -> ParityConfig:
    """``cfg`` with the source model's own parity sample as its data when none was given (and the model has one).

    Real, labelled, in-domain texts decide label agreement; the probe texts would not (a fresh or pruned model
    sits on near-ties for an empty string or an emoji).
    """
    sample = source.manifest.get("parity_sample")
    if cfg.data is not None or not isinstance(sample, dict) or not isinstance(sample.get("file"), str):
        return cfg
    logger.info("parity: no --parity-data; using the model's own sample of its evaluation split (%s)", sample["file"])
    return replace(cfg, data=source.path / sample["file"], text_column="text", label_column="label")


def check_parity(
    model_dir: str | Path,
    onnx_dir: str | Path,
    cfg: ParityConfig | None = None,
    texts: list[str] | None = None,
    labels: list[Any] | None = None,
) -> ParityReport:
    """Compare an exported ONNX directory with its PyTorch source on the same tokenized batches.

    The ONNX model runs on the runtime its manifest records (``onnxruntime``, or ``openvino``).

    Args:
        model_dir: The PyTorch model directory the export came from.
        onnx_dir: The ONNX directory (``model.onnx``, or the manifest's ``onnx_file``).
        cfg: Data and bounds (default ParityConfig(): the model's parity sample, else the probe texts; bounds of the
            manifest's precision).
        texts: Texts to use instead of ``cfg.data``/the probes.
        labels: Raw label strings for ``texts``, to compare accuracy too.

    Returns:
        The ParityReport. Failed checks do not raise here; call ``report.raise_if_failed()``.

    Raises:
        ModelError: either directory unusable. DataError: unusable data. ConfigError: bad texts/labels.
        MissingDependencyError: an export for OpenVINO without the ``openvino`` extra.
    """
    cfg = cfg or ParityConfig()
    onnx_path, manifest = _onnx_path(Path(onnx_dir), cfg.verify)
    if cfg.max_length is None and manifest.get("max_length"):
        cfg = ParityConfig.from_dict({**cfg.to_dict(), "max_length": manifest["max_length"]})
    precision = cfg.precision or manifest.get("precision", "fp32")
    runtime = manifest.get("runtime") or RUNTIME_ONNXRUNTIME
    if runtime == RUNTIME_OPENVINO:
        require_openvino(f"{onnx_dir} (exported for OpenVINO)")
    reference = TorchReference(Path(model_dir), cfg, texts, labels)
    return reference.compare(onnx_path, precision, onnx_path.parent / TOKENIZER_FILE_NAME, runtime)
