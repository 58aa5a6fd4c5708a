"""Bad input: each case is handled correctly or stops with an error naming the file or folder."""

import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from dali_ipmix.files import BadImageError, check_image
from dali_ipmix.iterator import IPMixIterator
from dali_ipmix.graphs import training_pipeline, validation_pipeline

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
    assert pipe.source.num_samples == 9 and path not in pipe.source.files
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
    assert pipe.source.num_samples == 9


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
    names = [os.path.basename(f) for f in pipe.source.files]
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


# ------------------------------------------------------------------ files changed under a running job
_MUTATE = r"""
import os, sys
sys.path.insert(0, {tests!r})
from dali_data import make_tree, make_mixing
from dali_ipmix.iterator import IPMixIterator
from dali_ipmix.graphs import training_pipeline
index = make_tree({root!r} + "/data", per_class=(8, 8, 8), hw=(120, 160))
make_mixing({root!r} + "/mix")
it = IPMixIterator(training_pipeline({root!r} + "/data", mixing_root={root!r} + "/mix", batch_size=4,
                                     preset={preset!r}, size=16, seed=0, device="cpu", num_threads=2))
blobs = {{}}
for path, _ in index.values():          # prefetched batches are in DALI's hands now
    blobs[path] = open(path, "rb").read()
    open(path, "wb").close()            # truncated in place, as a writer does before writing
try:
    for batch in it:
        pass
    print("NO ERROR")
except RuntimeError as err:
    print("ERROR", err)
for path, data in blobs.items():        # rewritten with the same bytes: read consistently again
    with open(path, "wb") as f:
        f.write(data)
it = IPMixIterator(training_pipeline({root!r} + "/data", mixing_root={root!r} + "/mix", batch_size=4,
                                     preset={preset!r}, size=16, seed=0, device="cpu", num_threads=2))
for path in list(blobs)[:3]:
    with open(path, "wb") as f:
        f.write(blobs[path])
print("SAMPLES", sum(y.numel() for _, y in it))
os.remove(list(blobs)[0])
try:
    for _ in range(3):
        for batch in it:
            pass
    print("NO ERROR")
except RuntimeError as err:
    print("GONE", err)
"""


@pytest.mark.parametrize("preset", ["cifar", "imagenet"])
def test_files_rewritten_or_removed_while_training_give_an_error_naming_them(tmp_path, preset):
    """DALI's memory-mapped reads died with SIGBUS when a file shrank under them; plain reads do not.
    The ImageNet preset's keyed crop reads the shape first (``peek_image_shape``): its error too."""
    import subprocess
    import sys
    code = _MUTATE.format(tests=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "support"), root=str(tmp_path), preset=preset)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])   # -7: SIGBUS
    out = proc.stdout
    assert "ERROR" in out and "empty file (0 bytes)" in out and "img_0" in out, out
    assert "SAMPLES 24" in out, out
    assert "GONE" in out and "file does not exist" in out and "img_000.jpg" in out, out


# ---------------------------------------------------------------------------- decompression bombs
def _claiming(data: bytes, fmt: str, width: int, height: int) -> bytes:
    """A valid small JPEG / PNG whose header claims ``width x height``."""
    import struct
    import zlib
    b = bytearray(data)
    if fmt == "jpg":
        i = b.index(b"\xff\xc0")
        b[i + 5:i + 9] = struct.pack(">HH", height, width)
    else:
        i = b.index(b"IHDR")
        b[i + 4:i + 12] = struct.pack(">II", width, height)
        b[i + 17:i + 21] = struct.pack(">I", zlib.crc32(bytes(b[i:i + 17])))
    return bytes(b)


def _png_bytes():
    from io import BytesIO
    buf = BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("fmt,side", [("jpg", 12000), ("png", 60000), ("jpg", 60000)])
