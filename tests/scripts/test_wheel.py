"""What a user installs: the sdist, built into a wheel by pip in an isolated build environment, holds the
compiled plugin; installed into a fresh virtual environment with only the dependencies its metadata
names (DALI, NumPy, Pillow), run from a folder outside the repository, the native operator loads from
site-packages and runs in a CPU pipeline, and the parts that need an extra say which.

Slow (an sdist, a wheel build with CMake, two virtual environments' installs: a few minutes on 2 cores,
most of it pip); CI runs it."""

import glob
import json
import os
import re
import subprocess
import sys
import textwrap
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = pytest.mark.slow

USER_SCRIPT = textwrap.dedent("""
    import json, os, sys, site, subprocess
    import numpy as np
    import nvidia.dali
    from nvidia.dali import fn as dali_fn, pipeline_def
    import dali_ipmix
    from dali_ipmix import IPMixConfig, native
    from dali_ipmix.fn import ipmix

    report = {"version": dali_ipmix.__version__, "package": dali_ipmix.__file__,
              "library": native.library_path(), "stamp": native.build_stamp(),
              "dali": nvidia.dali.__version__, "site": site.getsitepackages()}
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (32, 40, 3), dtype=np.uint8) for _ in range(4)]

    @pipeline_def(batch_size=4, num_threads=2, device_id=None, seed=7)
    def pipe():
        x = dali_fn.external_source(source=lambda: images, layout="HWC")
        m = dali_fn.external_source(source=lambda: images[::-1], layout="HWC")
        return ipmix(x, m, config=IPMixConfig.cifar(), seed=3, backend="native")

    p = pipe()
    p.build()
    outs = p.run()
    report["output"] = [[list(np.asarray(o[i]).shape) for i in range(len(o))] for o in outs]
    report["finite"] = bool(all(np.isfinite(np.asarray(o[i])).all() for o in outs for i in range(len(o))))
    # A ready pipeline (files, keyed crops, mixing cache, the native operator), driven by DALI alone.
    from PIL import Image
    from dali_ipmix import training_pipeline
    for c in range(2):
        os.makedirs(f"tree/c{c}", exist_ok=True)
        os.makedirs("mix", exist_ok=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(f"tree/c{c}/{i}.png")
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(f"mix/{c}{i}.png")
    tp = training_pipeline("tree", mixing_root="mix", batch_size=2, preset="cifar", device="cpu",
                           num_threads=1, seed=5)
    tp.build()
    batch = tp.run()
    report["ready"] = [list(np.asarray(batch[0][i]).shape) for i in range(len(batch[0]))]
    report["ready_backend"] = tp.source.backend
    for name in ("torch", "skimage", "tqdm"):
        try:
            __import__(name)
            report[name] = True
        except ImportError:
            report[name] = False
    try:
        dali_ipmix.IPMixIterator
        report["iterator"] = "imported"
    except ImportError as err:
        report["iterator"] = str(err)
    print("REPORT " + json.dumps(report))
""")


def _run(cmd, **kw):
    done = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_the_wheel_holds_the_plugin_and_runs_outside_the_repository(tmp_path):
    # 1. The sdist, from the repository's tracked and untracked-but-not-ignored files.
    sdist_dir = tmp_path / "sdist"
    code = f"import scikit_build_core.build as b; print(b.build_sdist({str(sdist_dir)!r}))"
    os.makedirs(sdist_dir)
    name = _run([sys.executable, "-c", code], cwd=REPO).strip().splitlines()[-1]
    sdist = sdist_dir / name
    # 2. pip builds the wheel from the sdist in an isolated build environment (CMake builds the plugin
    #    against the DALI that pyproject.toml names), as `pip install dali-ipmix` does from an sdist.
    env = {k: v for k, v in os.environ.items() if k not in ("DALI_IPMIX_NATIVE_LIB", "PYTHONPATH")}
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"), str(sdist)],
         env=env, cwd=tmp_path)
    (wheel,) = glob.glob(str(tmp_path / "dist" / "dali_ipmix-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "dali_ipmix/libdali_ipmix_native.so" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    requires = sorted(line.split(": ", 1)[1] for line in metadata.splitlines()
                      if line.startswith("Requires-Dist:") and "extra ==" not in line)
    (dali,) = [r for r in requires if r.startswith("nvidia-dali-cuda")]
    assert "==" in dali   # exactly the release the plugin is compiled against
    assert {re.split("[=<>]", r)[0] for r in requires} == {dali.split("==")[0], "numpy", "pillow"}
    # 3. A fresh venv with the wheel and only what its metadata names; run from outside the repository.
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    python = str(venv / "bin" / "python")
    _run([python, "-m", "pip", "install", "-q", wheel], env=env, cwd=tmp_path)
    work = tmp_path / "elsewhere"
    work.mkdir()
    out = _run([python, "-c", USER_SCRIPT], env=env, cwd=work)
    report = json.loads(out.split("REPORT ", 1)[1])
    site_packages = report["site"][0]
    assert report["package"].startswith(site_packages)
    assert report["library"] == os.path.join(site_packages, "dali_ipmix", "libdali_ipmix_native.so")
    assert report["stamp"]["dali"] == report["dali"] and dali.endswith("==" + report["dali"])
    assert report["output"] == [[[32, 40, 3]] * 4] * 3 and report["finite"]   # JSD: clean, view 1, view 2
    assert report["ready"] == [[3, 32, 32]] * 2 and report["ready_backend"] == "native"
    # The light core: no torch, scikit-image or tqdm was installed, and what needs them names the extra.
    assert not (report["torch"] or report["skimage"] or report["tqdm"])
    assert "pip install 'dali-ipmix[torch]'" in report["iterator"]
    # The CLI's fractals command needs nothing more either.
    cli = str(venv / "bin" / "dali-ipmix")
    printed = _run([cli, "fractals", str(work / "fr"), "-n", "3", "--size", "32", "--quiet"], env=env, cwd=work)
    assert "wrote 3 fractal pictures" in printed and len(os.listdir(work / "fr")) == 3
    readelf = subprocess.run(["readelf", "-d", report["library"]], capture_output=True, text=True)
    if readelf.returncode == 0:
        assert "$ORIGIN/../nvidia/dali" in readelf.stdout and REPO not in readelf.stdout
