"""Listing and checking the image files a pipeline will read, in Python, before DALI sees them.

DALI's decoders stop a running pipeline on a bad file, and for some faults (a file that is not an
image at all) their message does not name it. So every file is listed and checked here first, and a
problem stops with an error that names the file or folder (or, with ``on_bad_file="skip"``, the file
is left out with a warning that names it; nothing is dropped silently).

Conventions:
- ImageFolder tree: ``root/<class>/.../<image>``; labels are the class folders' indices in sorted
  order (as torchvision's ``ImageFolder``); images are found recursively inside each class folder.
- File list: a text file with one ``<path> <label>`` per line (DALI's ``file_list`` format); paths
  relative to ``file_root`` when given, else to the list's folder; blank lines and ``#`` comments skipped.
- Hidden entries (names starting with ``.``, e.g. ``.DS_Store``, ``.ipynb_checkpoints``) are ignored.
- Files whose extension is not an image extension are skipped with a warning naming them.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional, Sequence, Tuple

from .extras import progress_bar

#: Extensions DALI's image decoder reads (matched case-insensitively).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp",
                    ".pnm", ".ppm", ".pgm", ".pbm", ".jp2")
#: PIL format names of those files; anything else (GIF, PSD, ...) is refused by name.
DECODABLE_FORMATS = ("JPEG", "MPO", "PNG", "BMP", "TIFF", "WEBP", "PPM", "JPEG2000")
VALIDATE_MODES = ("header", "full", "none")
BAD_FILE_POLICIES = ("error", "skip")
_MAX_NAMED = 20   # bad files named in one error message
_PROGRESS_FROM = 20000   # a check of this many files shows a progress bar
_MAX_PIXELS_FALLBACK = 89_478_485   # PIL's default, when a caller set MAX_IMAGE_PIXELS = None
MAX_LABEL = 2**31 - 1   # DALI carries labels as int32


class BadImageError(ValueError):
    """An input image cannot be decoded; ``bad`` lists ``(path, reason)`` for every such file."""

    def __init__(self, bad: Sequence[Tuple[str, str]]):
        self.bad = list(bad)
        lines = [f"  {shown(p)}: {why}" for p, why in self.bad[:_MAX_NAMED]]
        if len(self.bad) > _MAX_NAMED:
            lines.append(f"  ... and {len(self.bad) - _MAX_NAMED} more")
        super().__init__(
            f"{len(self.bad)} unreadable image file(s):\n" + "\n".join(lines) +
            "\nRemove or fix them, or pass on_bad_file='skip' to leave them out with a warning.")


class NumberedClasses(collections.abc.Sequence):
    """The class names ``"0", "1", ..., str(n - 1)`` of a file list, without storing them: a list with
    the label 2147483647 has that many classes, but only its used labels cost anything."""

    def __init__(self, n: int):
        self._n = int(n)

    def __len__(self):
        return self._n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return tuple(str(j) for j in range(*i.indices(self._n)))
        j = i + self._n if i < 0 else i
        if not 0 <= j < self._n:
            raise IndexError(f"class index {i} out of range for {self._n} classes")
        return str(j)

    def __eq__(self, other):
        if isinstance(other, NumberedClasses):
            return self._n == other._n
        return isinstance(other, (tuple, list)) and len(other) == self._n and \
            all(a == b for a, b in zip(self, other))

    def __hash__(self):
        return hash((NumberedClasses, self._n))

    def __repr__(self):
        return f"NumberedClasses({self._n})"


@dataclasses.dataclass(frozen=True)
class LabelledFiles:
    """Absolute image paths with integer labels; ``classes[label]`` names a label (folder or number;
    a file list's classes are a :class:`NumberedClasses`)."""
    files: Tuple[str, ...]
    labels: Tuple[int, ...]
    classes: Sequence[str]

    def __len__(self):
        return len(self.files)


def _check_options(validate, on_bad_file):
    if validate not in VALIDATE_MODES:
        raise ValueError(f"validate={validate!r} is invalid: choose one of {VALIDATE_MODES}")
    if on_bad_file not in BAD_FILE_POLICIES:
        raise ValueError(f"on_bad_file={on_bad_file!r} is invalid: choose one of {BAD_FILE_POLICIES}")


def _require_dir(path, what):
    if path is None:
        raise ValueError(f"{what} is required")
    path = os.path.abspath(os.fspath(path))
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} {path!r} does not exist")
    if not os.path.isdir(path):
        raise NotADirectoryError(f"{what} {path!r} is not a directory")
    return path


