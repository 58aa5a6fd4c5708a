"""Bad input: each case is handled correctly or stops with an error naming the file or folder."""

import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from dali_ipmix.files import BadImageError, check_image
from dali_ipmix.iterator import IPMixIterator
from dali_ipmix.pipelines import training_pipeline, validation_pipeline

from dali_data import MEAN, STD, collect_epoch, decode_index, index_colour, make_tree, write_image


def train(root, mixing, **kw):
    args = dict(mixing_root=mixing, batch_size=4, preset="cifar", size=16, seed=0, device="cpu",
                num_threads=2)
    args.update(kw)
    return training_pipeline(root, **args)


def solid_jpeg_bytes(colour=(10, 200, 30), hw=(20, 24)):
    img = np.empty((*hw, 3), np.uint8)
    img[:] = colour
    from io import BytesIO
    buf = BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


@pytest.fixture
def tree(tmp_path):
    """A fresh 3 x 3 colour-coded tree per test, to be spoiled: ``(root, {index: (path, label)})``."""
    root = tmp_path / "data"
    return str(root), make_tree(root, per_class=(3, 3, 3))


def spoil(root, name, data):
    path = os.path.join(root, "class_1", name)
    with open(path, "wb") as f:
        f.write(data)
    return path


# ------------------------------------------------------------------------------- corrupt files
@pytest.mark.parametrize("name,data,reason", [
    ("garbage.jpg", b"this is not a JPEG at all" * 20, "not an image"),
    ("truncated.jpg", solid_jpeg_bytes()[:300], "corrupt image"),
    ("empty.jpg", b"", "empty file"),
    ("text.png", b"hello, world\n", "not an image"),
    ("anim.png", b"GIF89a" + b"\x00" * 64, "unsupported image format 'GIF'"),
])
def test_corrupt_or_non_image_file_is_an_error_naming_it(tree, dali_mixing, name, data, reason):
    if name == "anim.png":   # a real GIF saved under an image extension DALI would try to read
        path = os.path.join(tree[0], "class_1", name)
        Image.new("RGB", (8, 8)).save(path, format="GIF")
    else:
        path = spoil(tree[0], name, data)
    with pytest.raises(BadImageError) as err:
        train(tree[0], dali_mixing)
    assert path in str(err.value) and reason in str(err.value)
    assert err.value.bad[0][0] == path
    with pytest.raises(BadImageError, match=name):
        validation_pipeline(tree[0], batch_size=2, device="cpu")


def test_skip_policy_leaves_bad_files_out_with_a_warning(tree, dali_mixing):
    path = spoil(tree[0], "garbage.jpg", b"not an image")
    with pytest.warns(UserWarning, match="garbage.jpg"):
        pipe = train(tree[0], dali_mixing, on_bad_file="skip")
    assert pipe.ipmix_info.num_samples == 9 and path not in pipe.ipmix_info.files
    assert sorted(collect_epoch(IPMixIterator(pipe))[0]) == list(range(9))


def test_truncated_jpeg_unchecked_still_stops_with_the_file_name(tree, dali_mixing):
    """With validation off, DALI's decoder stops (no hang, no grey image); its message does not always
    name the file, so the iterator finds and names it."""
    spoil(tree[0], "truncated.jpg", solid_jpeg_bytes()[:300])
    with pytest.raises(RuntimeError, match="truncated.jpg"):   # the first batch runs in __init__
        collect_epoch(IPMixIterator(train(tree[0], dali_mixing, validate="none", batch_size=10)))


def test_full_validation_decodes_every_file(tmp_path):
    data = solid_jpeg_bytes()
    path = tmp_path / "t.jpg"
    path.write_bytes(data[:300] + b"\xff\xd9")   # truncated, but ends with an end-of-image marker
    assert check_image(str(path), "none") is None
    assert "corrupt" in check_image(str(path), "full")


def test_non_image_extension_is_skipped_with_a_warning(tree, dali_mixing):
    notes = os.path.join(tree[0], "class_0", "notes.txt")
    open(notes, "w").write("labels were checked by hand\n")
    open(os.path.join(tree[0], "class_0", ".DS_Store"), "w").write("x")   # hidden: ignored
    with pytest.warns(UserWarning, match="notes.txt") as record:
        pipe = train(tree[0], dali_mixing)
    assert not any(".DS_Store" in str(w.message) for w in record)
    assert pipe.ipmix_info.num_samples == 9


