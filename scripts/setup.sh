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
# The native DALI operator (IpmixNative): CPU always, GPU when a CUDA compiler is found; about a minute on
# 2 cores. Output: build/libdali_ipmix_native.so, which dali_ipmix.native loads. IPMIX_GPU=OFF skips CUDA.
if ! command -v cmake >/dev/null || ! command -v ninja >/dev/null; then
  echo "[setup] cmake/ninja not found: installing them into .venv"
  .venv/bin/python -m pip install -q cmake ninja
  export PATH="$PWD/.venv/bin:$PATH"
fi
[ -d /usr/local/cuda/bin ] && export PATH="$PATH:/usr/local/cuda/bin"
mkdir -p build
generator=()
[ -f build/CMakeCache.txt ] || generator=(-G Ninja)
echo "[setup] building the native DALI operator in build/"
cmake -S . -B build "${generator[@]}" -DPython_EXECUTABLE="$PWD/.venv/bin/python" \
  -DIPMIX_GPU="${IPMIX_GPU:-AUTO}" >build/cmake-configure.log 2>&1 \
  || { cat build/cmake-configure.log; echo "[setup] cmake configure failed"; exit 1; }
grep -E "GPU operator|DALI:" build/cmake-configure.log | sed 's/^-- /[setup] /' 
cmake --build build --parallel
echo "[setup] ready: $(.venv/bin/python -c 'import dali_ipmix, nvidia.dali, torch; import dali_ipmix.native as n; print("dali_ipmix", dali_ipmix.__version__, "| native operator", n.library_path(), "| DALI", nvidia.dali.__version__, "| torch", torch.__version__)')"
