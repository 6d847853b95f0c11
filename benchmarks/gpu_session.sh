#!/usr/bin/env bash
# Every measurement of issue 16 in one call on a borrowed H100/H200, most important first, within BUDGET seconds
# (default 540): each step gets what is left, so a slow step (compiling) costs the ones after it, not the call.
# JSON lines go to $OUT (default benchmarks/results/<date>); every line names the device.
#
#   OUT=/some/dir bash benchmarks/gpu_session.sh
#   SMOKE=1 OUT=/tmp/smoke bash benchmarks/gpu_session.sh      # tiny sizes, runs on a CPU in a few minutes
#
# What travels to the machine is at most 64 MiB: benchmarks/prepare_carry.sh makes what is carried (the JPEG folder,
# 309 files that REPEAT=80 copies there so that an epoch of 96 batches of 256 holds the 16 warm-up and 64 timed ones;
# the CIFAR-10 pack compressed to 18 MB in .carry/, the default CIFAR there; the smp wheel).
# What comes back from the device tool is a few files: PACK=FILE.tar.gz packs $OUT into one after every step.
#
#   PACK=$OUT/session.tar.gz OUT=/tmp/session REPEAT=80 bash benchmarks/gpu_session.sh
#   (PACK first: it names the device tool's $OUT, before OUT is set to the work folder)
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/$(date -u +%Y%m%d-%H%M)}
BUDGET=${BUDGET:-540}
PY=${PY:-python}
SHARED=${SHARED:-$([[ -d ../shared/data ]] && echo ../shared/data || echo shared/data)}  # CamVid, photos, CIFAR
mkdir -p "$OUT"
export PYTHONPATH="$PWD:$PWD/cli${PYTHONPATH:+:$PYTHONPATH}"
source benchmarks/device_setup.sh  # the carried wheels
start=$(date +%s)

step() {  # step NAME CMD...: run with the time that is left (at most $CAP s when set), log to $OUT/NAME.log
  local name=$1; shift
  local left=$((BUDGET - ($(date +%s) - start)))
  if [[ -n ${CAP:-} ]] && ((CAP < left)); then left=$CAP; fi
  if ((left < 15)); then echo "skipped $name: out of time" | tee -a "$OUT/skipped.txt"; return; fi
  echo "== $name ($left s left): $*" | tee -a "$OUT/commands.txt"
  timeout --signal=INT --kill-after=10 "$left" "$@" >"$OUT/$name.log" 2>&1
  echo "   exit $? after $(($(date +%s) - start)) s" | tee -a "$OUT/commands.txt"
  pack
}

pack() {  # whatever stops the call later, what is measured so far is in $PACK
  if [[ -n ${PACK:-} ]]; then
    tar czf "$PACK.tmp" --exclude='*.pt' --exclude='*.safetensors' --exclude="$(basename "$PACK")*" -C "$OUT" . &&
      mv "$PACK.tmp" "$PACK"
  fi
}

if [[ -n "${SMOKE:-}" ]]; then
  ARCH_B=vit_tiny_patch16_224  # ViT-B's 224 px pipeline, a CPU-sized model
  B=(--arch $ARCH_B --batch 2 --steps 1 --warmup 0)
  T=(--arch vit_tiny_patch4_32 --batch 8 --steps 1 --warmup 0)
  JPEGS=(--limit 16); DATA=(--batches 2 --workers 0); E2E_B=(--batch 4); E2E_T=(--batch 16)
  CIFAR=mimzoo/data/sample/cifar10_sample.npz
  PRETRAIN=(--epochs 1 --warmup-epochs 0 --batch-size 16 --limit 64 --workers 0)
  FINETUNE=(--epochs 1 --warmup-epochs 0 --batch-size 16 --limit 64 --workers 0)
else
  ARCH_B=vit_base_patch16_224
  B=(--arch $ARCH_B --batch 256)
  T=(--arch vit_tiny_patch4_32 --batch 1024)
  JPEGS=(); DATA=(--batches 64 --workers 16); E2E_B=(--batch 256); E2E_T=(--batch 1024)
  CIFAR=${CIFAR:-$([[ -e .carry/cifar10_jpeg_q75.npz ]] && echo .carry || echo "$SHARED")/cifar10_jpeg_q75.npz}
  PRETRAIN=(--epochs 100 --warmup-epochs 10 --batch-size 512 --workers 16)  # the official CIFAR recipe's
  FINETUNE=(--epochs 100 --warmup-epochs 5 --batch-size 128 --workers 16)  # the zoo's (zoo_build.EVALS)
fi

