"""``PredictorConfig``: how the predictor runs a model, and the graph optimisation levels; stdlib only, so the
server's and the engines' configs can validate it without loading ONNX Runtime."""

from __future__ import annotations

from dataclasses import dataclass

from edgesent.config._base import ConfigBase, check_bool, check_choice, check_number
from edgesent.config.providers import PROVIDERS


# Intra-op threads a predictor may ask for: each is an OS thread with its own buffers, and 100,000 of them took a
# 2-core machine to 16 GB before it could be killed; no CPU a predictor runs on has more cores than this.
MAX_THREADS = 1024
# Texts per model call: far past any batch that fits in memory at 128 tokens, and low enough that the predictor's
# sort window (batch size x 16) stays a size itertools can count.
MAX_BATCH_SIZE = 65_536
# ONNX Runtime's graph optimisation levels by name (``edgesent.sessions`` maps them to ONNX Runtime's enum).
GRAPH_OPTIMIZATIONS = ("disable", "basic", "extended", "all")


@dataclass
class PredictorConfig(ConfigBase):
    """How the predictor runs a model; validated so a typo fails at load, not at the first prediction.

    Args:
        provider: ``"auto"`` (the export's runtime: OpenVINO for a model exported for it when the ``openvino``
            extra is installed; else CUDA when onnxruntime-gpu sees a GPU, else CPU), ``"cpu"``, ``"cuda"`` or
            ``"openvino"`` (OpenVINO on the CPU; needs the ``openvino`` extra).
        threads: intra-op threads, at most MAX_THREADS; None lets the runtime use every physical core.
        graph_optimization: ONNX Runtime graph optimisation level: disable, basic, extended or all.
        verify: check every file and the manifest against their hashes before loading.
        spinning: let ONNX Runtime's threads spin between calls (lowest latency for back-to-back calls;
            turn it off on a shared machine, where spinning threads steal cores from other work).
    """

    provider: str = "auto"
    threads: int | None = None
    graph_optimization: str = "all"
    verify: bool = True
    spinning: bool = True

    def __post_init__(self) -> None:
        check_choice("provider", self.provider, PROVIDERS)
        if self.threads is not None:
            check_number("threads", self.threads, low=1, high=MAX_THREADS, integer=True)
        check_choice("graph_optimization", self.graph_optimization, GRAPH_OPTIMIZATIONS)
        check_bool("verify", self.verify)
        check_bool("spinning", self.spinning)