def test_decompression_bomb_header_is_a_bad_file_naming_it(tree, dali_mixing, fmt, side):
    data = solid_jpeg_bytes() if fmt == "jpg" else _png_bytes()
    path = spoil(tree[0], f"bomb.{fmt}", _claiming(data, fmt, side, side))
    assert len(open(path, "rb").read()) < 1000
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # PIL's own warning names no file: none may escape
        reason = check_image(path)
    assert reason is not None and "too large" in reason
    with pytest.raises(BadImageError) as err:
        train(tree[0], dali_mixing)
    assert path in str(err.value) and "too large" in str(err.value)
    with pytest.warns(UserWarning, match="bomb"):
        pipe = train(tree[0], dali_mixing, on_bad_file="skip")
    assert path not in pipe.source.files and pipe.source.num_samples == 9


# ---------------------------------------------------------------------------------- huge labels
def test_sparse_huge_labels_in_a_file_list_answer_at_once(tree, dali_mixing, tmp_path):
    import time
    paths = [tree[1][i][0] for i in range(3)]
    (tmp_path / "list.txt").write_text(f"{paths[0]} 0\n{paths[1]} 2147483647\n{paths[2]} 5\n")
    start = time.perf_counter()
    pipe = train(None, dali_mixing, file_list=str(tmp_path / "list.txt"), batch_size=3)
    assert time.perf_counter() - start < 1.0
    info = pipe.source
    assert len(info.classes) == 2147483648 and info.classes[2147483647] == "2147483647"
    assert info.labels == (0, 2147483647, 5)
    (_, y), = [b for b in IPMixIterator(validation_pipeline(
        None, file_list=str(tmp_path / "list.txt"), batch_size=3, preset="cifar", size=16, device="cpu"))]
    assert y.tolist() == [0, 2147483647, 5]
    (tmp_path / "list.txt").write_text(f"{paths[0]} 0\n{paths[1]} 2147483648\n")
    with pytest.raises(ValueError, match=r"list.txt:2: label 2147483648 is invalid"):
        train(None, dali_mixing, file_list=str(tmp_path / "list.txt"))


# -------------------------------------------------------------------------------- symlink loops
@pytest.mark.parametrize("link,target", [("class_1/up", ".."), ("class_1/self", "."),
                                         ("class_1/deep/loop", "../..")])
def test_directory_links_back_into_the_tree_are_not_followed(tree, dali_mixing, link, target):
    path = os.path.join(tree[0], link)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.symlink(target, path)
    with pytest.warns(UserWarning, match=os.path.basename(link)):
        pipe = train(tree[0], dali_mixing)
    info = pipe.source
    assert info.num_samples == 9 and len(set(info.files)) == 9
    assert [lab for f, lab in zip(info.files, info.labels) if "class_1" in f] == [1, 1, 1]


def test_directory_link_to_a_folder_outside_is_followed(tree, dali_mixing, tmp_path):
    make_tree(tmp_path / "elsewhere", per_class=(2,), start=50)
    os.symlink(os.path.join(str(tmp_path / "elsewhere"), "class_0"), os.path.join(tree[0], "class_2", "more"))
    info = train(tree[0], dali_mixing).source
    assert info.num_samples == 11
    assert [os.path.basename(f) for f in info.files if "/more/" in f] == ["img_050.jpg", "img_051.jpg"]


# --------------------------------------------------------------------------- file names and lists
def _bytes_name_image(folder, name: bytes, colour, hw=(20, 24)):
    """A solid JPEG whose file name is the raw bytes ``name`` (not valid UTF-8: legal on Linux)."""
    path = os.path.join(os.fsencode(str(folder)), name)
    img = np.empty((*hw, 3), np.uint8)
    img[:] = colour
    with open(path, "wb") as f:
        Image.fromarray(img).save(f, format="JPEG", quality=95)
    return os.fsdecode(path)


