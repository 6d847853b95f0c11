#!/usr/bin/env bash
# One zoo entry (or one seed of it) on a borrowed H100/H200, over as many calls and leases as it takes.
#
# Each call runs `mimzoo zoo build ENTRY` for at most BUDGET seconds in ROOT (default .zoo/, ignored by git), first
# seeded with the committed stages of earlier leases (benchmarks/results/zoo), never over this lease's newer
# records. A stage stopped by the time limit continues from its checkpoint on the next call while the machine is
# warm (30 s after a call); a new lease starts it again, since checkpoints are too large to come back. Whatever
# stops the build, $OUT gets what benchmarks/zoo_carry.py sends: zoo-NAME.tar.gz (the stage records and the small
# files of the stages done: commit them) and weights-NAME.* (the encoders pretrained on this machine, in parts with
# their checksums: keep them under .zoo/ and carry the export folder to the lease that evaluates it).
#
# Here, once: bash benchmarks/prepare_carry.sh (the CIFAR-10 pack compressed to 18 MB in .carry/, the default
# DATA; the wheel of segmentation-models-pytorch, which those machines lack).
# There: run(carry=[".carry", ".whl"] + the export folder of an entry pretrained in an earlier lease, e.g.
#   ".zoo/mae-vit-tiny-p4-cifar10/seed0/pretrain/export", so that this lease evaluates it):
#   SEED=0 ENTRY=mae-vit-tiny-p4-cifar10 bash benchmarks/zoo_session.sh
#   DATA_DEVICE=gpu ...            # pretraining's views made on the GPU (CIFAR stays there)
#   NO_BASELINES=1 ...             # the entry alone; a later call's plain one runs the random-init baselines
# Here, after each call (the cards and headline numbers of the entries done so far, then commit them):
#   python benchmarks/zoo_carry.py receive FILES_AT benchmarks/results/zoo .zoo
#   mimzoo zoo report --root benchmarks/results/zoo --cards-dir model_cards --results-file mimzoo/zoo_results.json
# A CPU check (MAE took 11 min on 2 cores; a smoke build starts empty: zoo build refuses to mix smoke and real):
#   mkdir -p /tmp/sample && cp mimzoo/data/sample/cifar10_sample.npz /tmp/sample/cifar10_jpeg_q75.npz
#   SMOKE=1 DATA=/tmp/sample ROOT=/tmp/zoo ENTRY=... OUT=/tmp/z bash benchmarks/zoo_session.sh
set -u
cd "$(dirname "$0")/.."
ENTRY=${ENTRY:?name the entry, e.g. ENTRY=mae-vit-tiny-p4-cifar10 (mimzoo list shows them)}
OUT=${OUT:-/tmp/zoo-session}
BUDGET=${BUDGET:-540}
DATA=${DATA:-.carry}
ROOT=${ROOT:-.zoo}
COMMITTED=benchmarks/results/zoo
PY=${PY:-python}
export PYTHONPATH="$PWD:$PWD/cli${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
source benchmarks/device_setup.sh  # the carried wheels
$PY -c "import segmentation_models_pytorch" 2>/dev/null \
  || { echo "segmentation-models-pytorch is missing: carry its wheel in .whl (see the top of $0)" >&2; exit 2; }
NAME=$ENTRY${SEED:+-seed$SEED}
mkdir -p "$OUT" "$ROOT"
# earlier leases' stages, never over this lease's newer records (a smoke build must not mix with real stages)
[[ -z ${SMOKE:-} && -d $COMMITTED ]] && cp -rn "$COMMITTED/." "$ROOT/"
if [[ ! -e $ROOT/carried.txt ]]; then  # once per machine: the encoders that came with the tree are not sent back
  $PY benchmarks/zoo_carry.py known "$ROOT" >"$ROOT/carried.txt.tmp" && mv "$ROOT/carried.txt.tmp" "$ROOT/carried.txt" \
    || exit
fi
start=$(date +%s)
# SIGTERM stops the build like Ctrl-C: the stage's time and checkpoint are kept for the next call
timeout --signal=TERM --kill-after=20 "$BUDGET" $PY -m mimzoo zoo build "$ENTRY" --data-dir "$DATA" --root "$ROOT" \
  --cards-dir "$ROOT/cards" --results-file "$ROOT/zoo_results.json" --data-device "${DATA_DEVICE:-cpu}" \
  ${SEED:+--seed "$SEED"} ${SMOKE:+--smoke} ${NO_BASELINES:+--no-baselines} >"$OUT/build-$NAME.log" 2>&1
status=$?
echo "zoo build $NAME: exit $status after $(($(date +%s) - start)) s" | tee -a "$OUT/build-$NAME.log"
$PY benchmarks/zoo_carry.py send "$ROOT" "$OUT" "$NAME" --carried "$ROOT/carried.txt" 2>&1 |
  tee -a "$OUT/build-$NAME.log"
sent=${PIPESTATUS[0]}
((sent == 0)) || echo "zoo_carry.py send failed (exit $sent): what this call did may not come back" >&2
exit $((status ? status : sent))
