"""The two recipes of ``docs/training.md``, checked against the upstream files they patch.

``tests/recipes/`` holds the upstream files as fetched (``*.orig``, with their license headers and
the projects' LICENSE files) and the patches. The patches in the doc are the patches here, byte for
byte; each applies to its upstream file with ``patch -p1 --fuzz=0`` and no offset; the patched scripts
then run a few CPU steps on tiny generated data, in one process and under ``torchrun
--nproc_per_node 2`` (gloo):

1. pytorch/examples ``imagenet/main.py`` itself (mobilenet_v3_small at the ImageNet preset's 224,
   JSD and not, ``--resume`` and ``-e``).
2. DeepLearningExamples ConvNets: the patched ``image_classification/dataloaders.py``'s
   ``get_dali_train_loader`` (its other import stubbed), driven as ``main.py`` / ``training.py``
   drive it (``tests/recipes/run_convnets_loader.py``: a tiny CNN, ``loss(model(input), target)``
   with ``JSDLoss``); the patched ``main.py`` is compiled, not run (it needs dllogger, CUDA, ...).
"""

import json
import os
import py_compile
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dali_data import make_tree
from script_data import make_imagefolder, make_mixing

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "tests" / "recipes"
DOC = REPO / "docs" / "training.md"

# patch -> (upstream repository, commit, {path in the patch: stored upstream file})
UPSTREAM = {
    "imagenet_main.patch": ("pytorch/examples", "77f55b912142e11fcfdf5b530231fb9c52f181e8",
                            {"imagenet/main.py": "imagenet_main.py.orig"}),
    "convnets_dataloaders.patch": (
        "NVIDIA/DeepLearningExamples", "729963dd47e7c8bd462ad10bfac7a7b0b604e6dd",
        {"PyTorch/Classification/ConvNets/image_classification/dataloaders.py": "convnets_dataloaders.py.orig",
         "PyTorch/Classification/ConvNets/main.py": "convnets_main.py.orig"}),
}
CONVNETS = "PyTorch/Classification/ConvNets"
MARKER = re.compile(r"<!-- recipe-patch: tests/recipes/(\S+) -->\n```diff\n(.*?)```\n", re.S)


def diff_size(text):
    """(lines added, lines removed) of a unified diff."""
    lines = text.splitlines()
    added = sum(1 for ln in lines if ln.startswith("+") and not ln.startswith("+++ "))
    removed = sum(1 for ln in lines if ln.startswith("-") and not ln.startswith("--- "))
    return added, removed


