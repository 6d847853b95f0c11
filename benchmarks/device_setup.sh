# Sourced by gpu_session.sh and zoo_session.sh (with PY set): what a tree carried to a fresh borrowed machine needs
# before it runs. The machine keeps nothing between leases and lacks some of mimzoo's dependencies.
# - .whl/: wheels of what the machine lacks (segmentation-models-pytorch, which every downstream command imports),
#   installed beside its own packages;
# - .data/NAME.carry.npz: packs squeezed to travel (benchmarks/carry_pack.py), expanded to .data/NAME.npz.
if [[ -d .whl ]]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/mimzoo-site \
    .whl/*.whl || exit
  export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}/tmp/mimzoo-site"
fi
for carried in .data/*.carry.npz; do
  [[ -e $carried ]] || continue
  [[ -e ${carried%.carry.npz}.npz ]] || $PY benchmarks/carry_pack.py expand "$carried" "${carried%.carry.npz}.npz" \
    || exit
done
