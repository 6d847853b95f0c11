#!/usr/bin/env bash
# One zoo entry, from pretraining to its card, inside one call on a borrowed H100/H200.
#
# A borrowed machine keeps nothing after its lease, and what comes back from it is small (files of at most 16 MiB;
# a ViT-T encoder alone is 22 MB) while what travels there is at most 64 MiB (the CIFAR-10 pack is 56 MB of it). So
# an entry is built whole within one call or not at all: the call runs `mimzoo zoo build ENTRY` for at most BUDGET
# seconds and packs a finished entry's small files (state, results, metrics, configs, cards; no weights) into
# $OUT/zoo-ENTRY[-seedS].tar.gz. An unfinished entry packs nothing but its log: its weights die with the machine.
#
#   mkdir -p .data && cp ../shared/data/cifar10_jpeg_q75.npz .data/      # here, once (.data/ is ignored)
#   ENTRY=mae-vit-tiny-p4-cifar10 bash benchmarks/zoo_session.sh         # there: run(carry=[".data"])
#   DATA_DEVICE=gpu ENTRY=...                                            # views made on the GPU (CIFAR stays there)
#   SEED=1 ENTRY=mae-vit-tiny-p4-cifar10 ...                             # one of an entry's seeds (zoo build --seed)
#   tar xzf zoo-ENTRY.tar.gz; git add benchmarks/results/zoo             # here: the files behind the numbers
#   SMOKE=1 DATA=/tmp/sample ROOT=/tmp/zoo ENTRY=... OUT=/tmp/z bash benchmarks/zoo_session.sh  # a CPU check: MAE took
#   11 min on 2 cores with the built-in sample (mimzoo/data/sample) copied to /tmp/sample/cifar10_jpeg_q75.npz
set -u
cd "$(dirname "$0")/.."
ENTRY=${ENTRY:?name the entry, e.g. ENTRY=mae-vit-tiny-p4-cifar10 (mimzoo list shows them)}
OUT=${OUT:-/tmp/zoo-session}
BUDGET=${BUDGET:-540}
DATA=${DATA:-.data}
# committed, so each call sees the stages of earlier ones (the recipes chosen with MAE's encoder above all)
ROOT=${ROOT:-benchmarks/results/zoo}
PY=${PY:-python}
export PYTHONPATH="$PWD:$PWD/cli${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
NAME=$ENTRY${SEED:+-seed$SEED}
mkdir -p "$OUT"
start=$(date +%s)
# SIGTERM stops the build like Ctrl-C (its stage's time and checkpoint are kept, for a call that continues on the
# same warm machine)
timeout --signal=TERM --kill-after=20 "$BUDGET" $PY -m mimzoo zoo build "$ENTRY" --data-dir "$DATA" --root "$ROOT" \
  --cards-dir "$ROOT/cards" --results-file "$ROOT/zoo_results.json" --data-device "${DATA_DEVICE:-cpu}" \
  ${SEED:+--seed "$SEED"} ${SMOKE:+--smoke} >"$OUT/build-$NAME.log" 2>&1
status=$?
echo "zoo build $NAME: exit $status after $(($(date +%s) - start)) s" | tee -a "$OUT/build-$NAME.log"
if ((status == 0)); then
  find "$ROOT" -type f \( -name '*.json' -o -name '*.jsonl' -o -name '*.md' -o -name '*.png' \) -print0 |
    tar czf "$OUT/zoo-$NAME.tar.gz" --null -T -
  echo "packed $(tar tzf "$OUT/zoo-$NAME.tar.gz" | wc -l) files into $OUT/zoo-$NAME.tar.gz"
fi
exit $status