def apply_recipe(name, dest):
    """The upstream files of patch ``name`` under ``dest``, patched; returns patch's output."""
    for path, orig in UPSTREAM[name][2].items():
        (dest / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(RECIPES / orig, dest / path)
    proc = subprocess.run(["patch", "-p1", "--fuzz=0", "--no-backup-if-mismatch", "-i", str(RECIPES / name)],
                          cwd=dest, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def run(cmd, cwd, torchrun=0, timeout=300):
    """Run ``cmd`` (python's arguments); its output, or under torchrun each rank's stdout (torchrun's
    per-rank log files: the ranks' lines interleave on the shared stdout)."""
    env = dict(os.environ, OMP_NUM_THREADS="1" if torchrun else "2", PYTHONUNBUFFERED="1")
    logs = Path(cwd) / "torchrun-logs"
    if torchrun:
        cmd = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(torchrun),
               "--log-dir", logs, "--tee", "1", *cmd]
    proc = subprocess.run([sys.executable, *map(str, cmd)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    rank_logs = {int(p.parent.name): p.read_text() for p in logs.glob("*/attempt_*/*/stdout.log")}
    assert proc.returncode == 0, (f"{cmd} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}\n"
                                  + "\n".join(f"rank {r}:\n{t[-3000:]}" for r, t in sorted(rank_logs.items())))
    if torchrun:
        assert sorted(rank_logs) == list(range(torchrun)), sorted(rank_logs)
        return [rank_logs[r] for r in range(torchrun)]
    return proc.stdout + proc.stderr


needs_patch = pytest.mark.skipif(shutil.which("patch") is None, reason="needs the patch program")


# ------------------------------------------------------------------------------------- the doc
def test_doc_patches_are_the_test_data_with_their_sizes_and_commits():
    doc = DOC.read_text(encoding="utf-8")
    found = {m.group(1): m for m in MARKER.finditer(doc)}
    assert set(found) == set(UPSTREAM), f"docs/training.md shows {sorted(found)}, expected {sorted(UPSTREAM)}"
    for name, m in found.items():
        patch = (RECIPES / name).read_text(encoding="utf-8")
        assert m.group(2) == patch, f"the {name} in docs/training.md differs from tests/recipes/{name}"
        section = doc[doc.rfind("\n### ", 0, m.start()):m.start()]
        added, removed = diff_size(patch)
        assert f"{added} lines added, {removed} removed" in section, (name, added, removed)
        repo, commit, files = UPSTREAM[name]
        assert f"{repo}@{commit}" in section, (name, repo, commit)
        for path in files:
            assert f"+++ b/{path}\n" in patch and f"--- a/{path}\n" in patch, (name, path)


def test_upstream_files_keep_their_license():
    assert "BSD 3-Clause License" in (RECIPES / "LICENSE.pytorch-examples").read_text()
    assert "Redistribution and use" in (RECIPES / "LICENSE.DeepLearningExamples-ConvNets").read_text()
    for orig in ("convnets_dataloaders.py.orig", "convnets_main.py.orig"):
        assert "Copyright (c)" in (RECIPES / orig).read_text().splitlines()[0], orig


@needs_patch
@pytest.mark.parametrize("name", sorted(UPSTREAM))
def test_patch_applies_to_upstream_exactly(tmp_path, name):
    """Every hunk's context is upstream's: no fuzz, no offset; the patched Python compiles."""
    out = apply_recipe(name, tmp_path)
    assert not re.search(r"offset|fuzz|FAILED|reversed", out, re.I), out
    for path in UPSTREAM[name][2]:
        py_compile.compile(str(tmp_path / path), doraise=True)
        assert (tmp_path / path).read_text() != (RECIPES / UPSTREAM[name][2][path]).read_text()


# ------------------------------------------------------------------------------------- recipe 1
@pytest.fixture(scope="module")
def inet(tmp_path_factory):
    """ImageFolder of 2 classes (6 train + 3 val images each) and 8 mixing pictures, and the patched
    examples/imagenet/main.py."""
    root = tmp_path_factory.mktemp("recipes")
    make_imagefolder(root / "data", classes=2, train_per_class=6, val_per_class=3)
    make_mixing(root / "mix")
    apply_recipe("imagenet_main.patch", root / "examples")
    return root


def main_args(inet, *extra):
    return [inet / "examples" / "imagenet" / "main.py", inet / "data", "-a", "mobilenet_v3_small", "-p", "1",
            *extra]


@needs_patch
@pytest.mark.slow
def test_imagenet_main_single_process_jsd_resume_and_evaluate(tmp_path, inet):
    """12 training images, batch 4: 3 steps per epoch ('drop'); 6 validation images: 2 batches."""
    import torch
    log = run(main_args(inet, "--mixing-root", inet / "mix", "--jsd", "-b", "4", "-j", "2", "--epochs", "2",
                        "--seed", "0"), tmp_path)
    steps = re.findall(r"Epoch: \[(\d)\]\[(\d)/(\d)\]", log)
    assert steps == [(e, s, "3") for e in "01" for s in "123"], steps
    assert re.findall(r"Test: \[(\d)/(\d)\]", log) == [("1", "2"), ("2", "2")] * 2
    assert len(re.findall(r"^ \* +Acc@1 ", log, re.M)) == 2
    assert torch.load(tmp_path / "checkpoint.pth.tar")["epoch"] == 2
    # --resume: the loop starts at epoch 2 (training_pipeline(start_epoch=2), set_epoch(2)), no JSD
    log = run(main_args(inet, "--mixing-root", inet / "mix", "-b", "4", "-j", "2", "--epochs", "3",
                        "--resume", "checkpoint.pth.tar"), tmp_path)
    assert re.findall(r"Epoch: \[(\d)\]\[(\d)/3\]", log) == [("2", s) for s in "123"], log[-3000:]
    # -e: validation only, no mixing set needed
    log = run(main_args(inet, "-b", "4", "-e", "--resume", "checkpoint.pth.tar"), tmp_path)
    assert "Epoch:" not in log and re.findall(r"Test: \[(\d)/2\]", log) == ["1", "2"]


@needs_patch
@pytest.mark.slow
def test_imagenet_main_torchrun_two_cpu_ranks(tmp_path, inet):
    """2 ranks (gloo, CPU), JSD, batch 2 per rank: 12 training images -> 6 per rank, 3 steps; 6
    validation images -> 3 per rank, 2 batches; the meters' all_reduce gives both ranks one summary."""
    logs = run(main_args(inet, "--mixing-root", inet / "mix", "--jsd", "-b", "2", "-j", "1", "--epochs", "2",
                         "--dist-url", "env://", "--dist-backend", "gloo"), tmp_path, torchrun=2)
    summaries = []
    for log in logs:
        steps = re.findall(r"Epoch: \[(\d)\]\[(\d)/(\d)\]", log)
        assert steps == [(e, s, "3") for e in "01" for s in "123"], steps
        assert re.findall(r"Test: \[(\d)/(\d)\]", log) == [("1", "2"), ("2", "2")] * 2
        summaries.append(re.findall(r"^ \* +Acc@1 .*$", log, re.M))
    assert len(summaries[0]) == 2 and summaries[0] == summaries[1], summaries


# ------------------------------------------------------------------------------------- recipe 2
@pytest.fixture(scope="module")
def convnets(tmp_path_factory):
    """The patched ConvNets tree (autoaugment stubbed), a colour-coded train folder of 21 images in 3
    classes, and mixing pictures."""
    root = tmp_path_factory.mktemp("convnets")
    apply_recipe("convnets_dataloaders.patch", root / "dle")
    pkg = root / "dle" / CONVNETS / "image_classification"
    (pkg / "__init__.py").write_text("")
    (pkg / "autoaugment.py").write_text("class AutoaugmentImageNetPolicy:  # stub: not used by DALI\n    pass\n")
    samples = make_tree(root / "data" / "train")
    make_mixing(root / "mix")
    return root, {i: label for i, (_, label) in samples.items()}


def run_loader(root, out, *extra, torchrun=0):
    run([RECIPES / "run_convnets_loader.py", root / "dle" / CONVNETS, root / "data", root / "mix", out, *extra],
        out.parent, torchrun=torchrun)
    return [json.loads(p.read_text()) for p in sorted(out.parent.glob(out.name + ".*.json"))]


def check_epochs(result, label_of, batch, jsd, steps):
    """Full batches, ``len()`` exact; with JSD (a clean view to read the sample from) each sample at
    most once per epoch with its own label, and a new order every epoch."""
    assert result["loader_len"] == steps
    for epoch in result["epochs"]:
        assert epoch["rows"] == [[3 * batch if jsd else batch, batch]] * steps, epoch["rows"]
        assert len(epoch["labels"]) == steps * batch and set(epoch["labels"]) <= set(label_of.values())
        if jsd:
            assert len(set(epoch["indices"])) == len(epoch["indices"]) == steps * batch
            assert epoch["labels"] == [label_of[i] for i in epoch["indices"]]
    if jsd:
        assert result["epochs"][0]["indices"] != result["epochs"][1]["indices"]   # a new permutation


@needs_patch
@pytest.mark.slow
@pytest.mark.parametrize("jsd", [True, False], ids=["jsd", "plain"])
def test_convnets_dali_train_loader_single_process(tmp_path, convnets, jsd):
    """21 samples, batch 4: 5 full batches per epoch (3N rows with JSD), labels right."""
    root, label_of = convnets
    (result,) = run_loader(root, tmp_path / "out", *(["--jsd"] if jsd else []))
    check_epochs(result, label_of, 4, jsd, 5)


@needs_patch
@pytest.mark.slow
def test_convnets_dali_train_loader_torchrun_two_cpu_ranks(tmp_path, convnets):
    """2 ranks: 10 samples per shard, 2 full batches of 4 on each, the shards disjoint every epoch."""
    root, label_of = convnets
    results = run_loader(root, tmp_path / "out", "--jsd", torchrun=2)
    assert [r["rank"] for r in results] == [0, 1]
    for r in results:
        check_epochs(r, label_of, 4, True, 2)
    for e in range(2):
        assert not set(results[0]["epochs"][e]["indices"]) & set(results[1]["epochs"][e]["indices"])
