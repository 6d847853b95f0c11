#!/usr/bin/env bash
# One zoo entry, from pretraining to its card, within one lease of a borrowed H100/H200.
#
# A borrowed machine keeps nothing after its lease, and what comes back from it is small (files of at most 16 MiB;
# a ViT-T encoder alone is 22 MB) while what travels there is at most 64 MiB (the CIFAR-10 pack is 56 MB of it). So
# an entry is built whole within one lease or not at all. Each call runs `mimzoo zoo build ENTRY` for at most BUDGET
# seconds in ROOT (default .zoo/, ignored by git, so it stays between the calls of one lease while the machine is
# warm), first seeded with the committed stages of earlier leases (benchmarks/results/zoo: the recipes chosen with
# MAE's encoder above all). A finished entry's small files (stages, results, metrics, configs, cards; no weights)
# are packed into $OUT/zoo-ENTRY[-seedS].tar.gz, paths relative to ROOT; an unfinished one packs only its log, and
# the next call of the same lease continues it.
#
#   mkdir -p .data && cp ../shared/data/cifar10_jpeg_q75.npz .data/      # here, once (.data/ is ignored)
#   pip download --no-deps --only-binary=:all: -d .whl segmentation-models-pytorch==0.6.0   # here, once (ignored):
#                                    # the GPU machines lack smp, which every downstream command imports
#   ENTRY=mae-vit-tiny-p4-cifar10 bash benchmarks/zoo_session.sh         # there: run(carry=[".data", ".whl"])
#   DATA_DEVICE=gpu ENTRY=...                                            # views made on the GPU (CIFAR stays there)
#   SEED=1 ENTRY=mae-vit-tiny-p4-cifar10 ...                             # one of an entry's seeds (zoo build --seed)
#   NO_BASELINES=1 ENTRY=...       # the entry alone; a later lease's plain call then runs only the random-init
#                                  # baselines, which need no encoder (the committed recipe stages name their choice)
#   tar xzf zoo-ENTRY.tar.gz -C benchmarks/results/zoo && git add benchmarks/results/zoo   # here: the files
#   SMOKE=1 DATA=/tmp/sample ROOT=/tmp/zoo ENTRY=... OUT=/tmp/z bash benchmarks/zoo_session.sh  # a CPU check: MAE took
#   11 min on 2 cores with the built-in sample (mimzoo/data/sample) copied to /tmp/sample/cifar10_jpeg_q75.npz; a
#   smoke build starts empty (zoo build refuses to mix smoke and real stages)
set -u
cd "$(dirname "$0")/.."
ENTRY=${ENTRY:?name the entry, e.g. ENTRY=mae-vit-tiny-p4-cifar10 (mimzoo list shows them)}
OUT=${OUT:-/tmp/zoo-session}
BUDGET=${BUDGET:-540}
DATA=${DATA:-.data}
ROOT=${ROOT:-.zoo}
COMMITTED=benchmarks/results/zoo
PY=${PY:-python}
export PYTHONPATH="$PWD:$PWD/cli${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [[ -d .whl ]]; then  # carried wheels of what the machine lacks, beside its own packages
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/zoo-site .whl/*.whl \
    || exit
  export PYTHONPATH="$PYTHONPATH:/tmp/zoo-site"
fi
$PY -c "import segmentation_models_pytorch" 2>/dev/null \
  || { echo "segmentation-models-pytorch is missing: carry its wheel in .whl (see the top of $0)" >&2; exit 2; }
NAME=$ENTRY${SEED:+-seed$SEED}
mkdir -p "$OUT" "$ROOT"
# earlier leases' stages, never over this lease's newer records (a smoke build must not mix with real stages)
[[ -z ${SMOKE:-} && -d $COMMITTED ]] && cp -rn "$COMMITTED/." "$ROOT/"
start=$(date +%s)
# SIGTERM stops the build like Ctrl-C: the stage's time and checkpoint are kept for the next call
timeout --signal=TERM --kill-after=20 "$BUDGET" $PY -m mimzoo zoo build "$ENTRY" --data-dir "$DATA" --root "$ROOT" \
  --cards-dir "$ROOT/cards" --results-file "$ROOT/zoo_results.json" --data-device "${DATA_DEVICE:-cpu}" \
  ${SEED:+--seed "$SEED"} ${SMOKE:+--smoke} ${NO_BASELINES:+--no-baselines} >"$OUT/build-$NAME.log" 2>&1
status=$?
echo "zoo build $NAME: exit $status after $(($(date +%s) - start)) s" | tee -a "$OUT/build-$NAME.log"
if ((status == 0)); then
  (cd "$ROOT" && find . -type f \( -name '*.json' -o -name '*.jsonl' -o -name '*.md' -o -name '*.png' \) -print0 |
    tar czf "$OUT/zoo-$NAME.tar.gz" --null -T -)
  echo "packed $(tar tzf "$OUT/zoo-$NAME.tar.gz" | wc -l) files into $OUT/zoo-$NAME.tar.gz"
fi
exit $status
