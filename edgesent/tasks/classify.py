"""The classification task: one label per text. It wraps what ``train``, ``evaluate`` and ``parity`` do for it.

Importable without torch: the heavy modules are imported inside the methods that need them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgesent.artifacts import TASK_CLASSIFY
from edgesent.tasks import CLASSIFY, ParityCheck, Task, stage_module


if TYPE_CHECKING:
    from edgesent.artifacts import ModelDir
    from edgesent.config.parity import ParityConfig
    from edgesent.config.train import TrainConfig


class ClassifyTask(Task):
    """Text classification: a label per text, accuracy and macro-F1, parity on logits and labels."""

    name = CLASSIFY
    hf_task = TASK_CLASSIFY
    best_metric = "macro_f1"
    epoch_columns = ("accuracy", "macro_f1")
    summary_keys = ("accuracy", "macro_f1", "per_class", "confusion_matrix", "n", "labels")

    def output_names(self, labels: Sequence[str]) -> list[str]:
        return list(labels)

    def load_training_data(self, cfg: TrainConfig) -> tuple[Any, Any, list[str]]:
        return stage_module("train_inputs").load_training_data(cfg)

    def sample(self, data: Any, size: int, seed: int) -> Any:
        from edgesent.data import stratified_sample

        return stratified_sample(data, size, seed)  # every class keeps its share; a rare class never refuses

    def records(self, data: Any) -> list[dict[str, Any]]:
        return [{"text": text, "label": label} for text, label in zip(data.texts, data.labels)]

    def load_labelled(self, path: Path, labels: Sequence[str], options: dict[str, Any]) -> Any:
        return stage_module("evaluate").load_labelled_texts(path, labels, options)

    def read_texts(self, path: Path, text_column: str) -> list[str]:
        from edgesent.data import load_dataset

        return load_dataset(path, text_column, None, skip_empty=True).texts

    def model_class(self) -> Any:
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification

    def encode(self, tokenizer: Any, data: Any, labels: list[str], max_length: int) -> Any:
        return stage_module("train_inputs").encode_texts(tokenizer, data, labels, max_length)

    def collator(self, tokenizer: Any) -> Any:
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer)

    def metrics_recorder(self, labels: list[str]) -> Any:
        return stage_module("train").MetricsRecorder(labels)

    def evaluate(self, model: ModelDir, data_path: Path, options: dict[str, Any]) -> dict[str, Any]:
        return stage_module("evaluate").classification_report(model, data_path, options)

    def torch_report(
        self, model: Any, tokenizer: Any, data: Any, labels: list[str], batch_size: int, max_length: int
    ) -> dict[str, Any]:
        return stage_module("evaluate").classification_torch_report(
            model, tokenizer, data, labels, batch_size, max_length
        )

    def format_report(self, report: dict[str, Any]) -> str:
        return stage_module("cli._format").format_metrics(report)

    def logits_axes(self) -> dict[int, str]:
        return {0: "batch_size"}

    def parity_data(self, cfg: ParityConfig, model: ModelDir) -> tuple[list[str], Any, str]:
        return stage_module("parity").load_parity_texts(cfg, list(model.labels))

    def parity_gold(self, gold: Any, n_texts: int, model: ModelDir) -> Any:
        return stage_module("parity").class_ids(list(gold), n_texts, list(model.labels))

    def judge_parity(
        self,
        reference: Any,
        torch_outputs: list[Any],
        onnx_outputs: list[Any],
        bounds: dict[str, float | None],
        check: ParityCheck,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        return reference.judge_classes(onnx_outputs, bounds, check)