$PY - >"$OUT/env.json" <<'EOF'
import json, platform, torch, torchvision
info = {"torch": torch.__version__, "torchvision": torchvision.__version__, "python": platform.python_version(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "cpus": __import__("os").cpu_count()}
try:
    import transformers; info["transformers"] = transformers.__version__
except ImportError:
    info["transformers"] = None
print(json.dumps(info))
EOF
cat "$OUT/env.json"
if ! compgen -G "benchmarks/jpegs/*.jpg" >/dev/null; then
  step make_jpegs $PY benchmarks/make_jpegs.py --pack "$SHARED/camvid_360x480_jpeg95.npz" \
    --photos "$SHARED/demo_photos" "${JPEGS[@]}"
fi
originals=()  # not the copies an earlier call left on a warm machine
for file in benchmarks/jpegs/*.jpg; do [[ $file == *_copy* ]] || originals+=("$file"); done
for ((copy = 1; copy < ${REPEAT:-1}; copy++)); do
  for file in "${originals[@]}"; do cp -n "$file" "${file%.jpg}_copy$copy.jpg"; done
done
echo "$(find benchmarks/jpegs -name '*.jpg' | wc -l) JPEG files in benchmarks/jpegs" | tee -a "$OUT/commands.txt"
step data_jpeg $PY benchmarks/data_throughput.py --data benchmarks/jpegs --peer "${DATA[@]}" "${E2E_B[@]}" \
  --out "$OUT/data.jsonl"
step model_b_eager $PY benchmarks/pretrain_throughput.py "${B[@]}" --methods all --out "$OUT/model.jsonl"
# where ViT-B's step time goes (25% MFU, no gain from compiling on the first H200 lease)
CAP=60 step profile_b $PY benchmarks/profile_step.py "${B[@]}" --methods mae --fused-adamw --out "$OUT/profile.jsonl"
step model_t_eager $PY benchmarks/pretrain_throughput.py "${T[@]}" --methods all --out "$OUT/model.jsonl"
# the zoo's model: 0.89 GFLOP an image makes a step of batch 1024 about 1 ms of matmuls, yet it took 33 ms
CAP=60 step profile_t $PY benchmarks/profile_step.py "${T[@]}" --methods mae --fused-adamw --out "$OUT/profile.jsonl"
step e2e_jpeg_b $PY benchmarks/data_throughput.py --data benchmarks/jpegs --method mae --arch $ARCH_B \
  "${DATA[@]}" "${E2E_B[@]}" --out "$OUT/e2e.jsonl"
step e2e_cifar_t $PY benchmarks/data_throughput.py --data "$CIFAR" --method mae --arch vit_tiny_patch4_32 \
  "${DATA[@]}" "${E2E_T[@]}" --out "$OUT/e2e.jsonl"
# what a zoo entry's fine-tunes cost (issue 17: three 100-epoch runs an entry), from its per-10-step lines
CAP=90 step finetune_cifar_t $PY -m mimzoo finetune random:vit_tiny_patch4_32 --data "$CIFAR" "${FINETUNE[@]}" \
  --blr 1e-3 --layer-decay 0.75 --drop-path 0.1 --val-fraction 0.1 --out "$OUT/finetune_cifar_t"
step model_b_fused $PY benchmarks/pretrain_throughput.py "${B[@]}" --methods mae --no-peer --fused-adamw \
  --out "$OUT/model.jsonl"
CAP=120 step profile_b_compiled $PY benchmarks/profile_step.py "${B[@]}" --methods mae --compile --fused-adamw \
  --out "$OUT/profile.jsonl"
CAP=90 step profile_t_compiled $PY benchmarks/profile_step.py "${T[@]}" --methods mae --compile --fused-adamw \
  --out "$OUT/profile.jsonl"
step model_t_compiled $PY benchmarks/pretrain_throughput.py "${T[@]}" --methods all --compile --out "$OUT/model.jsonl"
step e2e_cifar_t_compiled $PY benchmarks/data_throughput.py --data "$CIFAR" --method mae --arch vit_tiny_patch4_32 \
  --compile "${DATA[@]}" "${E2E_T[@]}" --out "$OUT/e2e.jsonl"
# the real command end to end: CIFAR-10 MAE as the zoo trains it, its per-step lines give the rate
CAP=150 step pretrain_cifar_t $PY -m mimzoo pretrain --data "$CIFAR" --arch vit_tiny_patch4_32 "${PRETRAIN[@]}" \
  --blr 1.5e-4 --data-device gpu --compile --log-every 20 --ckpt-every 100000 --out "$OUT/pretrain_cifar_t"
step model_b_compiled $PY benchmarks/pretrain_throughput.py "${B[@]}" --methods all --compile --out "$OUT/model.jsonl"
echo "done after $(($(date +%s) - start)) s; results in $OUT"
pack