@pytest.mark.parametrize("mixing_cache", [True, False])
def test_file_names_that_are_not_utf8_are_read(tree, tmp_path, mixing_cache):
    """os.walk gives such names with surrogates; the feed passes their bytes (os.fsencode), so the
    sample and the mixing picture are read, not a UnicodeEncodeError."""
    root, _ = tree
    path = _bytes_name_image(os.path.join(root, "class_1"), b"caf\xe9.jpg", index_colour(9))
    mix_dir = os.fsdecode(os.path.join(os.fsencode(str(tmp_path)), b"mix\xff"))
    os.makedirs(mix_dir)
    _bytes_name_image(mix_dir, b"m\xe9lange.jpg", (90, 40, 200), hw=(30, 30))
    pipe = train(root, mix_dir, batch_size=5, mixing_cache=mixing_cache)
    assert path in pipe.source.files
    indices, labels = collect_epoch(IPMixIterator(pipe))
    assert sorted(indices) == list(range(10)) and labels[indices.index(9)] == 1
    (images, _), *_ = IPMixIterator(validation_pipeline(root, batch_size=10, preset="cifar", size=16,
                                                        device="cpu"))
    assert sorted(decode_index(x) for x in images) == list(range(10))


def test_bad_file_with_a_name_that_is_not_utf8_is_named_printably(tree, dali_mixing):
    bad = os.path.join(os.fsencode(tree[0]), b"class_1", b"bad\xff.jpg")
    with open(bad, "wb") as f:
        f.write(b"not a jpeg" * 20)
    with pytest.raises(BadImageError) as err:
        train(tree[0], dali_mixing)
    text = str(err.value)
    assert "bad\\xff.jpg: not an image" in text
    text.encode("utf-8")   # printable: no lone surrogates


def test_unlistable_folder_is_an_error_naming_it(tree, dali_mixing, tmp_path, monkeypatch):
    """os.walk without onerror skipped a folder it could not list, and its images with it."""
    hidden = os.path.join(tree[0], "class_2", "locked")
    os.makedirs(hidden)
    real = os.scandir

    def scandir(path="."):
        if os.fspath(path) == hidden:
            raise PermissionError(13, "Permission denied", hidden)
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(PermissionError) as err:
        train(tree[0], dali_mixing)
    assert f"cannot list folder {hidden} (Permission denied)" in str(err.value)
    mix_locked = tmp_path / "mix"
    write_image(str(mix_locked / "ok.png"), np.zeros((8, 8, 3), np.uint8))
    hidden = str(mix_locked / "sub")
    os.makedirs(hidden)
    with pytest.raises(PermissionError, match="cannot list folder .*mix/sub"):
        train(tree[0], str(mix_locked))


@pytest.mark.skipif(os.geteuid() == 0, reason="root lists any folder")
def test_unlistable_folder_for_real(tree, dali_mixing):
    locked = os.path.join(tree[0], "class_2", "locked")
    os.makedirs(locked)
    os.chmod(locked, 0)
    try:
        with pytest.raises(PermissionError, match="cannot list folder .*locked"):
            train(tree[0], dali_mixing)
    finally:
        os.chmod(locked, 0o755)


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
def test_file_list_in_utf8_with_or_without_bom(tree, dali_mixing, tmp_path, bom):
    root, index = tree
    os.rename(index[0][0], os.path.join(root, "class_0", "ünïcode.jpg"))
    lines = ["class_0/ünïcode.jpg 0"] + [f"{os.path.relpath(index[i][0], root)} {index[i][1]}" for i in (1, 4)]
    (tmp_path / "list.txt").write_bytes(bom + "\n".join(lines).encode("utf-8") + b"\n")
    info = train(root, dali_mixing, file_list=str(tmp_path / "list.txt")).source
    assert info.labels == (0, 0, 1) and info.files[0].endswith("ünïcode.jpg")


@pytest.mark.parametrize("encoding,line", [("latin-1", 2), ("utf-16", 1)])
def test_file_list_in_another_encoding_is_refused_naming_file_and_line(tree, dali_mixing, tmp_path,
                                                                      encoding, line):
    root, index = tree
    os.rename(index[0][0], os.path.join(root, "class_0", "é.jpg"))
    text = f"{os.path.relpath(index[1][0], root)} 0\nclass_0/é.jpg 0\n"
    (tmp_path / "list.txt").write_bytes(text.encode(encoding))
    with pytest.raises(ValueError) as err:
        train(root, dali_mixing, file_list=str(tmp_path / "list.txt"))
    assert f"list.txt:{line}: not valid UTF-8" in str(err.value), str(err.value)


