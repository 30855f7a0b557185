#!/usr/bin/env bash
# The GPU machine's steps, one phase per device call (see benchmarks/RESULTS.md for what ran).
# The machine is offline: wheels travel in .whl_envpool/ and .whl/ (made with
# ../shared/gpu/wheels.sh), Atari ROMs in .envpool_assets/ (../shared/gpu/envpool-assets.sh).
#   bash benchmarks/gpu_session.sh install DIR   # pip-install DIR/*.whl into /tmp/site
#   bash benchmarks/gpu_session.sh env           # print the exports the other phases use
set -u
phase=${1:?phase}
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 ENVPOOL_ASSETS_PATH=$PWD/.envpool_assets
case $phase in
  install)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site "${2:?wheel dir}"/*.whl ;;
  env)
    echo "export PYTHONPATH=$PYTHONPATH PYTHONUNBUFFERED=1 ENVPOOL_ASSETS_PATH=$ENVPOOL_ASSETS_PATH" ;;
  *) echo "unknown phase $phase"; exit 2 ;;
esac
