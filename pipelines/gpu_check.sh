#!/usr/bin/env bash
# The GPU checks in one go, on the lent GPU machine (H100/H200, 16 cores): every GPU test (parity of
# the compiled core, the native operator and the CuPy python backend with the NumPy executor; DALI GPU pipelines),
# the core benchmark, the loader throughput table (plain DALI GPU vs dali-ipmix GPU, native and python
# backends, JSD on and off, vs the 16-worker PIL loader; 224 px, batch 256, JPEG mixing set), the same
# for the CIFAR preset (32 px, batch 128, samples in memory: bench_throughput.py --preset cifar), the
# profile, the end-to-end training step rate (bench_training.py: ResNet-50 at 224 px and WRN-40-4 at
# 32 px fed by synthetic tensors, plain DALI, dali-ipmix JSD native and python, the PIL loader) and the
# GPU memory check; a short summary table last.
#
# That machine has no DALI: make the bundle here first (../shared/gpu/make-dali-bundle, see
# shared/gpu/README.md), make the device calls it prints back to back, and in the last one run
#     bash .gpu/install.sh && bash pipelines/gpu_check.sh "$OUT"
# (this script also runs .gpu/install.sh itself when DALI is missing and the file is there).
# The bundle packs the CUDA 12 DALI (nvidia-dali-cuda120) of the environment it is given; the plugin
# must be built for that DALI (its stamp is checked at load). With only a CUDA 13 nvcc here:
#     DALI_IPMIX_CUDA=12 IPMIX_GPU=ANY ./scripts/setup.sh     (GPU operator by nvcc 13: the device's
#                                                             driver runs both; development use only)
# then carry the venv's dali_ipmix/libdali_ipmix_native.so and set DALI_IPMIX_NATIVE_LIB to it there.
#
# usage: bash pipelines/gpu_check.sh [OUT_DIR]       OUT_DIR default: $OUT, else out/gpu_check
# Environment knobs (defaults): PYTHON (python3), TOTAL_S (500: whole-script budget in seconds; each
# step gets what is left, so the last steps are cut rather than the device call), WORKERS (16: PIL
# DataLoader workers and DALI threads), BENCH_BATCHES (40: timed batches per throughput row),
# MEM_BATCHES (1000), MEM_MAX_S (150: the memory check stops early after this many seconds),
# PLAIN_DECODE (full: the plain DALI baseline decodes whole images; fused: decode-and-crop, as dali-ipmix),
# SKIP (space-separated step names to leave out, e.g. "bench_core host_profile"), ONLY (space-separated
# step names: run these alone, e.g. "throughput_cifar training"), PROFILE_VARIANTS (the
# profile's rows: plain,plain-fused,cached,full-decode,prefetch3,unfused,device,per-sample,k1t0,ceiling,ceiling1,
# nojsd,read-feed,read-reader; see gpu_profile.py), TRAIN_STEPS (50: timed steps per end-to-end row, after
# 20 warm-up), TRAIN_BATCH (128), CIFAR_ARGS / TRAIN_ARGS / FAMILY_ARGS (extra arguments appended to the CIFAR
# throughput / end-to-end / AugMix-PixMix throughput commands; later ones win, e.g. TRAIN_ARGS="--models wrn-40-4").
# Steps: cupy bench_core host_profile throughput throughput_cifar profile training throughput_family memory.
# Writes 8 files to OUT_DIR (the most the device tool returns):
# steps.log (every step's output, in order), bench_core.json, throughput.json, throughput_cifar.json, throughput_family.json,
# training.json, memory.json, summary.txt.
#
# CPU dry run of the new steps (no GPU: GPU rows skipped, the tiny model, a few steps):
#   ONLY="throughput_cifar training" WORKERS=2 BENCH_BATCHES=2 CIFAR_ARGS="--cifar-count 2000" \
#   TRAIN_ARGS="--tiny --device cpu --imagenet-size 64 --steps 2 --warmup 1 -b 8" bash pipelines/gpu_check.sh /tmp/gc
set -uo pipefail

