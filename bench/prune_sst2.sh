#!/usr/bin/env bash
# Structured pruning of the SST-2 MiniLM at several levels, each recovered with distillation, exported to
# int8 ONNX and timed against the unpruned int8 model in ONE `edgesent bench` run (batch 1, length 128,
# one thread), so the latency ratios come from the same machine state.
#
# Goal (issue 6): >= 1.5x faster than unpruned int8 with <= 1.5 points SST-2 dev accuracy loss.
#
# Run from the repository root on a quiet machine, after `edgesent finetune` has written $MODEL:
#   bash bench/prune_sst2.sh
# Every setting is an environment variable (defaults below), e.g. a quick smoke run:
#   SUBSET=200 EPOCHS=1 MAX_STEPS=5 LEVELS="0.5" bash bench/prune_sst2.sh
#
# Recovery budget: about 10 minutes per level on 2 CPU cores. SST-2 train rows are short phrases
# (~13 tokens); MiniLM-L6 student + teacher forward at batch 32 runs roughly 1 step/s there, so the
# default 8,000-row subset x 2 epochs = 500 steps, with an evaluation (and best-checkpoint choice) per epoch.
set -euo pipefail

MODEL=${MODEL:-models/sst2-minilm}                 # the fine-tuned, unpruned PyTorch model
DATA_DIR=${DATA_DIR:-../shared/data/sst2}          # train.tsv / dev.tsv (text<TAB>label)
OUT=${OUT:-bench/out/prune_sst2}                   # everything this script writes (gitignored)
LEVELS=${LEVELS:-"0.3 0.5"}                        # fractions of heads AND FFN neurons removed per layer
SUBSET=${SUBSET:-8000}                             # training rows used for scoring and recovery
EPOCHS=${EPOCHS:-2}                                # recovery epochs
MAX_STEPS=${MAX_STEPS:-0}                          # cap on recovery steps (0: no cap)
BATCH=${BATCH:-32}                                 # recovery batch size
SCORE_SAMPLES=${SCORE_SAMPLES:-2048}               # training rows used for importance scores
TEMPERATURE=${TEMPERATURE:-2.0}
ALPHA=${ALPHA:-0.5}
SEED=${SEED:-42}
EXPORT_ARGS=${EXPORT_ARGS:-"--int8"}
BENCH_ARGS=${BENCH_ARGS:-"--batch-sizes 1 --seq-lens 128 --threads 1 --runs 300"}
EDGESENT=${EDGESENT:-edgesent}

mkdir -p "$OUT"
TRAIN="$OUT/train_subset.tsv"
DEV="$DATA_DIR/dev.tsv"

# A seeded random subset of the training rows (header kept), so reruns train on the same data.
python - "$DATA_DIR/train.tsv" "$TRAIN" "$SUBSET" "$SEED" <<'EOF'
import random, sys
src, dst, n, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with open(src, encoding="utf-8") as fh:
    header, *rows = fh.read().splitlines()
rows = random.Random(seed).sample(rows, min(n, len(rows)))
with open(dst, "w", encoding="utf-8") as fh:
    fh.write("\n".join([header, *rows]) + "\n")
print(f"{dst}: {len(rows)} of the training rows (seed {seed})")
EOF

echo "== unpruned int8"
# shellcheck disable=SC2086  # EXPORT_ARGS and BENCH_ARGS are lists of options
$EDGESENT export "$MODEL" $EXPORT_ARGS --out "$OUT/unpruned-int8" --overwrite
variants=("$OUT/unpruned-int8")

for level in $LEVELS; do
    tag="pruned-$(python -c "print(round($level * 100))")"
    echo "== $tag: remove $level of heads and FFN neurons, recover with distillation"
    $EDGESENT prune "$MODEL" --data "$TRAIN" --eval-data "$DEV" --out "$OUT/$tag" \
        --heads "$level" --ffn "$level" --score-samples "$SCORE_SAMPLES" \
        --epochs "$EPOCHS" --max-steps "$MAX_STEPS" --batch-size "$BATCH" \
        --temperature "$TEMPERATURE" --alpha "$ALPHA" --seed "$SEED" --overwrite
    $EDGESENT export "$OUT/$tag" $EXPORT_ARGS --out "$OUT/$tag-int8" --overwrite
    variants+=("$OUT/$tag-int8")
done

echo "== dev accuracy of every benchmarked (int8) variant"
for dir in "${variants[@]}"; do
    $EDGESENT evaluate "$dir" --data "$DEV" --json > "$dir.eval.json"
done

echo "== one bench run: ${variants[*]} ($BENCH_ARGS)"
$EDGESENT bench "${variants[@]}" $BENCH_ARGS --report "$OUT/bench" --overwrite | tee "$OUT/bench.txt"

python - "$OUT" "${variants[@]}" <<'EOF'
import json, sys
from pathlib import Path
out, variants = Path(sys.argv[1]), [Path(v) for v in sys.argv[2:]]
int8 = {v.name: json.loads(Path(f"{v}.eval.json").read_text())["accuracy"] for v in variants}
pruned = {v.name: json.loads((Path(str(v).removesuffix("-int8")) / "edgesent.json").read_text())["pruning"]
          for v in variants[1:]}
base = next(iter(pruned.values()))  # its "before" numbers are the unpruned model's
rows = [(variants[0].name, base["parameters"]["before"], base["flops"]["before"], None,
         base["accuracy"]["before"]["accuracy"])]
for name, p in pruned.items():
    acc = p["accuracy"]
    rows.append((name, p["parameters"]["after"], p["flops"]["after"], acc["pruned"]["accuracy"],
                 acc.get("recovered", acc["pruned"])["accuracy"]))
print(f"{'variant':<18} {'params':>11} {'GFLOPs':>7} {'acc pruned':>11} {'acc fp32':>9} {'acc int8':>9} {'d int8':>7}")
for name, params, flops, acc_pruned, acc_fp32 in rows:
    delta = 100 * (int8[name] - int8[variants[0].name])
    shown = f"{acc_pruned:>11.4f}" if acc_pruned is not None else f"{'':>11}"
    print(f"{name:<18} {params:>11,} {flops / 1e9:>7.3f} {shown} {acc_fp32:>9.4f} {int8[name]:>9.4f} {delta:>+7.2f}")
print("GFLOPs at batch 1, length 128; 'acc pruned' before recovery; 'd int8' in points against the unpruned int8")
print(f"latency: the bench table above, {out / 'bench'} (one run; speedups against {variants[0].name})")
EOF