# -------------------------------------------------------------------- colour modes and formats
def _modes(root):
    """One image per colour mode / format, with its expected RGB centre colour."""
    base = np.empty((20, 24, 3), np.uint8)
    base[:] = (200, 120, 40)
    rgb = Image.fromarray(base)
    cases = {}
    rgb.convert("L").save(os.path.join(root, "gray.jpg"), quality=95)
    cases["gray.jpg"] = (rgb.convert("L").getpixel((0, 0)),) * 3
    rgb.convert("CMYK").save(os.path.join(root, "cmyk.jpg"), quality=95)
    cases["cmyk.jpg"] = (200, 120, 40)
    rgb.save(os.path.join(root, "plain.png"))
    cases["plain.png"] = (200, 120, 40)
    rgba = rgb.convert("RGBA")
    rgba.putalpha(100)
    rgba.save(os.path.join(root, "rgba.png"))
    cases["rgba.png"] = (200, 120, 40)   # alpha dropped, as PIL's convert("RGB")
    rgb.convert("LA").save(os.path.join(root, "la.png"))
    cases["la.png"] = (rgb.convert("L").getpixel((0, 0)),) * 3
    rgb.convert("P", palette=Image.ADAPTIVE).save(os.path.join(root, "palette.png"))
    cases["palette.png"] = (200, 120, 40)
    Image.fromarray(np.full((20, 24), 40000, np.uint16)).save(os.path.join(root, "gray16.png"))
    cases["gray16.png"] = (round(40000 / 257),) * 3
    rgb.save(os.path.join(root, "plain.bmp"))
    cases["plain.bmp"] = (200, 120, 40)
    rgb.save(os.path.join(root, "plain.webp"), lossless=True)
    cases["plain.webp"] = (200, 120, 40)
    rgb.save(os.path.join(root, "plain.tif"))
    cases["plain.tif"] = (200, 120, 40)
    return cases


def test_grayscale_cmyk_png_rgba_palette_become_rgb(tmp_path, dali_mixing):
    os.makedirs(tmp_path / "data" / "only")
    cases = _modes(str(tmp_path / "data" / "only"))
    pipe = validation_pipeline(str(tmp_path / "data"), batch_size=len(cases), preset="cifar", size=16,
                               device="cpu", num_threads=2)
    (images, _), = [b for b in IPMixIterator(pipe)]
    names = [os.path.basename(f) for f in pipe.ipmix_info.files]
    for name, img in zip(names, images):
        got = (img[:, 8, 8].numpy() * STD + MEAN) * 255
        np.testing.assert_allclose(got, cases[name], atol=3, err_msg=name)
    # and the same files go through IPMix training
    it = IPMixIterator(train(str(tmp_path / "data"), dali_mixing, batch_size=len(cases)))
    (clean, v1, v2), _ = next(it)
    assert clean.shape == (len(cases), 3, 16, 16) and torch.isfinite(v1).all()


# -------------------------------------------------------------------------------- small images
@pytest.mark.parametrize("preset", ["imagenet", "cifar"])
def test_images_smaller_than_the_crop(tmp_path, preset):
    index = make_tree(tmp_path / "data", per_class=(3, 2), hw=(5, 7))
    mix = tmp_path / "mix"
    write_image(str(mix / "tiny.png"), np.full((3, 4, 3), 90, np.uint8))   # smaller than the crop too
    it = IPMixIterator(train(str(tmp_path / "data"), str(mix), preset=preset, size=24, batch_size=5))
    indices, labels = collect_epoch(it)
    assert sorted(indices) == list(range(5)) and labels == [index[i][1] for i in indices]
    val = IPMixIterator(validation_pipeline(str(tmp_path / "data"), batch_size=5, preset=preset, size=24,
                                            device="cpu"))
    (images, labels), = list(val)
    assert images.shape == (5, 3, 24, 24)
    assert [decode_index(x) for x in images] == list(range(5))


# ------------------------------------------------------------------------ empty and missing paths
def test_empty_data_folder(tmp_path, dali_mixing):
    os.makedirs(tmp_path / "empty")
    with pytest.raises(ValueError, match="no class folders") as err:
        train(str(tmp_path / "empty"), dali_mixing)
    assert str(tmp_path / "empty") in str(err.value)


