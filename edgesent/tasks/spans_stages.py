"""The span task's answers to the stages: training data and encoding, metrics, evaluation and the parity measure.

The light core (tags, alignment, decoding, metrics) is ``edgesent.tasks.spans`` and the readers are
``edgesent.tasks.spans_data``; this module ties them to the stages. It is importable without torch: transformers,
torch and onnxruntime are imported inside the methods that need them, so evaluating an ONNX span model needs
neither torch nor transformers.

- finetune: BIO tags from the span labels (``tag_names``), each word's tag on its first sub-token and -100
  elsewhere (``align_labels``), ``DataCollatorForTokenClassification``, per-epoch span metrics from the tagged
  words (``word_span_metrics``), the best epoch by exact-match span F1.
- evaluate: spans decoded from the model's tags in character offsets (``decode_spans``) against the gold spans
  (``span_metrics``), for PyTorch directories (through ``evaluate.iter_torch_logits``) and ONNX ones (through
  :func:`onnx_spans`, i.e. the torch-free ``Predictor``).
- parity: per-token tag agreement and span agreement of ONNX with PyTorch on the same batches, logit
  differences over the real tokens, and with gold spans the drop of the span F1.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgesent.artifacts import KIND_ONNX, TASK_SPANS
from edgesent.errors import ConfigError, DataError, ModelError
from edgesent.metrics import softmax
from edgesent.tasks import SPANS, ParityCheck, Task, stage_module
from edgesent.tasks.spans import (
    IGNORE_INDEX,
    Span,
    align_labels,
    decode_spans,
    extend_cut_word,
    first_token_mask,
    span_agreement,
    span_metrics,
    tag_ids,
    tag_names,
    word_span_metrics,
)
from edgesent.tasks.spans_data import (
    DEMO_SPANS_EVAL,
    DEMO_SPANS_TRAIN,
    SpanDataset,
    load_span_dataset,
    read_span_records,
    split_span_dataset,
)


if TYPE_CHECKING:
    from edgesent.artifacts import ModelDir
    from edgesent.config.parity import ParityConfig
    from edgesent.config.train import TrainConfig


logger = logging.getLogger(__name__)

ENCODE_CHUNK = 1024  # texts tokenized per call
# The per-epoch scalars the Trainer logs (as eval_<name>); "f1" picks the best epoch.
EPOCH_SCALARS = ("precision", "recall", "f1", "span_f1", "label_accuracy", "label_macro_f1")


def check_known_labels(data: SpanDataset, labels: Sequence[str], what: str) -> None:
    """DataError naming span labels of ``data`` outside ``labels`` (a model cannot tag what it never learned)."""
    unknown = sorted(set(data.labels()) - set(labels))
    if unknown:
        raise DataError(
            f"{data.path}: span label(s) {', '.join(unknown)} are not among {what} ({', '.join(labels)}); "
            f"leave them out with --drop-label {unknown[0]}"
        )


class SpanMetricsRecorder:
    """``compute_metrics`` for a tagger: span scores of the tagged words per epoch, full reports kept."""

    def __init__(self, tags: list[str]) -> None:
        self.tags = tags
        self.reports: list[dict[str, Any]] = []

    def __call__(self, eval_pred: Any) -> dict[str, float]:
        # (N, T, K) logits padded with -100 across batches, (N, T) tags with -100 where no tag is read
        logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
        report = word_span_metrics(logits, eval_pred.label_ids, self.tags)
        self.reports.append(report)
        scalars = {name: float(report[name]) for name in EPOCH_SCALARS}
        scalars.update({f"f1_{label}": m["f1"] for label, m in report["per_label"].items()})
        return scalars


def encode_spans(tokenizer: Any, data: SpanDataset, labels: list[str], max_length: int) -> Any:
    """Tokenize texts (truncated, unpadded) with a tag id on each word's first sub-token, -100 elsewhere.

    Raises:
        ModelError: a slow tokenizer (no character offsets or word ids to align the spans with).
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(
            "span tagging needs a fast tokenizer (tokenizer.json) for character offsets; this base has a slow one"
        )
    index = tag_ids(tag_names(labels))
    features: list[dict[str, Any]] = []
    for start in range(0, len(data.examples), ENCODE_CHUNK):
        chunk = data.examples[start : start + ENCODE_CHUNK]
        encoded = tokenizer(
            [ex.text for ex in chunk], truncation=True, max_length=max_length, return_offsets_mapping=True
        )
        keys = [key for key in encoded if key != "offset_mapping"]
        for i, example in enumerate(chunk):
            row = {key: np.asarray(encoded[key][i], dtype=np.int32) for key in keys}
            tags = align_labels(encoded["offset_mapping"][i], encoded.word_ids(i), example.spans, index)
            features.append({**row, "labels": tags})
    return stage_module("train_inputs").EncodedTexts(features)