cd "$(dirname "$0")/.."
D=${1:-${OUT:-out/gpu_check}}
mkdir -p "$D"
PY=${PYTHON:-python3}
TOTAL_S=${TOTAL_S:-500}
WORKERS=${WORKERS:-16}
BENCH_BATCHES=${BENCH_BATCHES:-40}
MEM_BATCHES=${MEM_BATCHES:-1000}
MEM_MAX_S=${MEM_MAX_S:-150}
PLAIN_DECODE=${PLAIN_DECODE:-full}
TRAIN_STEPS=${TRAIN_STEPS:-50}
TRAIN_BATCH=${TRAIN_BATCH:-128}
read -ra CIFAR_EXTRA <<< "${CIFAR_ARGS:-}"
read -ra TRAIN_EXTRA <<< "${TRAIN_ARGS:-}"
read -ra FAMILY_EXTRA <<< "${FAMILY_ARGS:-}"
CACHE=${CACHE:-/tmp/dali-ipmix-bench}   # generated JPEGs/fractals: outside OUT_DIR, never sent back
LOGS=$(mktemp -d)                       # one log per step, for the summary; all of them go to steps.log
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
START=$SECONDS
declare -a SUMMARY=()

if ! "$PY" -c 'import nvidia.dali' 2>/dev/null && [ -f .gpu/install.sh ]; then
  echo "== installing DALI from .gpu/ =="
  bash .gpu/install.sh || echo "DALI install failed: the DALI steps will fail"
fi
# The native DALI operator: a plugin built for the device's DALI (release and CUDA line: its build stamp
# is checked at load), either carried and named by DALI_IPMIX_NATIVE_LIB, or carried as build/native/
# (cmake -S . -B build/native), or built here into build/native/ when cmake and nvcc are on this
# machine; the native rows are skipped otherwise (the reason is printed).
if ! "$PY" -c 'import sys; from dali_ipmix import native; sys.exit(not native.available())' 2>/dev/null \
   && command -v cmake >/dev/null; then
  echo "== building the native operator =="
  PATH="$PATH:/usr/local/cuda/bin" cmake -S . -B build/native -DPython_EXECUTABLE="$(command -v "$PY")" >/dev/null \
    && cmake --build build/native --parallel >/dev/null || echo "native operator build failed: native rows skipped"
fi
"$PY" -c 'from dali_ipmix import native; native.check_build(); print("native operator", native.library_path(), native.build_stamp())' 2>&1 | tail -n 1
echo "== machine =="
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv 2>&1
"$PY" - <<'PY' 2>&1
import os, platform
out = [f"python {platform.python_version()}", f"cores {os.cpu_count()}"]
for name in ("torch", "cupy", "nvidia.dali", "numpy", "PIL", "torchvision"):
    try:
        out.append(f"{name} {__import__(name, fromlist=['_']).__version__}")
    except Exception as err:
        out.append(f"{name} MISSING ({type(err).__name__})")
print(" | ".join(out))
PY

left() { echo $((TOTAL_S - (SECONDS - START))); }

