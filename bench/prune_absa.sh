#!/usr/bin/env bash
# Structured pruning of the SemEval-2014 restaurants aspect tagger (issue 11): remove a fraction of heads and FFN
# neurons, recover with per-token distillation, export int8 with the default gate, and score every variant on the
# test set; with BENCH=1, one `edgesent bench` run times the unpruned and pruned int8 taggers on the test texts.
#
# Run from the repository root after the ABSA fine-tuning of bench/results/absa-semeval14 wrote $MODEL:
#   bash bench/prune_absa.sh              # prune, export, evaluate (minutes; any machine state)
#   BENCH=1 bash bench/prune_absa.sh      # also the latency run: only on a quiet machine
# The recovery picks its best epoch on the same seeded 10% held-out split of the training file that the
# fine-tuning used (never on test); this script writes that split as JSONL first.
set -euo pipefail

MODEL=${MODEL:-models/absa-minilm}               # the fine-tuned, unpruned tagger
UNPRUNED_INT8=${UNPRUNED_INT8:-models/absa-onnx-int8}
DATA_DIR=${DATA_DIR:-../shared/data/absa}
OUT=${OUT:-bench/out/prune_absa}                 # everything this script writes (gitignored)
LEVEL=${LEVEL:-0.5}                              # fraction of heads AND FFN neurons removed per layer
EPOCHS=${EPOCHS:-5}
LR=${LR:-1e-4}
BATCH=${BATCH:-16}
SEED=${SEED:-42}
BENCH=${BENCH:-0}
BENCH_ARGS=${BENCH_ARGS:-"--batch-sizes 1 --threads 1 --runs 300"}
EDGESENT=${EDGESENT:-edgesent}

mkdir -p "$OUT"
python - "$DATA_DIR/restaurants_train.xml" "$OUT" "$SEED" <<'PY'
import json, sys
from pathlib import Path
from edgesent.tasks import get_task
from edgesent.tasks.spans_data import load_span_dataset, split_span_dataset

source, out, seed = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
train, held_out = split_span_dataset(load_span_dataset(source, drop_labels=("conflict",)), 0.1, seed)
for name, data in (("train", train), ("eval", held_out)):
    rows = get_task("spans").records(data)
    (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    print(f"{out / name}.jsonl: {len(rows)} sentences")
PY

tag="pruned-$(python -c "print(round($LEVEL * 100))")"
echo "== $tag: remove $LEVEL of heads and FFN neurons, recover with distillation"
$EDGESENT prune "$MODEL" --data "$OUT/train.jsonl" --eval-data "$OUT/eval.jsonl" --out "$OUT/$tag" \
    --heads "$LEVEL" --ffn "$LEVEL" --epochs "$EPOCHS" --lr "$LR" --batch-size "$BATCH" --seed "$SEED" \
    --overwrite --json > "$OUT/$tag.prune.json"
echo "== $tag-int8: the default export (parity on the model's own sample, default bounds)"
$EDGESENT export "$OUT/$tag" --int8 --out "$OUT/$tag-int8" --overwrite --json > "$OUT/$tag-int8.export.json"

echo "== test-set scores (conflict aspects dropped)"
for dir in "$MODEL" "$UNPRUNED_INT8" "$OUT/$tag" "$OUT/$tag-int8"; do
    $EDGESENT evaluate "$dir" --data "$DATA_DIR/restaurants_test.xml" --drop-label conflict --json \
        > "$OUT/$(basename "$dir").test.json"
done
python - "$OUT" "$MODEL" "$UNPRUNED_INT8" "$OUT/$tag" "$OUT/$tag-int8" <<'PY'
import json, sys
from pathlib import Path
out, dirs = Path(sys.argv[1]), sys.argv[2:]
print(f"{'model':<22} {'joint F1':>8} {'span F1':>8} {'polarity acc':>12} {'polarity mF1':>12}")
for d in dirs:
    r = json.loads((out / f"{Path(d).name}.test.json").read_text())
    print(f"{Path(d).name:<22} {100 * r['f1']:>8.2f} {100 * r['span_f1']:>8.2f} {100 * r['label_accuracy']:>12.2f}"
          f" {100 * r['label_macro_f1']:>12.2f}")
PY

if [ "$BENCH" = 1 ]; then
    echo "== one bench run on the test texts: $UNPRUNED_INT8 vs $OUT/$tag-int8 ($BENCH_ARGS)"
    # shellcheck disable=SC2086  # BENCH_ARGS is a list of options
    $EDGESENT bench "$UNPRUNED_INT8" "$OUT/$tag-int8" --data "$DATA_DIR/restaurants_test.jsonl" $BENCH_ARGS \
        --report "$OUT/bench" --overwrite | tee "$OUT/bench.txt"
fi
