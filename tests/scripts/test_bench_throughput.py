"""End-to-end runs of pipelines/bench_throughput.py and pipelines/gpu_memory_check.py on the CPU, on a tiny
generated data set (16 JPEGs of 80x70, 4 fractals of 64x64): the JSON has every row, CPU rows with positive
speeds, GPU rows marked skipped (on a machine without CUDA). No timing assertions: speeds are not checked.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
TINY = ["--gen-count", "16", "--gen-size", "80x70", "--gen-mixing-count", "4", "--gen-mixing-size", "64",
        "--size", "64"]


def run_script(args, timeout=120):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)
    return proc, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "table.json"
    proc, log = run_script(["pipelines/bench_throughput.py", *TINY, "--cache-dir", tmp / "cache",
                            "--batch-size", "8", "--cpu-batch-size", "8", "--batches", "1", "--warmup", "1",
                            "--gpu-warmup", "1", "--workers", "1", "--jsd", "both", "--json", out])
    assert proc.returncode == 0, log[-6000:]
    return json.loads(out.read_text()), log


def test_cpu_rows_have_positive_speeds(table):
    data, _ = table
    rows = {r["name"]: r for r in data["rows"]}
    for name in ("dali-cpu", "ipmix-cpu-jsd", "ipmix-cpu", "pil-jsd", "pil"):
        r = rows[name]
        assert r["status"] == "ok", r
        assert r["samples_per_s"] > 0 and r["samples"] > 0
        assert r["images_per_s"] == pytest.approx(r["samples_per_s"] * (3 if r["jsd"] else 1))
    assert rows["dali-cpu"]["x_dali_cpu"] == pytest.approx(1.0)
    assert rows["pil-jsd"]["x_pil"] == pytest.approx(1.0)
    assert rows["ipmix-cpu-jsd"]["x_pil"] > 0
    from dali_ipmix import native
    for name in ("ipmix-native-cpu-jsd", "ipmix-native-cpu"):
        assert rows[name]["status"] == ("ok" if native.available() else "skipped"), rows[name]


@pytest.mark.skipif(torch.cuda.is_available(), reason="GPU rows run on a machine with CUDA")
def test_gpu_rows_skipped_and_said(table):
    data, log = table
    rows = {r["name"]: r for r in data["rows"]}
    for name in ("dali-gpu", "ipmix-gpu-jsd", "ipmix-gpu"):
        assert rows[name]["status"] == "skipped", rows[name]
        assert "samples_per_s" not in rows[name] and "CUDA" in rows[name]["note"]
        assert rows[name]["x_dali_gpu"] is None
    assert "GPU rows skipped" in log
    assert not [t for t in data["targets"] if "-gpu" in t]


def test_augmix_and_pixmix_rows(tmp_path):
    """--methods: the ipmix-* and pil rows once per method (AugMix reads no mixing picture), beside
    one plain DALI row; x pil divides by the same method's per-image loader."""
    out = tmp_path / "family.json"
    proc, log = run_script(["pipelines/bench_throughput.py", *TINY, "--cache-dir", tmp_path / "cache",
                            "--rows", "dali-cpu,ipmix-native-cpu,ipmix-cpu,pil", "--jsd", "on",
                            "--methods", "augmix,pixmix", "--cpu-batch-size", "8", "--batches", "1",
                            "--warmup", "1", "--workers", "1", "--json", out], timeout=240)
    assert proc.returncode == 0, log[-6000:]
    data = json.loads(out.read_text())
    assert data["meta"]["methods"] == ["augmix", "pixmix"]
    rows = {r["name"]: r for r in data["rows"]}
    assert sorted(rows) == sorted(["dali-cpu"] + [f"{m}-{k}-jsd" for m in ("augmix", "pixmix")
                                                  for k in ("native-cpu", "cpu", "pil")])
    from dali_ipmix import native
    for name, r in rows.items():
        if "native" in name and not native.available():
            assert r["status"] == "skipped", r
            continue
        assert r["status"] == "ok" and r["samples_per_s"] > 0, r
        assert r["method"] == (None if name == "dali-cpu" else name.split("-")[0])
    for m in ("augmix", "pixmix"):
        assert rows[f"{m}-pil-jsd"]["x_pil"] == pytest.approx(1.0)
        assert rows[f"{m}-cpu-jsd"]["x_pil"] == pytest.approx(
            rows[f"{m}-cpu-jsd"]["samples_per_s"] / rows[f"{m}-pil-jsd"]["samples_per_s"])
    assert "augmix-native-cpu-jsd" in log and "pixmix-pil-jsd" in log


