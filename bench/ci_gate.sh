#!/usr/bin/env bash
# CI latency gate, run by .ci/run after the tests: builds its own model, then enforces bench/gates.toml.
#
#   1. a MiniLM-L6 classifier fine-tuned with the default recipe on the built-in demo data (about a minute).
#      Latency does not depend on the weights, but parity does: a barely trained head sits on near-ties that
#      int8 rounding flips, so the export's parity gate needs a model that has learned its task.
#   2. its fp32 and dynamic-int8 ONNX exports (`edgesent export`, parity-checked as usual).
#   3. `edgesent bench` on the three, interleaved, one thread, with the gates; real texts (the demo eval set)
#      for the end-to-end rule. Only the cells the rules need are measured.
#
# Writes bench/out/ci_gate.json (the full `--json` result) and exits non-zero when a gate fails; the failing
# rules, their measured figures and bounds are on stderr. About 2-3 minutes on a shared 2-core machine.
#
# Environment (all optional): EDGESENT_GATE_BASE  base model for finetune (default minilm-l6)
#                             EDGESENT_GATE_RUNS  timed runs per variant and cell (default 150)
#                             EDGESENT_GATE_OUT   output directory (default bench/out)
set -euo pipefail

cd "$(dirname "$0")/.."
base="${EDGESENT_GATE_BASE:-minilm-l6}"
runs="${EDGESENT_GATE_RUNS:-150}"
out="${EDGESENT_GATE_OUT:-bench/out}"
models="$out/gate-models"
mkdir -p "$models"

# Build steps log to files (progress bars and all); on failure the log's tail is shown.
logged() {
    local log="$out/$1.log"
    shift
    "$@" > "$log" 2>&1 || { echo "latency gate: '$*' failed; last lines of $log:" >&2; tail -n 20 "$log" >&2; exit 2; }
}

echo "== latency gate: building $models/torch-fp32 from $base (demo data), exporting fp32 and int8 ONNX"
logged finetune edgesent finetune --base "$base" --out "$models/torch-fp32" --max-length 64 --overwrite
logged export-fp32 edgesent export "$models/torch-fp32" --out "$models/onnx-fp32" --overwrite
logged export-int8 edgesent export "$models/torch-fp32" --int8 --out "$models/int8" --overwrite

texts="$(python -c 'from edgesent.demo import DEMO_EVAL; print(DEMO_EVAL)')"
echo "== latency gate: edgesent bench --gate bench/gates.toml ($runs runs per cell, texts from $texts)"
status=0
edgesent bench "$models/torch-fp32" "$models/onnx-fp32" "$models/int8" \
    --name torch-fp32 --name onnx-fp32 --name int8 --reference torch-fp32 \
    --gate bench/gates.toml --data "$texts" --warmup 20 --runs "$runs" \
    --json > "$out/ci_gate.json" || status=$?

if [ -s "$out/ci_gate.json" ]; then
    python - "$out/ci_gate.json" <<'EOF'
import json, sys

doc = json.load(open(sys.argv[1]))
for gate in doc["gates"]:
    print(f"  {gate['status'].upper():4}  {gate['name']}: {gate['message']}")
print(f"  machine: {doc['machine']['cpu_model']}, {doc['machine']['usable_cores']} usable cores; "
      f"result: {sys.argv[1]}")
EOF
fi
exit "$status"