def _is_image_name(name):
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _walk_files(root) -> Tuple[List[str], List[str]]:
    """(image paths, other paths) under ``root``, recursively, sorted, hidden entries ignored.

    Directory links are followed (data sets are often assembled from links) but no folder is entered
    twice, nor a folder above ``root``: a link back into an enclosing folder (``a/self -> .``,
    ``a/up -> ..``) would list every image many times, under the wrong class; it is skipped with a
    warning naming it. A folder that cannot be listed (no permission, an I/O error) is an error
    naming it: skipping it would leave its images out silently."""
    images, others, loops = [], [], []
    seen = set()   # (device, inode) of every folder entered, and of the folders above root
    up = os.path.realpath(root)
    while True:
        st = os.stat(up)
        seen.add((st.st_dev, st.st_ino))
        if os.path.dirname(up) == up:
            break
        up = os.path.dirname(up)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=_unlistable):
        st = os.stat(dirpath)
        seen.add((st.st_dev, st.st_ino))
        keep = []
        for d in sorted(d for d in dirnames if not d.startswith(".")):
            try:
                st = os.stat(os.path.join(dirpath, d))
            except OSError:   # a dangling link
                others.append(os.path.join(dirpath, d))
                continue
            if (st.st_dev, st.st_ino) in seen:
                loops.append(os.path.join(dirpath, d))
                continue
            seen.add((st.st_dev, st.st_ino))
            keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            (images if _is_image_name(name) else others).append(os.path.join(dirpath, name))
    for link in loops:
        warnings.warn(f"not following {shown(link)} -> {shown(os.path.realpath(link))}: that folder is listed already "
                      "(a link back into the tree would repeat its images)", stacklevel=3)
    return images, others


def _unlistable(err: OSError):
    """``os.walk``'s ``onerror``: a folder it cannot list stops the listing, naming the folder."""
    raise type(err)(f"cannot list folder {shown(err.filename)} ({err.strerror or err}): its images "
                    "would be left out; fix its permissions or remove it") from None


