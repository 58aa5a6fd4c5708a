"""Per-image IPMix on PIL, following the spec literally: the oracle for parity tests and the
"per-sample PIL" baseline that benchmarks compare against.

Nothing here is vectorised or shared with the batched executors except the plan (the random
decisions) and the mask noise hash, so that a parity test compares two independent implementations.
Images are (H, W, 3) uint8 NumPy arrays, HWC, 0..255.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from .config import IPMixConfig
from .execute import mask_noise
from .plan import IMAGE_CHAIN, PIXEL_OPS, IPMixPlan, as_generator


def ip(level, maxval):
    return int(level * maxval / 10)


def fp(level, maxval):
    return float(level) * maxval / 10


def _affine(img, coeffs):
    return img.transform(img.size, Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR)


def _enhance(enhancer):
    return lambda img, level, sign: enhancer(img).enhance(fp(level, 1.8) + 0.1)


PIL_OPS = {
    "equalize": lambda img, level, sign: ImageOps.equalize(img),
    "posterize": lambda img, level, sign: ImageOps.posterize(img, 4 - ip(level, 4)),
    "rotate": lambda img, level, sign: img.rotate(sign * ip(level, 30), resample=Image.Resampling.BILINEAR),
    "solarize": lambda img, level, sign: ImageOps.solarize(img, 256 - ip(level, 256)),
    "shear_x": lambda img, level, sign: _affine(img, (1, sign * fp(level, 0.3), 0, 0, 1, 0)),
    "shear_y": lambda img, level, sign: _affine(img, (1, 0, 0, sign * fp(level, 0.3), 1, 0)),
    "translate_x": lambda img, level, sign: _affine(img, (1, 0, sign * ip(level, img.width / 3), 0, 1, 0)),
    "translate_y": lambda img, level, sign: _affine(img, (1, 0, 0, 0, 1, sign * ip(level, img.height / 3))),
    "mirror": lambda img, level, sign: ImageOps.mirror(img),
    "invert": lambda img, level, sign: ImageOps.invert(img),
    "autocontrast": lambda img, level, sign: ImageOps.autocontrast(img, cutoff=10 - fp(level, 10)),
    "autocontrast_plain": lambda img, level, sign: ImageOps.autocontrast(img),
    "color": _enhance(ImageEnhance.Color),
    "contrast": _enhance(ImageEnhance.Contrast),
    "brightness": _enhance(ImageEnhance.Brightness),
    "sharpness": _enhance(ImageEnhance.Sharpness),
}


def image_op(image: np.ndarray, name: str, level: float, sign: int) -> np.ndarray:
    """One image-level op on one (H, W, 3) uint8 image with PIL."""
    return np.asarray(PIL_OPS[name](Image.fromarray(image), float(level), int(sign)))


def pixel_mix(op: str, a: np.ndarray, b: np.ndarray, wa: float, wb: float, p: float, key) -> np.ndarray:
    """The spec's pixel-level op on two (h, w, 3) uint8 patches, in float64 -> uint8."""
    fa, fb = a.astype(np.float64) / 255, b.astype(np.float64) / 255
    if op == "add":
        out = (wa * (2 * fa - 1) + wb * (2 * fb - 1) + 1) / 2
    elif op == "multiply":
        out = ((2 * fa) ** wa) * (np.maximum(2 * fb, 1e-37) ** wb) / 2
    else:
        channels = 1 if op == "random_pixels" else 3
        noise = mask_noise(np.asarray([key], np.uint32), a.shape[0], a.shape[1], channels, np)[0]
        out = np.where(noise < np.float32(p), fa, fb)
    return np.floor(np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)


def patch_mix(y, src, top, left, height, width, op, wa, wb, p, key) -> np.ndarray:
    """Replaces the rectangle of ``y`` by ``op(y_patch, src_patch)``."""
    out = y.copy()
    win = (slice(top, top + height), slice(left, left + width))
    out[win] = pixel_mix(op, y[win], src[win], wa, wb, p, key)
    return out