def test_empty_class_folder(tree, dali_mixing):
    os.makedirs(os.path.join(tree[0], "class_9"))
    open(os.path.join(tree[0], "class_9", "readme.txt"), "w").close()
    with pytest.raises(ValueError, match="contains no image files") as err, \
            pytest.warns(UserWarning, match="readme.txt"):
        train(tree[0], dali_mixing)
    assert os.path.join(tree[0], "class_9") in str(err.value)


def test_empty_mixing_folder(tree, tmp_path):
    os.makedirs(tmp_path / "mix" / "sub")
    open(tmp_path / "mix" / "sub" / "notes.txt", "w").close()
    with pytest.raises(ValueError, match="contains no image files") as err, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(tree[0], str(tmp_path / "mix"))
    assert str(tmp_path / "mix") in str(err.value)


def test_corrupt_mixing_picture_is_named(tree, tmp_path):
    write_image(str(tmp_path / "mix" / "ok.png"), np.zeros((8, 8, 3), np.uint8))
    bad = tmp_path / "mix" / "deep" / "bad.png"
    os.makedirs(bad.parent)
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(BadImageError, match="bad.png"):
        train(tree[0], str(tmp_path / "mix"))


@pytest.mark.parametrize("which", ["file_root", "mixing_root", "file_list", "listed_file"])
def test_missing_paths_are_named(tree, dali_mixing, tmp_path, which):
    missing = str(tmp_path / "does_not_exist")
    kw = dict(mixing_root=dali_mixing)
    root = tree[0]
    if which == "file_root":
        root = missing
    elif which == "mixing_root":
        kw["mixing_root"] = missing
    elif which == "file_list":
        root, kw["file_list"] = None, missing
    else:
        (tmp_path / "list.txt").write_text(f"{tree[1][0][0]} 0\nnope/missing.jpg 1\n")
        root, kw["file_list"] = None, str(tmp_path / "list.txt")
        missing = "missing.jpg"
    with pytest.raises(FileNotFoundError, match=missing.replace("\\", "\\\\")):
        train(root, kw.pop("mixing_root"), **kw)


def test_file_root_that_is_a_file_and_no_source_at_all(tree, dali_mixing):
    with pytest.raises(NotADirectoryError, match="img_000.jpg"):
        train(tree[1][0][0], dali_mixing)
    with pytest.raises(ValueError, match="file_root .* or file_list"):
        train(None, dali_mixing)


@pytest.mark.parametrize("line", ["just_a_path.jpg", "a.jpg minus", "a.jpg -1"])
def test_bad_file_list_line_is_named(tmp_path, dali_mixing, line):
    (tmp_path / "list.txt").write_text(f"\n{line}\n")
    with pytest.raises(ValueError, match=r"list.txt:2"):
        train(None, dali_mixing, file_list=str(tmp_path / "list.txt"))


def test_empty_file_list(tmp_path, dali_mixing):
    (tmp_path / "list.txt").write_text("# nothing here\n")
    with pytest.raises(ValueError, match="lists no files"):
        train(None, dali_mixing, file_list=str(tmp_path / "list.txt"))


# --------------------------------------------------------------------------------- one mixing image
def test_mixing_set_of_one_image(tree, tmp_path):
    write_image(str(tmp_path / "mix" / "only.png"), np.full((40, 40, 3), index_colour(3), np.uint8))
    it = IPMixIterator(train(tree[0], str(tmp_path / "mix"), batch_size=4))
    for _ in range(2):
        assert sorted(collect_epoch(it)[0]) == list(range(9))


def test_shards_share_the_file_check_and_together_find_a_bad_file(tree, dali_mixing):
    """With on_bad_file="error" each shard checks a disjoint share; exactly one shard owns the bad file."""
    from dali_ipmix.files import list_image_folder
    path = spoil(tree[0], "zz_garbage.jpg", b"not a jpeg" * 50)
    outcomes = []
    for shard in range(3):
        try:
            list_image_folder(tree[0], share=(shard, 3))
            outcomes.append(None)
        except BadImageError as err:
            assert path in str(err)
            outcomes.append(shard)
    assert sum(o is not None for o in outcomes) == 1
    # Skipping needs the same list on every shard: every shard checks (and drops) every bad file.
    with pytest.warns(UserWarning, match="zz_garbage"):
        lists = [list_image_folder(tree[0], on_bad_file="skip", share=(s, 3)).files for s in range(3)]
    assert lists[0] == lists[1] == lists[2] and path not in lists[0]