def shown(path) -> str:
    """``path`` as printable text: a name that is not valid UTF-8 (legal on Linux; Python holds its
    bytes as surrogates) shows those bytes as ``\\xNN`` instead of failing to print."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _warn_skipped(paths, why):
    if paths:
        names = ", ".join(map(shown, paths[:_MAX_NAMED])) + (" ..." if len(paths) > _MAX_NAMED else "")
        warnings.warn(f"skipping {len(paths)} file(s) {why}: {names}", stacklevel=3)


def _tail_has(path, marker, tail_bytes):
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        f.seek(max(0, size - tail_bytes))
        return marker in f.read()


def max_image_pixels() -> int:
    """The largest image (width x height) a check accepts: PIL's ``Image.MAX_IMAGE_PIXELS`` (about
    89.5 million by default; raise it there for genuine huge images), never unlimited here."""
    from PIL import Image
    return int(Image.MAX_IMAGE_PIXELS or _MAX_PIXELS_FALLBACK)


def _quiet_bomb_warnings():
    """PIL warns about big headers without naming the file; the check reports them by name instead.
    (A process-wide filter while it lasts: ``catch_warnings`` is not thread-safe, so it is entered
    once around a whole threaded check, not in each worker.)"""
    from PIL import Image
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
    return ctx


def check_image(path: str, validate: str = "header", *, shorter_side: Optional[int] = None) -> Optional[str]:
    """Why ``path`` cannot be decoded as an RGB image, or ``None`` when it looks fine; see
    :func:`_check_image`."""
    ctx = _quiet_bomb_warnings()
    try:
        return _check_image(path, validate, shorter_side)
    finally:
        ctx.__exit__(None, None, None)


def _check_image(path: str, validate: str = "header", shorter_side: Optional[int] = None) -> Optional[str]:
    """Why ``path`` cannot be decoded as an RGB image, or ``None`` when it looks fine.

    ``header`` opens the header with PIL (catches non-images, unsupported formats, empty files, and
    headers claiming more than :func:`max_image_pixels` pixels: a decompression bomb, a few hundred
    bytes that would decode to gigabytes) and, for JPEG and PNG, looks for the end marker (catches
    truncated files; a file without it is decoded in full to confirm, so trailing data after the
    marker is no false alarm). ``full`` decodes every file. ``shorter_side``: the image will be
    resized to this shorter side (the preset's mixing-picture or validation resize); the resized
    image must be within the same pixel limit (a 1 x 65,000 JPEG of 17 kB resized to a 256 shorter
    side would need 12.8 GB).
    """
    from PIL import Image, UnidentifiedImageError

    if validate == "none":
        return None if os.path.isfile(path) else "file does not exist"
    limit = max_image_pixels()
    try:
        if os.path.getsize(path) == 0:
            return "empty file (0 bytes)"
        with Image.open(path) as im:
            fmt = im.format
            if fmt not in DECODABLE_FORMATS:
                return f"unsupported image format {fmt!r}"
            if min(im.size) < 1:
                return f"image has no pixels (size {im.size})"
            if im.size[0] * im.size[1] > limit:
                return _too_large(f"{im.size[0]}x{im.size[1]} = {im.size[0] * im.size[1]:,} pixels", limit)
            if shorter_side is not None:
                why = _too_large_resized(im.size, shorter_side, limit)
                if why:
                    return why
            truncated = (fmt in ("JPEG", "MPO") and not _tail_has(path, b"\xff\xd9", 4096)) or \
                        (fmt == "PNG" and not _tail_has(path, b"IEND", 64))
            if validate == "full" or truncated:
                im.load()
    except Image.DecompressionBombError as err:   # PIL refuses headers over 2x its limit in open()
        pixels = re.findall(r"\d+", str(err))
        return _too_large(f"{int(pixels[0]):,} pixels" if pixels else str(err), limit)
    except UnidentifiedImageError:
        return "not an image (PIL cannot identify it)"
    except FileNotFoundError:
        return "file does not exist"
    except (OSError, SyntaxError, ValueError) as err:   # PIL reports broken data as OSError/SyntaxError
        return f"corrupt image ({err})"
    return None


def decoded_shape(width: int, height: int, side: Optional[int]) -> Tuple[int, int, int]:
    """HWC shape of a ``width x height`` picture after ``resize_shorter=side`` (``None``: unresized),
    with DALI's rounding of the longer side."""
    if side is None:
        return int(height), int(width), 3
    scale = side / min(width, height)
    return (side, max(1, round(width * scale)), 3) if height <= width else \
        (max(1, round(height * scale)), side, 3)


def _too_large_resized(size, side, limit) -> Optional[str]:
    """Why a ``(width, height)`` image resized to the shorter side ``side`` is too large, or None."""
    h, w, _ = decoded_shape(size[0], size[1], side)
    if w * h <= limit:
        return None
    return (f"image too large after the resize to a shorter side of {side} px: {size[0]}x{size[1]} "
            f"becomes {w}x{h} = {w * h:,} pixels, over the limit of {limit:,} pixels (an extremely "
            "elongated image; if it is genuine, raise PIL.Image.MAX_IMAGE_PIXELS)")


def _too_large(what, limit):
    return (f"image too large: header claims {what}, over the limit of {limit:,} pixels (a "
            "decompression bomb, or a genuine huge image: then raise PIL.Image.MAX_IMAGE_PIXELS)")


def find_bad_images(paths: Sequence[str], validate: str = "header", num_workers: int = 8, *,
                    shorter_side: Optional[int] = None) -> List[Tuple[str, str]]:
    """``(path, reason)`` for every path that fails :func:`check_image`, in order."""
    paths = list(paths)
    ctx = _quiet_bomb_warnings()
    try:
        return _find_bad_images(paths, validate, num_workers, shorter_side)
    finally:
        ctx.__exit__(None, None, None)


def _find_bad_images(paths, validate, num_workers, shorter_side=None):
    if validate == "none" or len(paths) < 2:
        reasons = [_check_image(p, validate, shorter_side) for p in paths]
    else:   # threads: the work is file I/O and PIL decoding, which release the GIL
        with ThreadPoolExecutor(max_workers=max(1, min(num_workers, len(paths)))) as pool:
            results = pool.map(lambda p: _check_image(p, validate, shorter_side), paths, chunksize=64)
            reasons = []
            with progress_bar(len(paths), f"checking images ({validate})", "file",
                              disable=len(paths) < _PROGRESS_FROM, mininterval=2.0) as bar:
                for reason in results:
                    reasons.append(reason)
                    bar.update(1)
    return [(p, r) for p, r in zip(paths, reasons) if r is not None]


def header_sizes(paths: Sequence[str], num_workers: int = 8) -> List[Optional[Tuple[int, int]]]:
    """``(width, height)`` of each image from its header (PIL opens lazily, nothing is decoded);
    ``None`` for a file that cannot be opened (the pipeline's own checks and errors then speak)."""
    from PIL import Image

    def size(path):
        try:
            with Image.open(path) as im:
                return tuple(im.size)
        except Exception:
            return None

    paths = list(paths)
    if not paths:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(num_workers, len(paths)))) as pool:
        return list(pool.map(size, paths, chunksize=64))


