#!/usr/bin/env bash
# Installs dali-ipmix from this source folder into an existing Python environment the way the Docker
# image does (docker/Dockerfile runs it), keeping what the environment already has:
#   1. every package the environment pins stays at its version (NGC's /etc/pip/constraint.txt minus its
#      DALI, or the installed torch, torchvision and NumPy where there is no such file); the result, plus
#      the new DALI pin, is written to $CONSTRAINTS for later pip installs (the image points
#      PIP_CONSTRAINT at it);
#   2. its DALI is replaced by the release pyproject.toml pins (read from the build backend): the plugin
#      is compiled against exactly that DALI, since DALI has no stable plugin ABI and the source uses
#      the DALI 2.4 operator API;
#   3. the wheel is built (plugin included, GPU operator as IPMIX_GPU says) and installed, non-editable,
#      with the extras in $EXTRAS (default gpu,test);
#   4. smoke check, from outside the source folder: the CPU-runnable operator tests and the demo on the
#      CPU (no GPU is visible during `docker build`).
# Environment: PYTHON (default python), BASE_CONSTRAINTS (default /etc/pip/constraint.txt), CONSTRAINTS
# (default /opt/dali-ipmix/constraints.txt), IPMIX_GPU (AUTO|ON|OFF, default AUTO), IPMIX_CUDA_ARCHS (default
# "80;90"), EXTRAS, WHEEL_DIR (default /opt/dali-ipmix/dist), SMOKE (1: run step 4, the default).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
WHEEL_DIR=${WHEEL_DIR:-/opt/dali-ipmix/dist}
BASE_CONSTRAINTS=${BASE_CONSTRAINTS:-/etc/pip/constraint.txt}
keep=${CONSTRAINTS:-/opt/dali-ipmix/constraints.txt}
work=$(mktemp -d)
pip=("$PY" -m pip)

# 1. What the environment pins, minus DALI.
mkdir -p "$(dirname "$keep")"
if [ -f "$BASE_CONSTRAINTS" ]; then
  grep -viE '^nvidia-dali' "$BASE_CONSTRAINTS" > "$keep"
else
  "${pip[@]}" list --format=freeze | grep -iE '^(torch|torchvision|numpy)==' > "$keep" || true
fi
echo "[install] keeping: $(tr '\n' ' ' < "$keep" | cut -c1-300)"
# 2. The DALI the plugin is built for, and the build backend's other requirements.
dalis=$("${pip[@]}" list --format=freeze | grep -ioE '^nvidia-dali-cuda[0-9]+' || true)
[ -z "$dalis" ] || "${pip[@]}" uninstall -q -y $dalis
PIP_CONSTRAINT="$keep" "${pip[@]}" install -q "scikit-build-core>=0.11"
mapfile -t requires < <("$PY" -c \
  "from scikit_build_core.build import get_requires_for_build_wheel as r; print('\n'.join(r()))")
echo "[install] build requirements: ${requires[*]}"
PIP_CONSTRAINT="$keep" "${pip[@]}" install -q "${requires[@]}"
"${pip[@]}" list --format=freeze | grep -iE '^nvidia-dali-cuda[0-9]+==' >> "$keep"
# 3. The wheel, then the install.
PIP_CONSTRAINT="$keep" "${pip[@]}" wheel -q --no-build-isolation --no-deps -w "$WHEEL_DIR" . \
  -Cbuild-dir="$work/cmake" -Ccmake.define.IPMIX_GPU="${IPMIX_GPU:-AUTO}" \
  -Ccmake.define.CMAKE_CUDA_ARCHITECTURES="${IPMIX_CUDA_ARCHS:-80;90}"
wheel=$(ls -t "$WHEEL_DIR"/dali_ipmix-*.whl | head -n 1)
PIP_CONSTRAINT="$keep" "${pip[@]}" install -q --force-reinstall --no-deps "$wheel"
PIP_CONSTRAINT="$keep" "${pip[@]}" install -q "$wheel[${EXTRAS:-gpu,test}]"
rm -rf "$work"
# 4. Smoke check from outside the sources: the installed package, not this folder, is imported.
if [ "${SMOKE:-1}" = 1 ]; then
  src=$PWD
  cd /tmp
  "$PY" -c "import dali_ipmix, nvidia.dali; from dali_ipmix import native; print('[install]', 'dali_ipmix', dali_ipmix.__version__, 'from', dali_ipmix.__file__, '| plugin', native.check_build(), native.build_stamp(), '| DALI', nvidia.dali.__version__)"
  "$PY" -m pytest -q -p no:cacheprovider -m "not cupy and not slow" "$src/tests/dali/test_native.py" "$src/tests/dali/test_fn.py"
  "$PY" -m dali_ipmix.cli demo --device cpu --steps 3 --per-class 8 --size 64 --out /tmp/dali-ipmix-demo --quiet
  rm -rf /tmp/dali-ipmix-demo
fi
