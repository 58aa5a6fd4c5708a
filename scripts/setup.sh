#!/usr/bin/env bash
# Creates (or updates) the project's virtual environment at .venv and installs dali-ipmix into it.
# Idempotent: a second run only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch/torchvision first, pinned: these versions are the ones this workplace's machines hold locally.
.venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install -q -e ".[test]"
echo "[setup] ready: $(.venv/bin/python -c 'import dali_ipmix, nvidia.dali, torch; print("dali_ipmix", dali_ipmix.__version__, "| DALI", nvidia.dali.__version__, "| torch", torch.__version__)')"