def test_rows_option_and_bad_row(tmp_path):
    proc, log = run_script(["pipelines/bench_throughput.py", "--rows", "dali-cpu,nope"])
    assert proc.returncode == 2 and "unknown row" in log
    proc, log = run_script(["pipelines/bench_throughput.py", "--methods", "ipmix,cutmix"])
    assert proc.returncode == 2 and "unknown method(s) ['cutmix']" in log


def test_memory_check_cpu_mode(tmp_path):
    out = tmp_path / "mem.json"
    proc, log = run_script(["pipelines/gpu_memory_check.py", "--device", "cpu", *TINY,
                            "--cache-dir", tmp_path / "cache", "--batches", "6", "--batch-size", "4",
                            "--interval", "1", "--warmup", "1", "--threads", "1", "--json", out])
    data = json.loads(out.read_text())
    assert data["batches_done"] == 6 and len(data["samples"]) == 6
    assert data["verdict"]["metric"] == "rss" and data["verdict"]["verdict"] in ("flat", "GROWS")
    assert proc.returncode == (0 if data["verdict"]["verdict"] == "flat" else 1), log[-4000:]
    assert "VERDICT" in log


def test_gpu_profile_runs_every_variant_on_the_cpu(tmp_path):
    """pipelines/gpu_profile.py (run on lent GPUs, where a broken variant costs device time) on the CPU:
    every variant that exists on the CPU prints a speed and a ratio to plain DALI; the GPU-only one
    prints its error instead of stopping the others."""
    from script_data import make_imagefolder, make_mixing
    data = make_imagefolder(tmp_path / "data", classes=2, train_per_class=4, val_per_class=0)
    mixing = make_mixing(tmp_path / "mixing", n=4, size=64)
    keys = "plain,plain-fused,cached,full-decode,prefetch3,unfused,device,per-sample,k1t0,ceiling,ceiling1,nojsd,read-feed,read-reader"
    proc, log = run_script(["pipelines/gpu_profile.py", "--data", data / "train", "--mixing", mixing,
                            "--device", "cpu", "--batch-size", "4", "--batches", "1", "--warmup", "1",
                            "--threads", "1", "--variants", keys], timeout=300)
    assert proc.returncode == 0, log[-6000:]
    table = log[log.index("samples/s, batch 4"):].splitlines()[1:]
    assert len(table) == len(keys.split(",")), log[-3000:]
    for line in table:
        if "cache in GPU memory" in line:
            assert "error: ValueError: mixing_cache='device' needs device='gpu'" in line
        else:
            assert "error" not in line and line.rstrip().endswith("x"), line


def test_cifar_row_set_cpu(tmp_path):
    """--preset cifar: plain DALI from memory, the CIFAR training pipeline from memory (images=,
    labels=) and the per-image loader on the same arrays, JSD on and off, in one table with ratios."""
    out = tmp_path / "cifar.json"
    proc, log = run_script(["pipelines/bench_throughput.py", "--preset", "cifar", "--cifar-count", "24",
                            "--gen-mixing-count", "4", "--gen-mixing-size", "64", "--cache-dir", tmp_path / "cache",
                            "--rows", "dali-cpu,ipmix-native-cpu,ipmix-cpu,pil", "--jsd", "both",
                            "--cpu-batch-size", "8", "--batches", "1", "--warmup", "1", "--workers", "1",
                            "--json", out], timeout=180)
    assert proc.returncode == 0, log[-6000:]
    data = json.loads(out.read_text())
    assert data["meta"]["preset"] == "cifar" and data["meta"]["size"] == 32
    assert data["meta"]["data_info"]["count"] == 24 and data["targets"] == []
    rows = {r["name"]: r for r in data["rows"]}
    from dali_ipmix import native
    for name in ("dali-cpu", "ipmix-cpu-jsd", "ipmix-cpu", "pil-jsd", "pil", "ipmix-native-cpu-jsd"):
        if name.startswith("ipmix-native") and not native.available():
            continue
        assert rows[name]["status"] == "ok", rows[name]
        assert rows[name]["samples_per_s"] > 0
    assert rows["dali-cpu"]["x_dali_cpu"] == pytest.approx(1.0) and rows["pil-jsd"]["x_pil"] == pytest.approx(1.0)
    assert "throughput at 32 px, cifar preset" in log and "samples/s = training samples/s (from memory)" in log
