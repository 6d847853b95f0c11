# Sourced by gpu_session.sh and zoo_session.sh (with PY set) on a fresh borrowed machine, which keeps nothing
# between leases and lacks segmentation-models-pytorch (every downstream command imports it): the wheels carried in
# .whl/ (benchmarks/prepare_carry.sh) are installed beside the machine's own packages. A failed install is said
# and the session goes on: only the steps that need those packages fail.
if [[ -d .whl ]]; then
  if $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/mimzoo-site \
    .whl/*.whl; then
    export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}/tmp/mimzoo-site"
  else
    echo "the wheels in .whl did not install; the steps that need them will fail" >&2
  fi
fi
