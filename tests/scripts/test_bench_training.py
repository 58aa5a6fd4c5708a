"""pipelines/bench_training.py (the end-to-end training step rate) on the CPU with the tiny model, a
few steps and tiny generated data: every row of both models runs and lands in the JSON and the table
with its ratios; the CIFAR row set's plain DALI baseline (samples in memory) crops, flips and
normalises as the CIFAR preset says. No timing assertions: speeds are not checked."""

import json

import numpy as np
import pytest

from test_bench_throughput import TINY, run_script

FEED_ROWS = ("synthetic", "synthetic-jsd", "dali", "ipmix-native-jsd", "ipmix-python-jsd", "pil-jsd")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench_training")
    out = tmp / "training.json"
    tiny = [a if a != "--size" else "--imagenet-size" for a in TINY]
    proc, log = run_script(["pipelines/bench_training.py", "--tiny", "--device", "cpu", *tiny,
                            "--cifar-count", "40", "--cache-dir", tmp / "cache", "--steps", "2",
                            "--warmup", "1", "--batch-size", "4", "--workers", "1", "--json", out],
                           timeout=300)
    assert proc.returncode == 0, log[-6000:]
    return json.loads(out.read_text()), log


@pytest.mark.slow
def test_every_row_of_both_models_runs(smoke):
    data, log = smoke
    from dali_ipmix import native
    rows = {(r["model"], r["name"]): r for r in data["rows"]}
    assert sorted(rows) == sorted((m, n) for m in ("resnet50", "wrn-40-4") for n in FEED_ROWS)
    for (model, name), r in rows.items():
        if name == "ipmix-native-jsd" and not native.available():
            assert r["status"] == "skipped", r
            continue
        assert r["status"] == "ok", r
        assert r["samples"] == 2 * 4 and r["samples_per_s"] > 0 and r["steps"] == 2
        assert r["jsd"] == name.endswith("-jsd")
        assert r["images_per_s"] == pytest.approx(r["samples_per_s"] * (3 if r["jsd"] else 1))
        ceiling = rows[(model, "synthetic-jsd" if r["jsd"] else "synthetic")]["samples_per_s"]
        assert r["x_ceiling"] == pytest.approx(r["samples_per_s"] / ceiling)
        if r["jsd"]:
            assert r["x_pil"] == pytest.approx(r["samples_per_s"] / rows[(model, "pil-jsd")]["samples_per_s"])
        else:
            assert r["x_pil"] is None
    assert data["meta"]["tiny"] and data["meta"]["device"] == "cpu" and data["targets"] == []
    assert data["meta"]["data"]["resnet50"]["size"] == 64 and data["meta"]["data"]["wrn-40-4"]["size"] == 32
    table = log[log.index("training step rate on the CPU"):]
    assert "tiny model WRN-10-1" in table and "x ceiling" in table and "wrn-40-4 (tiny) |   32 |" in table
    assert len([l for l in table.splitlines() if " | " in l and ("resnet50" in l or "wrn-40-4" in l)]) == 12
    assert "fewer than the 30" in log


def test_bad_arguments(tmp_path):
    proc, log = run_script(["pipelines/bench_training.py", "--models", "resnet50,vgg"])
    assert proc.returncode == 2 and "unknown ['vgg']" in log
    proc, log = run_script(["pipelines/bench_training.py", "--steps", "0"])
    assert proc.returncode == 2 and "--steps must be >= 1" in log


def test_plain_memory_pipeline_crops_flips_and_normalises():
    """The plain DALI baseline of the CIFAR rows: every output is the CIFAR crop (a 32 x 32 window of
    the image padded by 4 zeros per side, as PaddedCrop draws it), maybe flipped, ImageNet-normalised;
    labels follow their images; several offsets and both flips occur."""
    from nvidia.dali.plugin.pytorch import DALIGenericIterator
    from dali_ipmix._scripts.benchdata import plain_memory_pipeline
    from dali_ipmix.constants import IMAGENET_MEAN, IMAGENET_STD
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(6)
    it = DALIGenericIterator([plain_memory_pipeline(images, labels, 4, 32, "cpu", 1, seed=3)],
                             ["images", "label"])
    mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
    seen = set()
    for _ in range(6):
        out = next(it)[0]
        x, y = out["images"].numpy(), out["label"].numpy().ravel()
        assert x.shape == (4, 3, 32, 32) and x.dtype == np.float32
        for img, lab in zip(x, y):
            hwc = img.transpose(1, 2, 0) * std + mean   # back to 0..1
            padded = np.pad(images[lab] / 255.0, ((4, 4), (4, 4), (0, 0)))
            found = [(dy, dx, flip) for dy in range(9) for dx in range(9) for flip in (False, True)
                     if np.allclose((padded[dy:dy + 32, dx:dx + 32][:, ::-1] if flip else
                                     padded[dy:dy + 32, dx:dx + 32]), hwc, atol=1e-3)]
            assert found, f"sample of label {lab} is no padded crop of its image"
            seen.update(found)
    assert len({(dy, dx) for dy, dx, _ in seen}) > 3 and {f for *_, f in seen} == {False, True}
