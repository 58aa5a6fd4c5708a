#!/usr/bin/env bash
# Creates (or updates) the project's virtual environment at .venv and installs dali-ipmix into it,
# editable, through the package's own build backend (scikit-build-core + CMake + Ninja), which compiles
# the native DALI operator. Idempotent: a second run re-checks the installs and rebuilds incrementally.
#
# CUDA line (DALI's wheel and the plugin's toolkit on one CUDA major): $DALI_IPMIX_CUDA if set (12 or
# 13), else the major of the nvcc found (so that the GPU operator is built), else 12. IPMIX_GPU=OFF|ON|ANY
# skips or requires the GPU operator (default AUTO).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
pip=(.venv/bin/python -m pip install -q)
"${pip[@]}" --upgrade pip
[ -d /usr/local/cuda/bin ] && export PATH="$PATH:/usr/local/cuda/bin"
if [ -z "${DALI_IPMIX_CUDA:-}" ]; then
  major=$(command -v nvcc >/dev/null && nvcc --version | sed -n 's/.*release \([0-9]*\)\..*/\1/p' || true)
  case "$major" in 12|13) DALI_IPMIX_CUDA=$major ;; *) DALI_IPMIX_CUDA=12 ;; esac
fi
export DALI_IPMIX_CUDA
other=$([ "$DALI_IPMIX_CUDA" = 13 ] && echo nvidia-dali-cuda120 || echo nvidia-dali-cuda130)
.venv/bin/python -m pip uninstall -q -y "$other" 2>/dev/null || true   # one DALI per environment
# torch/torchvision first, pinned: these versions are the ones this workplace's machines hold locally.
"${pip[@]}" "torch==2.14.1" "torchvision==0.29.1"
# The build backend's own requirements (DALI at the release the plugin is compiled against, CMake and
# Ninja when the system has none), read from pyproject.toml by the backend, then the editable install.
"${pip[@]}" "scikit-build-core>=0.11"
mapfile -t requires < <(.venv/bin/python -c \
  "from scikit_build_core.build import get_requires_for_build_editable as r; print('\n'.join(r()))")
[ ${#requires[@]} -eq 0 ] || "${pip[@]}" "${requires[@]}"
echo "[setup] CUDA line $DALI_IPMIX_CUDA; building the native DALI operator (build/$(uname -s | tr A-Z a-z)*/)"
rm -rf dali_ipmix.egg-info   # left by the setuptools backend of older versions: it would shadow the install
"${pip[@]}" --no-build-isolation -e ".[test]" -Ccmake.define.IPMIX_GPU="${IPMIX_GPU:-AUTO}"
echo "[setup] ready: $(.venv/bin/python -c 'import dali_ipmix, nvidia.dali, torch; import dali_ipmix.native as n; print("dali_ipmix", dali_ipmix.__version__, "| native operator", n.library_path(), n.build_stamp(), "| DALI", nvidia.dali.__version__, "| torch", torch.__version__)')"
