#!/usr/bin/env bash
# Here, before a lease: what gpu_session.sh and zoo_session.sh carry to the borrowed machine, made once (every path
# is ignored by git; about 35 MB of the 64 MiB that travel, beside the ~4 MB tree):
#   benchmarks/jpegs/                     ImageNet-like JPEGs of ../shared/data (make_jpegs.py --limit 300, 16 MB)
#   .data/cifar10_jpeg_q75.carry.npz      the CIFAR-10 pack squeezed (carry_pack.py: 18 MB, expanded there)
#   .whl/                                 segmentation-models-pytorch, which those machines lack (150 KB)
#
#   bash benchmarks/prepare_carry.sh
set -eu
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared/data}
PY=${PY:-python}
compgen -G "benchmarks/jpegs/*.jpg" >/dev/null || $PY benchmarks/make_jpegs.py --limit 300
mkdir -p .data
[[ -e .data/cifar10_jpeg_q75.carry.npz ]] \
  || $PY benchmarks/carry_pack.py squeeze "$SHARED/cifar10_jpeg_q75.npz" .data/cifar10_jpeg_q75.carry.npz
compgen -G ".whl/segmentation_models_pytorch-*.whl" >/dev/null \
  || $PY -m pip download -q --no-deps --only-binary=:all: -d .whl segmentation-models-pytorch==0.6.0
du -sch benchmarks/jpegs .data/cifar10_jpeg_q75.carry.npz .whl
echo 'gpu_session.sh: carry ["benchmarks/jpegs", ".data/cifar10_jpeg_q75.carry.npz", ".whl"]'
echo 'zoo_session.sh: carry [".data/cifar10_jpeg_q75.carry.npz", ".whl"] and the export folder an earlier lease sent'