def torch_spans(
    model: Any, tokenizer: Any, texts: Sequence[str], tags: Sequence[str], max_length: int, batch_size: int = 64
) -> list[list[Span]]:
    """Spans per text from a PyTorch tagger, in input order, batched by length so padding stays small."""
    iter_torch_logits = stage_module("evaluate").iter_torch_logits
    order = np.argsort([len(t) for t in texts], kind="stable")
    batches = [order[start : start + batch_size].tolist() for start in range(0, len(texts), batch_size)]
    result: list[list[Span]] = [[] for _ in texts]
    for rows, (_, logits) in zip(batches, iter_torch_logits(model, tokenizer, texts, batches, max_length)):
        # the same call iter_torch_logits made, for the offsets and word ids of the padded (B, T) batch
        encoded = tokenizer(
            [texts[i] for i in rows],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_offsets_mapping=True,
        )
        for j, i in enumerate(rows):
            offsets = encoded["offset_mapping"][j]
            if sum(encoded["attention_mask"][j]) >= max_length:  # maybe truncated: as the predictor, whole words
                whole = tokenizer(texts[i], return_offsets_mapping=True, verbose=False)
                offsets = extend_cut_word(offsets, encoded.word_ids(j), zip(whole.word_ids(), whole["offset_mapping"]))
            result[i] = decode_spans(texts[i], softmax(logits[j]), offsets, encoded.word_ids(j), tags)
    return result


def onnx_spans(model: ModelDir, texts: Sequence[str], batch_size: int = 64) -> list[list[Span]]:
    """Spans per text from an exported span model, through the torch-free ``Predictor`` (the one way to run
    an exported model). The directory was verified when ``model`` was read."""
    from edgesent.runtime import Predictor

    predictor = Predictor.load(model.path, provider="cpu", verify=False)
    return [[Span(**span) for span in p.spans or []] for p in predictor.predict(list(texts), batch_size=batch_size)]


def _format_spans(spans: Sequence[Span]) -> list[str]:
    return [f"{s.text}:{s.label}" for s in spans]