def execute_sample(plan: IPMixPlan, n: int, image: np.ndarray, mixing: np.ndarray) -> np.ndarray:
    """Runs sample ``n`` of ``plan`` (IPMix, AugMix or PixMix: one engine) on one image; returns
    (H, W, 3) float32 on the 0..255 scale."""
    mix = np.zeros(image.shape, np.float64)
    for c in range(plan.k):
        y = image
        if plan.start[n, c]:   # the chain starts from A(x)
            y = image_op(image, plan.op_names[plan.start_op[n, c]], plan.start_level[n, c],
                         plan.start_sign[n, c])
        for j in range(int(plan.n_ops[n, c])):
            at = (n, c, j)
            if plan.kind[n, c] == IMAGE_CHAIN:
                y = image_op(y, plan.op_names[plan.op[at]], plan.level[at], plan.sign[at])
                continue
            src = mixing
            if plan.from_image[at]:
                src = image_op(image, plan.op_names[plan.src_op[at]], plan.src_level[at], plan.src_sign[at])
            y = patch_mix(y, src, int(plan.top[at]), int(plan.left[at]), int(plan.rect_h[at]),
                          int(plan.rect_w[at]), PIXEL_OPS[plan.pixel_op[at]], float(plan.wa[at]),
                          float(plan.wb[at]), float(plan.p[at]), plan.mask_key[at])
        mix += plan.weights[n, c] * y
    m = plan.m[n]
    return ((1 - m) * image + m * mix).astype(np.float32)


def execute_plan_reference(plan: IPMixPlan, images: np.ndarray, mixing: np.ndarray) -> np.ndarray:
    """The per-image loop over a batch plan: (N, H, W, 3) uint8 -> (N, H, W, 3) float32 0..255."""
    return np.stack([execute_sample(plan, n, images[n], mixing[n]) for n in range(plan.batch_size)])


def ipmix_reference(image: np.ndarray, mixing: np.ndarray, config: IPMixConfig, rng) -> np.ndarray:
    """One IPMix view of one (H, W, 3) uint8 image, drawn per image in the spec's own order (its own
    random calls, independent of :func:`draw_plan`), as the paper's loader does.

    Returns (H, W, 3) float32 on the 0..255 scale.
    """
    rng = as_generator(rng)
    height, width = image.shape[:2]
    sizes, names = config.patch_sizes_for(height, width), config.op_names

    def augment(img):
        name = names[rng.integers(len(names))]
        return image_op(img, name, rng.uniform(0.1, config.severity), rng.choice([-1, 1]))

    weights, m = rng.dirichlet(np.ones(config.k)), rng.beta(1.0, 1.0)
    mix = np.zeros(image.shape, np.float64)
    for weight in weights:
        y = image
        patch_level, n = rng.integers(2) == 1, rng.integers(config.t + 1)
        for _ in range(n):
            if not patch_level:
                y = augment(y)
                continue
            s, op = sizes[rng.integers(len(sizes))], PIXEL_OPS[rng.integers(len(PIXEL_OPS))]
            src = augment(image) if config.source_from_image and rng.random() < 0.5 else mixing
            left, top = rng.integers(width - s + 1), rng.integers(height - s + 1)
            w, h = (s, s) if rng.random() < 0.5 else (rng.integers(2, s + 1), rng.integers(2, s + 1))
            wa = wb = p = key = 0
            if op in ("add", "multiply"):
                if rng.random() < 0.5:
                    wa, wb = rng.beta(config.beta, 1.0), rng.beta(1.0, config.beta)
                else:
                    wa, wb = 1 + rng.beta(1.0, config.beta), -rng.beta(1.0, config.beta)
            else:
                p, key = rng.random(), np.uint32(rng.integers(2 ** 32))
            y = patch_mix(y, src, top, left, h, w, op, wa, wb, p, key)
        mix += weight * y
    return ((1 - m) * image + m * mix).astype(np.float32)