# step NAME LIMIT_S CMD...: runs CMD under `timeout` (at most LIMIT_S, at most what is left of TOTAL_S),
# logs it to $LOGS/NAME.log and $D/steps.log, and adds a summary line "NAME rc seconds".
step() {
  local name=$1 limit=$2; shift 2
  if [[ " ${SKIP:-} " == *" $name "* ]] || { [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; }; then
    echo "== $name: skipped (SKIP/ONLY) =="
    SUMMARY+=("$name|skipped|0"); return
  fi
  local budget; budget=$(left); budget=$((budget - 5))
  [ "$budget" -lt "$limit" ] && limit=$budget
  if [ "$limit" -lt 15 ]; then
    echo "== $name: skipped, $(left) s left of TOTAL_S=$TOTAL_S =="
    SUMMARY+=("$name|skipped (time)|0"); return
  fi
  echo "== $name (limit ${limit} s): $* =="
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$LOGS/$name.log"
  local rc=${PIPESTATUS[0]}
  { echo "== $name: $* (rc $rc)"; cat "$LOGS/$name.log"; } >> "$D/steps.log"
  [ "$rc" = 124 ] && echo "== $name: TIMED OUT after ${limit} s =="
  SUMMARY+=("$name|$rc|$((SECONDS - t0))")
}

# Every cupy-marked test (CuPy parity, the DALI GPU operator, pipelines and iterator); a cold NVRTC
# cache compiles each kernel module once, hence the room.
step cupy 180 "$PY" -m pytest -m cupy -q -p no:cacheprovider -rs tests
step bench_core 90 "$PY" pipelines/bench_core.py --json "$D/bench_core.json"
step host_profile 30 "$PY" pipelines/bench_core.py --host-profile
step throughput 260 "$PY" pipelines/bench_throughput.py --rows dali-gpu,ipmix-native-gpu,ipmix-gpu,pil --jsd both \
  --batch-size 256 --cpu-batch-size 256 --size 224 --workers "$WORKERS" --batches "$BENCH_BATCHES" \
  --gpu-warmup 60 --plain-decode "$PLAIN_DECODE" --cache-dir "$CACHE" --json "$D/throughput.json"
# The CIFAR row set (issue 21 step 2): the CIFAR training pipeline from memory (images=, labels=), JSD and
# not, beside plain DALI at 32 px from the same arrays and the PIL loader; 50,000 generated 32x32 samples.
step throughput_cifar 150 "$PY" pipelines/bench_throughput.py --preset cifar \
  --rows dali-gpu,ipmix-native-gpu,ipmix-gpu,pil --jsd both --batch-size 128 --cpu-batch-size 128 \
  --workers "$WORKERS" --batches "$BENCH_BATCHES" --gpu-warmup 60 --cache-dir "$CACHE" \
  --json "$D/throughput_cifar.json" ${CIFAR_EXTRA[@]+"${CIFAR_EXTRA[@]}"}
# Where the pipeline's time goes: the same training pipeline in variants, on the data just generated.
step profile 200 "$PY" pipelines/gpu_profile.py --data "$(ls -d "$CACHE"/jpeg_* | head -1)" \
  --mixing "$(ls -d "$CACHE"/fractals_*_jpeg | head -1)" --batches 30 --warmup 20 --threads "$WORKERS" \
  --variants "${PROFILE_VARIANTS:-plain,plain-fused,cached,full-decode,prefetch3,unfused,device,per-sample,k1t0,ceiling,ceiling1,nojsd,read-feed,read-reader}"
# End to end (issue 21 step 3): the training step rate of ResNet-50 (224 px) and WRN-40-4 (32 px), AMP and
# channels_last, fed by synthetic tensors on the GPU (the ceiling), plain DALI, dali-ipmix JSD (native,
# python) and the PIL loader; samples/s and the fraction of the ceiling.
step training 300 "$PY" pipelines/bench_training.py --steps "$TRAIN_STEPS" --warmup 20 --batch-size "$TRAIN_BATCH" \
  --workers "$WORKERS" --plain-decode "$PLAIN_DECODE" --cache-dir "$CACHE" --json "$D/training.json" ${TRAIN_EXTRA[@]+"${TRAIN_EXTRA[@]}"}
# The mixing family (issue 22): AugMix and PixMix (their ImageNet paper settings, JSD) beside plain DALI and
# the per-image loaders running the ports of the authors' code, on the ImageNet data generated above.
step throughput_family 150 "$PY" pipelines/bench_throughput.py --methods augmix,pixmix \
  --rows dali-gpu,ipmix-native-gpu,ipmix-gpu,pil --jsd on --batch-size 256 --cpu-batch-size 256 --size 224 \
  --workers "$WORKERS" --batches "$BENCH_BATCHES" --gpu-warmup 60 --plain-decode "$PLAIN_DECODE" \
  --cache-dir "$CACHE" --json "$D/throughput_family.json" ${FAMILY_EXTRA[@]+"${FAMILY_EXTRA[@]}"}
mem_s=$(( $(left) - 60 )); [ "$mem_s" -gt "$MEM_MAX_S" ] && mem_s=$MEM_MAX_S
step memory $((mem_s + 50)) "$PY" pipelines/gpu_memory_check.py --batches "$MEM_BATCHES" \
  --max-seconds "$((mem_s > 10 ? mem_s : 10))" --threads "$WORKERS" --cache-dir "$CACHE" --json "$D/memory.json"

# The summary: one line per step with its key result, read from the logs and JSON files.
printf '%s\n' "${SUMMARY[@]}" > "$LOGS/.steps"
"$PY" - "$D" "$LOGS" <<'PY' 2>&1 | tee "$D/summary.txt"
import json, os, sys
d, logs = sys.argv[1:3]
def load(name):
    try:
        with open(os.path.join(d, name)) as f:
            return json.load(f)
    except Exception:
        return None
def last_line(name, needle=""):
    try:
        lines = [l.strip() for l in open(os.path.join(logs, name + ".log")) if needle in l and l.strip()]
        return lines[-1] if lines else ""
    except OSError:
        return ""
result = {"cupy": last_line("cupy", " in "), "memory": last_line("memory", "VERDICT"),
          "profile": last_line("profile", "native jsd   "),
          "host_profile": last_line("host_profile", "host_ms_per_jsd_batch")}
core = load("bench_core.json")
if core:
    result["bench_core"] = "; ".join(
        f"{r['preset']} numpy {r['numpy_img_s']:.0f}"
        + (f" cuda {r['cuda_img_s']:.0f} cupy-arrays {r['cupy_arrays_img_s']:.0f}" if "cuda_img_s" in r else "")
        + f" pil {r['pil_img_s']:.0f} img/s" for r in core)
tp, tc, tr = load("throughput.json"), load("throughput_cifar.json"), load("training.json")
tf = load("throughput_family.json")
for key, table in (("throughput", tp), ("throughput_cifar", tc), ("throughput_family", tf)):
    if table:
        result[key] = "; ".join(
            f"{r['name']} {r['samples_per_s']:.0f}/s" if r["status"] == "ok" else f"{r['name']} {r['status']}"
            for r in table["rows"])
if tr:
    result["training"] = "; ".join(
        f"{r['model']} {r['name']} {r['samples_per_s']:.0f}/s" if r["status"] == "ok"
        else f"{r['model']} {r['name']} {r['status']}" for r in tr["rows"])
gpu = next((t["meta"]["gpu"] for t in (tp, tc, tr, tf) if t and t["meta"].get("gpu")), None)
print("\n== summary (" + (gpu or "GPU ?") + ") ==")
print(f"{'step':<16s} {'rc':>7s} {'s':>5s}  result")
for line in open(os.path.join(logs, ".steps")).read().split("\n"):
    if line:
        name, rc, secs = line.split("|")
        print(f"{name:<16s} {rc:>7s} {secs:>5s}  {result.get(name, '')}")
for title, table in (("throughput table, ImageNet preset", tp), ("throughput table, CIFAR preset", tc),
                     ("throughput table, AugMix and PixMix, ImageNet preset", tf)):
    if not table:
        continue
    print(title + " (samples/s; JSD sample = clean + 2 views):")
    for r in table["rows"]:
        ratio = lambda k: "-" if r.get(k) is None else f"{r[k]:.2f}"
        print(f"  {r['name']:<20s} batch {r['batch']:>4d}  "
              + (f"{r['samples_per_s']:>9.0f} samples/s {r['images_per_s']:>9.0f} images/s  "
                 f"x dali-gpu {ratio('x_dali_gpu')}  x dali-cpu {ratio('x_dali_cpu')}  x pil {ratio('x_pil')}"
                 if r["status"] == "ok" else f"{r['status']}: {r.get('note', '')}"))
    for t in table.get("targets", []):
        print("  " + t)
if tr:
    print("end to end, training step rate (samples/s; x ceiling = over the synthetic row of the same step):")
    for r in tr["rows"]:
        ratio = lambda k: "-" if r.get(k) is None else f"{r[k]:.2f}"
        print(f"  {r['model']:<9s} {r['name']:<17s} "
              + (f"batch {r['batch']:>4d} steps {r['steps']:>3d} {r['samples_per_s']:>9.0f} samples/s  "
                 f"x ceiling {ratio('x_ceiling')}  x pil-jsd {ratio('x_pil')}" if r["status"] == "ok"
                 else f"{r['status']}: {r.get('note', '')}"))
    for t in tr.get("targets", []):
        print("  " + t)
try:   # the profile's whole table (its last lines), for the reader of summary.txt alone
    lines = open(os.path.join(logs, "profile.log")).read().splitlines()
    head = max(i for i, l in enumerate(lines) if l.startswith("samples/s, batch"))
    print("profile (" + lines[head] + "):")
    for l in lines[head + 1:]:
        if l.strip():
            print(l)
except (OSError, ValueError):
    pass
PY
rm -rf "$LOGS"