class SpanTask(Task):
    """Spans by token tagging (aspects with their polarity): BIO tags, span metrics, span parity."""

    name = SPANS
    hf_task = TASK_SPANS
    best_metric = "f1"
    epoch_columns = ("precision", "recall", "f1", "span_f1", "label_accuracy")
    summary_keys = (
        "n_texts",
        "n_gold",
        "n_pred",
        "precision",
        "recall",
        "f1",
        "span_precision",
        "span_recall",
        "span_f1",
        "n_boundary_matches",
        "label_accuracy",
        "label_macro_f1",
        "label_report",
        "per_label",
        "labels",
    )

    def output_names(self, labels: Sequence[str]) -> list[str]:
        return tag_names(labels)

    def manifest_fields(self, labels: Sequence[str]) -> dict[str, Any]:
        return {"tags": tag_names(labels)}

    def sample(self, data: Any, size: int, seed: int) -> Any:
        return split_span_dataset(data, size / len(data), seed)[1]

    def records(self, data: Any) -> list[dict[str, Any]]:
        return [
            {"text": ex.text, "spans": [{"start": s.start, "end": s.end, "label": s.label} for s in ex.spans]}
            for ex in data.examples
        ]

    def load_training_data(self, cfg: TrainConfig) -> tuple[Any, Any, list[str]]:
        train_path: Path
        eval_path: Path | None
        if cfg.data is None:
            train_path, eval_path = DEMO_SPANS_TRAIN, cfg.eval_data or DEMO_SPANS_EVAL
        else:
            train_path, eval_path = cfg.data, cfg.eval_data
        train_data = load_span_dataset(train_path, cfg.text_column, cfg.drop_labels)
        labels = train_data.labels()
        if eval_path is None:
            train_data, eval_data = split_span_dataset(train_data, cfg.eval_split, cfg.seed)
        else:
            eval_data = load_span_dataset(eval_path, cfg.text_column, cfg.drop_labels)
        check_known_labels(eval_data, labels, f"the training data's labels ({train_path})")
        return train_data, eval_data, labels

    def load_labelled(self, path: Path, labels: Sequence[str], options: dict[str, Any]) -> Any:
        data = load_span_dataset(path, options["text_column"], options["drop_labels"])
        check_known_labels(data, labels, "the model's labels")
        return data

    def read_texts(self, path: Path, text_column: str) -> list[str]:
        return [ex.text for ex in read_span_records(path, text_column)]

    def model_class(self) -> Any:
        from transformers import AutoModelForTokenClassification

        return AutoModelForTokenClassification

    def encode(self, tokenizer: Any, data: Any, labels: list[str], max_length: int) -> Any:
        return encode_spans(tokenizer, data, labels, max_length)

    def collator(self, tokenizer: Any) -> Any:
        from transformers import DataCollatorForTokenClassification

        return DataCollatorForTokenClassification(tokenizer, label_pad_token_id=IGNORE_INDEX)

    def metrics_recorder(self, labels: list[str]) -> Any:
        return SpanMetricsRecorder(tag_names(labels))

    def evaluate(self, model: ModelDir, data_path: Path, options: dict[str, Any]) -> dict[str, Any]:
        data = self.load_labelled(data_path, model.labels, options)
        predicted = self.predict_spans(model, data.texts, options["batch_size"])
        report = span_metrics([ex.spans for ex in data.examples], predicted, list(model.labels))
        return {**report, "data": data.fingerprint()}

    def predict_spans(self, model: ModelDir, texts: Sequence[str], batch_size: int = 64) -> list[list[Span]]:
        """Spans per text from a PyTorch or ONNX span model directory."""
        if model.kind == KIND_ONNX:
            return onnx_spans(model, texts, batch_size)
        from edgesent._imports import require_train_extra

        require_train_extra("evaluate")
        tokenizer, torch_model = stage_module("evaluate").load_torch_model(model.path, model.task)
        return torch_spans(torch_model, tokenizer, texts, list(model.outputs), model.max_length, batch_size)

    def torch_report(
        self, model: Any, tokenizer: Any, data: Any, labels: list[str], batch_size: int, max_length: int
    ) -> dict[str, Any]:
        predicted = torch_spans(model.eval(), tokenizer, data.texts, tag_names(labels), max_length, batch_size)
        return span_metrics([ex.spans for ex in data.examples], predicted, labels)

    def format_report(self, report: dict[str, Any]) -> str:
        format_table = stage_module("cli._format").format_table
        head = (
            f"texts={report['n_texts']}  gold={report['n_gold']}  predicted={report['n_pred']}  "
            f"precision={report['precision']:.4f}  recall={report['recall']:.4f}  f1={report['f1']:.4f}\n"
            f"span_f1={report['span_f1']:.4f} (boundaries only)  on {report['n_boundary_matches']} spans found: "
            f"label_accuracy={report['label_accuracy']:.4f}  label_macro_f1={report['label_macro_f1']:.4f}"
        )
        per_label = format_table(
            ["label", "precision", "recall", "f1", "support"],
            [[label, m["precision"], m["recall"], m["f1"], m["support"]] for label, m in report["per_label"].items()],
        )
        return f"{head}\n\n{per_label}"

    def logits_axes(self) -> dict[int, str]:
        return {0: "batch_size", 1: "sequence_length"}

    def parity_data(self, cfg: ParityConfig, model: ModelDir) -> tuple[list[str], Any, str]:
        if cfg.data is None:
            return list(stage_module("parity").PROBE_TEXTS.values()), None, "probe texts"
        data = load_span_dataset(cfg.data, cfg.text_column, require_spans=False)
        if not any(ex.spans for ex in data.examples):  # nothing gold to score: PyTorch's spans decide alone
            logger.info("parity: %s has no gold spans; the ONNX spans are judged against PyTorch's only", cfg.data)
            return data.texts, None, str(cfg.data)
        return data.texts, [ex.spans for ex in data.examples], str(cfg.data)

    def parity_gold(self, gold: Any, n_texts: int, model: ModelDir) -> Any:
        if len(gold) != n_texts:
            raise ConfigError(f"labels: {len(gold)} span lists for {n_texts} texts")
        known = set(model.labels)
        kept = [[s for s in spans if s.label in known] for spans in gold]
        dropped = sum(map(len, gold)) - sum(map(len, kept))
        if dropped:  # e.g. SemEval's "conflict": the model was trained without it, so it cannot count against it
            logger.info("parity: %d gold span(s) with labels the model does not know left out", dropped)
        return kept

    def judge_parity(
        self,
        reference: Any,
        torch_outputs: list[Any],
        onnx_outputs: list[Any],
        bounds: dict[str, float | None],
        check: ParityCheck,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        tags = reference.outputs_vocab
        diff_max, diff_sum, diff_n = 0.0, 0.0, 0
        torch_tags, onnx_tags = [], []  # tag ids at each word's first sub-token
        torch_rows: list[list[Span]] = []
        onnx_rows: list[list[Span]] = []
        texts: list[str] = []
        for rows, t_logits, o_logits in zip(reference.rows, torch_outputs, onnx_outputs):  # (B, T, K) each
            batch_texts = [reference.texts[i] for i in rows]
            # the same call iter_torch_logits made, for the offsets and word ids of the padded batch
            encoded = reference.tokenizer(
                batch_texts,
                padding=True,
                truncation=True,
                max_length=reference.max_length,
                return_offsets_mapping=True,
            )
            real = np.asarray(encoded["attention_mask"], dtype=bool)  # (B, T)
            diff = np.abs(o_logits - t_logits)[real]  # (real tokens, K)
            diff_max = max(diff_max, float(diff.max(initial=0.0)))
            diff_sum, diff_n = diff_sum + float(diff.sum()), diff_n + diff.size
            t_ids, o_ids = t_logits.argmax(-1), o_logits.argmax(-1)  # (B, T)
            for j, text in enumerate(batch_texts):
                word_ids, offsets = encoded.word_ids(j), encoded["offset_mapping"][j]
                first = np.asarray(first_token_mask(word_ids), dtype=bool)
                torch_tags.append(t_ids[j][first])
                onnx_tags.append(o_ids[j][first])
                torch_rows.append(decode_spans(text, t_ids[j], offsets, word_ids, tags))
                onnx_rows.append(decode_spans(text, o_ids[j], offsets, word_ids, tags))
                texts.append(text)
        ref_tags, cand_tags = np.concatenate(torch_tags), np.concatenate(onnx_tags)
        agreement = float((ref_tags == cand_tags).mean()) if ref_tags.size else 1.0
        spans = span_agreement(torch_rows, onnx_rows)
        metrics: dict[str, Any] = {
            "max_abs_diff": diff_max,
            "mean_abs_diff": diff_sum / diff_n if diff_n else 0.0,
            "agreement": agreement,
            "span_f1": spans["span_f1"],
            "accuracy_torch": None,
            "accuracy_onnx": None,
            "accuracy_delta": None,
        }
        bound = bounds["max_abs_diff"]
        if bound is not None:
            check("max_abs_diff", diff_max, bound, diff_max <= bound, f"max_abs_diff {diff_max:.2e} > {bound:.0e}")
        bound = bounds["min_agreement"]
        assert bound is not None
        # As for classification (edgesent.agreement): with gold spans, the drop of the span F1 on them is the
        # primary check and agreement with PyTorch is reported, not gating, unless the bound was set or is exact.
        has_gold = reference.gold is not None
        flips = int((ref_tags != cand_tags).sum())
        check(
            "agreement",
            agreement,
            bound,
            agreement >= bound or (has_gold and reference.cfg.labels_decide("min_agreement", bound)),
            f"token agreement {agreement:.4f} < {bound:.4f} ({flips} of {ref_tags.size} words changed their tag)",
        )
        bound = bounds["min_span_f1"]
        assert bound is not None
        check(
            "span_f1",
            spans["span_f1"],
            bound,
            spans["span_f1"] >= bound or (has_gold and reference.cfg.labels_decide("min_span_f1", bound)),
            f"span_f1 {spans['span_f1']:.4f} < {bound:.4f} (ONNX spans against PyTorch's: {spans['n_reference']} "
            f"PyTorch spans, {spans['n_candidate']} ONNX spans, {spans['texts_identical']:.1%} of rows identical)",
        )
        if reference.gold is not None:
            gold = [reference.gold[i] for i in reference.row_text]
            f1_torch = float(span_metrics(gold, torch_rows)["f1"])
            f1_onnx = float(span_metrics(gold, onnx_rows)["f1"])
            metrics.update(accuracy_torch=f1_torch, accuracy_onnx=f1_onnx, accuracy_delta=f1_onnx - f1_torch)
            bound = bounds["max_accuracy_drop"]
            if bound is not None:
                drop = f1_torch - f1_onnx
                check(
                    "accuracy_drop",
                    drop,
                    bound,
                    drop <= bound + 1e-12,
                    f"span F1 drop {drop:.4f} > {bound:.4f} (torch {f1_torch:.4f}, onnx {f1_onnx:.4f})",
                )
        disagreements = [
            {"text": text[:80], "torch": _format_spans(t), "onnx": _format_spans(o)}
            for text, t, o in zip(texts, torch_rows, onnx_rows)
            if sorted((s.start, s.end, s.label) for s in t) != sorted((s.start, s.end, s.label) for s in o)
        ][:5]
        return metrics, disagreements