def shorter_sides_equal(sizes: Sequence[Optional[Tuple[int, int]]], side: int) -> bool:
    """Whether every ``(width, height)`` of :func:`header_sizes` has its shorter side ``side``
    (an unreadable one, ``None``, counts as differing; no sizes: False)."""
    return bool(sizes) and all(s is not None and min(s) == side for s in sizes)


def check_images(paths: Sequence[str], validate: str = "header", on_bad_file: str = "error",
                 num_workers: int = 8, *, shorter_side: Optional[int] = None) -> List[str]:
    """The paths that pass :func:`check_image`, in order; bad ones raise or are skipped with a warning."""
    _check_options(validate, on_bad_file)
    paths = list(paths)
    bad = find_bad_images(paths, validate, num_workers, shorter_side=shorter_side)
    if bad and on_bad_file == "error":
        raise BadImageError(bad)
    for p, r in bad:
        warnings.warn(f"skipping unreadable image {shown(p)}: {r}", stacklevel=2)
    bad_paths = {p for p, _ in bad}
    return [p for p in paths if p not in bad_paths]


def list_image_folder(root, validate: str = "header", on_bad_file: str = "error",
                      share: Tuple[int, int] = (0, 1), *,
                      shorter_side: Optional[int] = None) -> LabelledFiles:
    """An ImageFolder tree ``root/<class>/...`` as labelled files (labels = sorted class folder order).

    ``share``: see :func:`_checked`; ``shorter_side``: see :func:`_check_image`."""
    _check_options(validate, on_bad_file)
    root = _require_dir(root, "file_root")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    loose = sorted(e.path for e in os.scandir(root)
                   if e.is_file() and not e.name.startswith("."))
    _warn_skipped(loose, f"at the top of {root} (images must be inside one folder per class)")
    if not classes:
        raise ValueError(f"file_root {root!r} has no class folders: expected an ImageFolder tree "
                         "root/<class>/<image>")
    files, labels = [], []
    for label, name in enumerate(classes):
        images, others = _walk_files(os.path.join(root, name))
        _warn_skipped(others, "without an image extension " + "/".join(IMAGE_EXTENSIONS))
        if not images:
            raise ValueError(f"class folder {os.path.join(root, name)!r} contains no image files "
                             f"({'/'.join(IMAGE_EXTENSIONS)}); remove it or add images")
        files += images
        labels += [label] * len(images)
    return _checked(files, labels, tuple(classes), validate, on_bad_file, root, share, shorter_side)


