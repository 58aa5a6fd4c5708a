"""The procedural fractal mixing set and the ``dali-ipmix`` command line."""

import os

import numpy as np
import pytest
from PIL import Image

from dali_ipmix.cli import main
from dali_ipmix.fractals import random_ifs, render_fractals, write_fractal_set


def test_render_shape_dtype_and_content():
    imgs = render_fractals(6, 48, seed=0)
    assert imgs.shape == (6, 48, 48, 3) and imgs.dtype == np.uint8
    lit = (imgs.max(-1) > 0).mean((1, 2))
    assert (lit >= 0.04).all() and (lit < 0.95).all()        # a figure on a black background
    assert (imgs.reshape(6, -1, 3).std(1).max(1) > 10).all()  # coloured, not flat


def test_render_is_seeded():
    a, b, c = render_fractals(3, 32, seed=5), render_fractals(3, 32, seed=5), render_fractals(3, 32, seed=6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a[0], a[1])   # pictures of one call differ


def test_random_ifs_is_contractive_with_valid_probabilities():
    A, b, cdf, colors = random_ifs(np.random.default_rng(0), 50)
    assert np.linalg.norm(A, ord=2, axis=(-2, -1)).max() < 0.86
    assert np.all(np.diff(cdf, axis=1) >= 0) and np.allclose(cdf[:, -1], 1)
    assert (colors >= 0).all() and (colors <= 1).all()
    maps_used = (np.diff(cdf, axis=1, prepend=0) > 0).sum(1)   # maps with non-zero probability
    assert set(maps_used.tolist()) <= {2, 3, 4} and len(set(maps_used.tolist())) > 1


def test_write_set_and_reproducibility(tmp_path):
    paths = write_fractal_set(tmp_path / "a", 5, size=32, seed=1, chunk=2, progress=False)
    assert [os.path.basename(p) for p in paths] == [f"fractal_{i:05d}.jpg" for i in range(5)]
    again = write_fractal_set(tmp_path / "b", 5, size=32, seed=1, chunk=2, progress=False)
    for p, q in zip(paths, again):
        im = Image.open(p)
        assert im.size == (32, 32) and im.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(im), np.asarray(Image.open(q)))


def test_cli_fractals(tmp_path, capsys):
    assert main(["fractals", str(tmp_path / "fr"), "-n", "3", "--size", "24", "--seed", "2", "--quiet"]) == 0
    assert sorted(os.listdir(tmp_path / "fr")) == [f"fractal_{i:05d}.jpg" for i in range(3)]
    assert "wrote 3 fractal pictures" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["fractals", "x", "-n", "0"], ["fractals", "x"],
                                  ["fractals", "x", "-n", "2", "--size", "-4"], []])
def test_cli_rejects_bad_arguments(argv, capsys):
    with pytest.raises(SystemExit) as err:
        main(argv)
    assert err.value.code == 2
    assert "error" in capsys.readouterr().err


def test_cli_reports_runtime_errors(tmp_path, capsys):
    assert main(["fractals", str(tmp_path), "-n", "2", "--size", "4", "--quiet"]) == 1
    assert "size=4 is invalid" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["fractals", str(blocker / "sub"), "-n", "1", "--quiet"]) == 1
    assert str(blocker) in capsys.readouterr().err


def test_png_format_and_bad_format(tmp_path):
    paths = write_fractal_set(tmp_path / "p", 2, size=16, seed=3, progress=False, file_format="png")
    assert [os.path.basename(p) for p in paths] == ["fractal_00000.png", "fractal_00001.png"]
    assert Image.open(paths[0]).format == "PNG"
    with pytest.raises(ValueError, match="file_format='gif' is invalid"):
        write_fractal_set(tmp_path / "g", 1, size=16, file_format="gif")