# ------------------------------------------------------------------------------ AugMix and PixMix
# Ports of the authors' per-image code (google-research/augmix ``augmentations.py`` + ``cifar.py``'s
# ``aug``; andyzoujm/pixmix ``pixmix_utils.py`` + ``cifar.py``'s ``pixmix`` / ``augment_input``), on PIL
# with a ``numpy.random.Generator`` in place of the global ``np.random``, drawing in the authors' order:
# the "paper's per-image loaders" of the benchmarks and the oracle of the whole-output tests.
# docs/augmix-spec.md and docs/pixmix-spec.md state the algorithms and where we differ.

#: Name of AugMix's / PixMix's autocontrast (PIL's default cutoff 0, no level) in the configs' op lists;
#: ``"autocontrast"`` there is IPMix's (its cutoff follows the level), a different op.
AUTOCONTRAST_PLAIN = "autocontrast_plain"


def _authors_level(rng, severity):
    return rng.uniform(0.1, severity)               # sample_level(n)


def _authors_signed(rng, value):
    return -value if rng.uniform() > 0.5 else value  # "if np.random.uniform() > 0.5: level = -level"


def _authors_affine(img, coeffs):
    return img.transform(img.size, Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR)


def _authors_enhance(enhancer):
    return lambda img, severity, rng: enhancer(img).enhance(fp(_authors_level(rng, severity), 1.8) + 0.1)


#: The authors' ops, ``op(pil_img, severity, rng)``: each draws its own level (and sign) inside the call,
#: as ``augmentations.py`` does; autocontrast and equalize draw nothing.
AUTHORS_OPS = {
    AUTOCONTRAST_PLAIN: lambda img, severity, rng: ImageOps.autocontrast(img),
    "equalize": lambda img, severity, rng: ImageOps.equalize(img),
    "posterize": lambda img, severity, rng: ImageOps.posterize(img, 4 - ip(_authors_level(rng, severity), 4)),
    "rotate": lambda img, severity, rng: img.rotate(
        _authors_signed(rng, ip(_authors_level(rng, severity), 30)), resample=Image.Resampling.BILINEAR),
    "solarize": lambda img, severity, rng: ImageOps.solarize(img, 256 - ip(_authors_level(rng, severity), 256)),
    "shear_x": lambda img, severity, rng: _authors_affine(
        img, (1, _authors_signed(rng, fp(_authors_level(rng, severity), 0.3)), 0, 0, 1, 0)),
    "shear_y": lambda img, severity, rng: _authors_affine(
        img, (1, 0, 0, _authors_signed(rng, fp(_authors_level(rng, severity), 0.3)), 1, 0)),
    "translate_x": lambda img, severity, rng: _authors_affine(
        img, (1, 0, _authors_signed(rng, ip(_authors_level(rng, severity), img.width / 3)), 0, 1, 0)),
    "translate_y": lambda img, severity, rng: _authors_affine(
        img, (1, 0, 0, 0, 1, _authors_signed(rng, ip(_authors_level(rng, severity), img.height / 3)))),
    "color": _authors_enhance(ImageEnhance.Color),
    "contrast": _authors_enhance(ImageEnhance.Contrast),
    "brightness": _authors_enhance(ImageEnhance.Brightness),
    "sharpness": _authors_enhance(ImageEnhance.Sharpness),
}


def authors_op(image: np.ndarray, name: str, severity: float, rng) -> np.ndarray:
    """One op of the AugMix/PixMix list on one (H, W, 3) uint8 image, drawing its level and sign from
    ``rng`` inside the call as the authors' ops do. An op of IPMix's list that the authors' code lacks
    (``mirror``, ``invert``, IPMix's ``autocontrast``) runs with IPMix's law, level and sign drawn the
    same way."""
    img = Image.fromarray(image)
    if name in AUTHORS_OPS:
        return np.asarray(AUTHORS_OPS[name](img, float(severity), rng))
    if name not in PIL_OPS:
        raise ValueError(f"op name {name!r} is unknown: allowed names are {sorted(set(AUTHORS_OPS) | set(PIL_OPS))}")
    level = _authors_level(rng, severity)
    return np.asarray(PIL_OPS[name](img, float(level), _authors_signed(rng, 1)))


def _authors_choice(rng, names):
    return names[rng.integers(len(names))]           # np.random.choice(aug_list)