def read_file_list(file_list, file_root=None, validate: str = "header",
                   on_bad_file: str = "error", share: Tuple[int, int] = (0, 1), *,
                   shorter_side: Optional[int] = None) -> LabelledFiles:
    """A ``<path> <label>`` text file as labelled files; see the module docstring for the format.

    ``share``: see :func:`_checked`; ``shorter_side``: see :func:`_check_image`."""
    _check_options(validate, on_bad_file)
    file_list = os.path.abspath(os.fspath(file_list))
    if not os.path.isfile(file_list):
        raise FileNotFoundError(f"file_list {file_list!r} does not exist or is not a file")
    base = _require_dir(file_root, "file_root") if file_root is not None else os.path.dirname(file_list)
    files, labels = [], []
    with open(file_list, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            line = _decode_line(raw, file_list, lineno).strip()
            if not line or line.startswith("#"):
                continue
            parts = line.rsplit(maxsplit=1)   # the path may contain spaces, the label may not
            try:
                path, label = parts[0], int(parts[1])
                if label < 0:
                    raise ValueError
            except (ValueError, IndexError):
                raise ValueError(f"{file_list}:{lineno}: expected '<path> <label>' with a label >= 0, "
                                 f"got {line!r}") from None
            if label > MAX_LABEL:
                raise ValueError(f"{file_list}:{lineno}: label {label} is invalid: labels must be "
                                 f"<= {MAX_LABEL} (DALI carries them as int32)")
            path = os.path.join(base, path)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{file_list}:{lineno}: listed file {path!r} does not exist")
            files.append(path)
            labels.append(label)
    if not files:
        raise ValueError(f"file_list {file_list!r} lists no files")
    # Labels may be sparse (e.g. 0 and 2147483647): the class names are made on demand, not listed.
    classes = NumberedClasses(max(labels) + 1)
    return _checked(files, labels, classes, validate, on_bad_file, file_list, share, shorter_side)


def _decode_line(raw: bytes, file_list, lineno) -> str:
    """Line ``lineno`` of a file list as text: UTF-8, with or without a byte-order mark on the first
    line; any other encoding (Latin-1, UTF-16, ...) is an error naming the file, the line and the
    byte, not a path "not found" later."""
    if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{file_list}:{lineno}: not valid UTF-8 (byte 0x{raw[err.start]:02x} at column "
                         f"{err.start + 1}): file lists must be UTF-8, with or without a BOM; "
                         "re-save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None


def list_mixing_images(root, validate: str = "header", on_bad_file: str = "error", *,
                       shorter_side: Optional[int] = None) -> List[str]:
    """Every image under ``root`` (any depth; no labels), checked, sorted; ``shorter_side``: the
    side they will be resized to (see :func:`_check_image`)."""
    _check_options(validate, on_bad_file)
    root = _require_dir(root, "mixing_root")
    images, others = _walk_files(root)
    _warn_skipped(others, "without an image extension " + "/".join(IMAGE_EXTENSIONS))
    if not images:
        raise ValueError(f"mixing_root {root!r} contains no image files ({'/'.join(IMAGE_EXTENSIONS)})")
    kept = check_images(images, validate, on_bad_file, shorter_side=shorter_side)
    if not kept:
        raise ValueError(f"mixing_root {root!r} has no readable images left after skipping bad files")
    return kept


def _checked(files, labels, classes, validate, on_bad_file, source, share=(0, 1),
             shorter_side=None) -> LabelledFiles:
    """Checks the files; ``share=(i, n)`` with ``on_bad_file="error"`` checks only every n-th file from
    the i-th: the n processes of a distributed job check the data set together, each a disjoint
    share, instead of each all of it (a bad file stops the process that owns it, naming the file).
    Skipping bad files needs every process to check every file, so that all keep the same list."""
    i, n = share
    if on_bad_file == "error" and n > 1:
        check_images(files[i::n], validate, on_bad_file, shorter_side=shorter_side)
        return LabelledFiles(tuple(files), tuple(labels), classes)
    kept = set(check_images(files, validate, on_bad_file, shorter_side=shorter_side))
    pairs = [(f, l) for f, l in zip(files, labels) if f in kept]
    if not pairs:
        raise ValueError(f"{source!r} has no readable images left after skipping bad files")
    return LabelledFiles(tuple(f for f, _ in pairs), tuple(l for _, l in pairs), classes)
