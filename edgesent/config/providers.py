"""The providers a predictor can run a model on, and the runtimes an export can be built for; stdlib only.

One home for the choice lists of ``Predictor.load(provider=...)``, ``edgesent predict/serve/bench --provider``,
the server's and the engines' configs, and ``edgesent export --runtime``, so a new runtime is added once.
"""

from __future__ import annotations

from edgesent.artifacts import RUNTIME_ONNXRUNTIME, RUNTIME_OPENVINO, RUNTIMES


__all__ = ["OPENVINO_EXTRA", "PROVIDERS", "RUNTIMES", "RUNTIME_CHOICES", "RUNTIME_ONNXRUNTIME", "RUNTIME_OPENVINO"]

AUTO = "auto"
# `edgesent export --runtime`: one runtime, or auto (build both int8 candidates, keep the fastest that passes).
RUNTIME_CHOICES = (*RUNTIMES, AUTO)
# `auto`: the manifest's runtime (OpenVINO when it records openvino and the extra is installed), else ONNX
# Runtime on CUDA when onnxruntime-gpu sees a GPU, else on the CPU; `openvino`: OpenVINO on the CPU.
PROVIDERS = (AUTO, "cpu", "cuda", RUNTIME_OPENVINO)
OPENVINO_EXTRA = "pip install 'edgesent[openvino]'"
