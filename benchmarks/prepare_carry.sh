#!/usr/bin/env bash
# Here, before a lease: what gpu_session.sh and zoo_session.sh carry to the borrowed machine, made once (every path
# is ignored by git; about 35 MB of the 64 MiB that travel, beside the ~4 MB tree):
#   benchmarks/jpegs/               ImageNet-like JPEGs of ../shared/data (make_jpegs.py --limit 300, 16 MB)
#   .carry/cifar10_jpeg_q75.npz     the CIFAR-10 pack's arrays, compressed: 18 MB instead of 56 (deflate keeps the
#                                   623 bytes of JPEG tables every image repeats once); mimzoo reads it as it is
#   .whl/                           segmentation-models-pytorch, which those machines lack (150 KB)
#
#   bash benchmarks/prepare_carry.sh
set -eu
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared/data}
PY=${PY:-python}
compgen -G "benchmarks/jpegs/*.jpg" >/dev/null || $PY benchmarks/make_jpegs.py --limit 300
if [[ ! -e .carry/cifar10_jpeg_q75.npz ]]; then
  mkdir -p .carry
  $PY - "$SHARED/cifar10_jpeg_q75.npz" .carry/cifar10_jpeg_q75.npz <<'PYTHON'
import os, sys
import numpy as np
source, target = sys.argv[1:]
with np.load(source, allow_pickle=False) as pack:
    np.savez_compressed(target + ".tmp.npz", **{key: pack[key] for key in pack.files})
os.replace(target + ".tmp.npz", target)  # a stopped write leaves no pack that looks whole
PYTHON
fi
compgen -G ".whl/segmentation_models_pytorch-*.whl" >/dev/null \
  || $PY -m pip download -q --no-deps --only-binary=:all: -d .whl segmentation-models-pytorch==0.6.0
du -sch benchmarks/jpegs .carry .whl
echo 'gpu_session.sh: carry ["benchmarks/jpegs", ".carry", ".whl"]'
echo 'zoo_session.sh: carry [".carry", ".whl"] and the export folder an earlier lease sent'