def _damage_png_body(path):
    """Zeros over the middle of the image data: the header (and the IEND marker) stay intact, so the
    header check passes; decoding fails (zlib / CRC error)."""
    b = bytearray(open(path, "rb").read())
    i = b.index(b"IDAT") + 4
    mid = i + (len(b) - i) // 2
    b[mid:mid + 64] = bytes(64)
    open(path, "wb").write(bytes(b))


@pytest.mark.parametrize("preset", ["cifar", "imagenet"])
def test_damaged_body_is_named_by_the_full_recheck_of_the_batches_in_flight(tmp_path, dali_mixing, preset):
    rng = np.random.default_rng(1)
    root = tmp_path / "data"
    for c in range(2):
        for i in range(3):   # noise: the image data spans many bytes
            write_image(str(root / f"class_{c}" / f"n_{c}{i}.png"),
                        rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
    bad = str(root / "class_1" / "n_11.png")
    _damage_png_body(bad)
    assert check_image(bad, "header") is None and "corrupt" in check_image(bad, "full")
    with pytest.raises(RuntimeError) as err:
        for _ in IPMixIterator(train(str(root), dali_mixing, preset=preset, batch_size=3)):
            pass
    text = str(err.value)
    assert f"{bad}: corrupt image" in text and "DALI said" in text, text
    assert text.count("corrupt image") == 1   # the intact files in flight are not named


# ------------------------------------------------------------------------ elongated images
def _elongated(path, w=65000, h=1):
    rng = np.random.default_rng(2)
    write_image(str(path), rng.integers(0, 256, (h, w, 3), dtype=np.uint8)[:, :, :1].repeat(3, 2),
                quality=75)
    return str(path)


def test_elongated_image_is_refused_by_its_size_after_the_presets_resize(tree, tmp_path):
    """1 x 65,000 pixels passes the pixel limit, but resized to a 256 shorter side it would be
    256 x 16,640,000 (12.8 GB: DALI died with std::bad_alloc): a named bad file instead."""
    path = _elongated(tmp_path / "mix" / "long.jpg")
    write_image(str(tmp_path / "mix" / "ok.png"), np.zeros((300, 300, 3), np.uint8))
    assert os.path.getsize(path) < 200_000
    assert check_image(path) is None
    reason = check_image(path, shorter_side=256)
    assert "image too large after the resize to a shorter side of 256 px: 65000x1 becomes " \
           "16640000x256 = 4,259,840,000 pixels" in reason, reason
    with pytest.raises(BadImageError) as err:   # the ImageNet preset at 224: mixing side 256
        train(tree[0], str(tmp_path / "mix"), preset="imagenet", size=224)
    assert f"{path}: image too large after the resize" in str(err.value)
    with pytest.warns(UserWarning, match="long.jpg"):
        pipe = train(tree[0], str(tmp_path / "mix"), preset="imagenet", size=224, on_bad_file="skip",
                     mixing_cache=False)
    assert path not in pipe.source.mixing_files
    # Validation data of the ImageNet preset are resized to a shorter side of 256 too.
    bad = _elongated(os.path.join(tree[0], "class_0", "long.jpg"), w=1, h=65000)
    with pytest.raises(BadImageError, match="long.jpg: image too large after the resize to a shorter side "
                                            "of 256 px: 1x65000 becomes 256x16640000"):
        validation_pipeline(tree[0], batch_size=2, preset="imagenet", device="cpu")
    # The CIFAR preset resizes both sides to the output size: nothing grows with the aspect.
    assert bad in validation_pipeline(tree[0], batch_size=2, preset="cifar", size=16, device="cpu").source.files