def augmix_reference(image: np.ndarray, mixing, config, rng) -> np.ndarray:
    """One AugMix view of one (H, W, 3) uint8 image: the authors' ``aug`` (``cifar.py``), per image.

    ``mixing`` is ignored (AugMix mixes augmented copies of the image only; pass None). ``config``: an
    ``AugMixConfig`` (``width``, ``depth``, ``severity``, ``op_names``; alpha is 1). Chain weights and
    ``m`` are float32, as in the authors' code; the mixture is float32 and never rounded.

    Returns (H, W, 3) float32 on the 0..255 scale.
    """
    rng = as_generator(rng)
    names, severity = config.op_names, config.severity
    ws = np.float32(rng.dirichlet([1.0] * config.width))
    m = np.float32(rng.beta(1.0, 1.0))
    mix = np.zeros(image.shape, np.float32)
    for i in range(config.width):
        image_aug = image
        depth = config.depth if config.depth is not None else int(rng.integers(1, 4))
        for _ in range(depth):
            image_aug = authors_op(image_aug, _authors_choice(rng, names), severity, rng)
        mix += ws[i] * image_aug.astype(np.float32)
    return ((1 - m) * image.astype(np.float32) + m * mix).astype(np.float32)


def _get_ab(rng, beta):
    """``pixmix_utils.get_ab``: the weights of ``add`` / ``multiply``, float32."""
    if rng.random() < 0.5:
        a = np.float32(rng.beta(beta, 1))
        b = np.float32(rng.beta(1, beta))
    else:
        a = 1 + np.float32(rng.beta(1, beta))
        b = -np.float32(rng.beta(1, beta))
    return a, b


def _pixmix_add(img1, img2, rng, beta):
    a, b = _get_ab(rng, beta)
    img1, img2 = img1 * 2 - 1, img2 * 2 - 1
    return (a * img1 + b * img2 + 1) / 2


def _pixmix_multiply(img1, img2, rng, beta):
    a, b = _get_ab(rng, beta)
    img1, img2 = img1 * 2, img2 * 2
    return (img1 ** a) * (np.maximum(img2, np.float32(1e-37)) ** b) / 2


#: ``pixmix_utils.mixings``, in its order.
PIXMIX_MIXINGS = (_pixmix_add, _pixmix_multiply)


def _tensorize(image):
    return image.astype(np.float32) / np.float32(255)   # transforms.ToTensor, HWC kept


def pixmix_reference(image: np.ndarray, mixing: np.ndarray, config, rng, *, float_mixing: bool = False) -> np.ndarray:
    """One PixMix view of one (H, W, 3) uint8 image and its mixing picture: the authors' ``pixmix`` and
    ``augment_input`` (``cifar.py``), per image, in float32 on [0, 1] as there.

    ``config``: a ``PixMixConfig`` (``k``, ``beta``, ``severity``, ``op_names``). After every mixing round
    the result is clipped to [0, 1], as the authors do, and (the spec's convention) rounded to the
    nearest uint8 level; ``float_mixing=True`` keeps the authors' float32 between rounds instead.

    Returns (H, W, 3) float32 on the 0..255 scale.
    """
    rng = as_generator(rng)
    names, severity, beta = config.op_names, config.severity, float(config.beta)

    def augment_input(img):
        return authors_op(img, _authors_choice(rng, names), severity, rng)

    start = augment_input(image) if rng.random() < 0.5 else image
    mixed, levels = _tensorize(start), start       # levels: the uint8 image while the state is one
    for _ in range(int(rng.integers(config.k + 1))):
        aug_image_copy = _tensorize(augment_input(image) if rng.random() < 0.5 else mixing)
        mixed_op = PIXMIX_MIXINGS[rng.integers(len(PIXMIX_MIXINGS))]
        mixed = np.clip(mixed_op(mixed, aug_image_copy, rng, beta), 0, 1).astype(np.float32)
        levels = None
        if not float_mixing:
            levels = np.floor(mixed * 255 + 0.5).astype(np.uint8)
            mixed = _tensorize(levels)
    if levels is not None:
        return levels.astype(np.float32)
    return (mixed * np.float32(255)).astype(np.float32)
