#!/usr/bin/env bash
# The GPU machine's session in one call (see benchmarks/RESULTS.md for the command and what ran).
# The machine is offline: the wheels travel in .whl/ and the Atari ROMs in .envpool_assets/, both
# made on this machine by `prepare` (with the scripts in ../shared/gpu, or GPU_TOOLS).
#   bash benchmarks/gpu_session.sh prepare          # HERE: fill .whl/ and .envpool_assets/
#   bash benchmarks/gpu_session.sh session [ARGS]   # THERE: install the wheels, then
#                                                   #   benchmarks/gpu_session.py --device cuda ARGS
#   bash benchmarks/gpu_session.sh install DIR      # pip-install DIR/*.whl into /tmp/site
#   bash benchmarks/gpu_session.sh env              # print the exports the other phases use
set -u
phase=${1:?phase: prepare, session, install or env}
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
[ -d .envpool_assets ] && export ENVPOOL_ASSETS_PATH=$PWD/.envpool_assets
# What the device image lacks (its package list: /work/.library/device/KINDS.md), pinned to the
# versions installed here: envpool and what importing it, gymnasium and tyro needs.
WHEELS="envpool gymnasium farama-notifications dm-env optree tyro docstring-parser typeguard typing-extensions"
install() {
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$1"/*.whl
}
case $phase in
  prepare)
    tools=${GPU_TOOLS:-$PWD/../shared/gpu}
    pins=$(python3 -c "import importlib.metadata as m, sys; print(' '.join(f'{n}=={m.version(n)}' for n in sys.argv[1:]))" $WHEELS) || exit 1
    rm -rf .whl && bash "$tools/wheels.sh" .whl $pins || exit 1
    bash "$tools/envpool-assets.sh" .envpool_assets || exit 1
    du -sh .whl .envpool_assets ;;
  session)
    shift
    start=$(date +%s)
    if [ -d .whl ]; then install .whl || echo "gpu_session.sh: installing the wheels failed; the phases will say what is missing"; fi
    echo "gpu_session.sh: the install step took $(( $(date +%s) - start )) s"
    exec python3 benchmarks/gpu_session.py --device cuda "$@" ;;
  install)
    install "${2:?wheel dir}" ;;
  env)
    echo "export PYTHONPATH=$PYTHONPATH PYTHONUNBUFFERED=1 ENVPOOL_ASSETS_PATH=${ENVPOOL_ASSETS_PATH:-}" ;;
  *) echo "unknown phase $phase"; exit 2 ;;
esac
