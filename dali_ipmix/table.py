"""The plan of a batch as one table for the compiled core, and the launch sequence that replays it.

:func:`pack_plan` turns an :class:`~dali_ipmix.plan.IPMixPlan` into the layout of ``csrc/ipx_core.cuh``:
one ``IpxStep`` row (26 four-byte fields) per chain step, ``N * k * T`` rows (``T = plan.table_steps``:
``t``, plus a chain's start row when the engine draws one), sample-major, then one
row of ``1 + k`` float32 per sample (``m``, chain weights). Everything a kernel needs is in the table:
op codes, parameters after the magnitude law (affine matrices, bits, thresholds, factors, the
autocontrast cut), patch rectangles, pixel ops, weights and mask keys.

:class:`TableExecutor` replays a packed plan on a :class:`Device` with a number of launches set by
``t`` alone: per step one ``ipx_prepare`` (lookup tables, one block per chain) and one ``ipx_step``
(one thread per pixel of every chain), then one ``ipx_mix``; plus one upload of the table. The device
may be CUDA (``dali_ipmix.cuda``), the g++-compiled host loops (the tests), or a recorder that only
counts (``dali_ipmix._scripts.profile``).

Replay, e.g. a plan saved from ``ipmix_batch(..., return_plan=True)``::

    >>> import numpy as np
    >>> from dali_ipmix import IPMixConfig, draw_plan
    >>> plan = draw_plan(2, 8, 8, IPMixConfig.cifar(), rng=0)
    >>> steps, mixw = pack_plan(plan)
    >>> steps.shape, mixw.shape            # (N * k * t, 26) table rows, (N, 1 + k)
    ((18, 26), (2, 4))
"""

from __future__ import annotations

import dataclasses
from typing import Protocol, Tuple

import numpy as np

from . import laws
from .laws import AFFINE, KERNEL_CODES, OP_CODES
from .plan import IMAGE_CHAIN, IPMixPlan

ACT_NONE, ACT_IMAGE, ACT_PATCH = 0, 1, 2
NO_OP = -1
#: Columns of an ``IpxStep`` row, in struct order (int32 fields, then float32 fields).
INT_FIELDS = ("act", "op", "pixel_op", "top", "left", "rect_h", "rect_w", "src_op", "key", "cut",
              "src_cut")
FLOAT_FIELDS = tuple(f"p{i}" for i in range(6)) + tuple(f"s{i}" for i in range(6)) + ("wa", "wb", "prob")
STEP_FIELDS = INT_FIELDS + FLOAT_FIELDS
COL = {name: i for i, name in enumerate(STEP_FIELDS)}
LUT_BYTES_PER_CHAIN = 2 * 3 * 256     # tables of the chain's op and of the patch source op
THREADS = 256                         # threads per block of every launch
MAX_BLOCKS = 65535                    # grid cap; the kernels loop (grid stride) over the rest


def op_parameters(op_names, op_index, level, sign, height, width):
    """Kernel parameters of image-level ops, vectorised over entries.

    ``op_index`` indexes ``op_names``; ``level``/``sign`` as drawn. Returns ``(codes, params, cuts)``:
    int32 op codes of the compiled core (``laws.KERNEL_CODES``), float32 (E, 6) parameters (affine: the 2x3 matrix; else ``[0]`` = the op's
    parameter), int32 autocontrast cut (pixels per histogram end, computed in float64 exactly as
    ``ops.autocontrast`` does for an image of ``height * width`` pixels). The laws are
    :data:`dali_ipmix.laws.LAWS`; ``csrc/ipx_laws.h`` (generated from them) computes the same bits.
    """
    op_index = np.asarray(op_index).ravel()
    level, sign = np.asarray(level, np.float64).ravel(), np.asarray(sign).ravel()
    codes = np.asarray([KERNEL_CODES[name] for name in op_names], np.int32)[op_index]
    params = np.zeros((op_index.size, 6), np.float64)
    cuts = np.zeros(op_index.size, np.int64)
    for i, name in enumerate(op_names):
        sel = np.flatnonzero(op_index == i)
        if not sel.size:
            continue
        value = laws.parameter(name, level[sel], sign[sel], height, width)
        if laws.LAWS[name].family == AFFINE:
            params[sel] = laws.matrix(name, value, height, width).reshape(-1, 6)
        else:
            params[sel, 0] = value
        cuts[sel] = laws.cut(name, value, height, width)
    return codes, params.astype(np.float32), cuts.astype(np.int32)


def pack_plan(plan: IPMixPlan) -> Tuple[np.ndarray, np.ndarray]:
    """``(steps, mixw)``: uint32 (N * k * T, 26) ``IpxStep`` rows and float32 (N, 1 + k) ``m, w``.

    ``T = plan.table_steps``: the plan's ``t`` steps, after (with a chain start) one more row per
    chain, first: its start, an image-level step on x (or none). The compiled core runs it as any
    other step, so a start costs one more step of the launch sequence and no code of its own."""
    h, w = plan.image_shape
    active = np.arange(plan.t)[None, None, :] < plan.n_ops[:, :, None]
    kind = np.broadcast_to(plan.kind[:, :, None], active.shape)
    act = np.where(active, np.where(kind == IMAGE_CHAIN, ACT_IMAGE, ACT_PATCH), ACT_NONE).ravel()

    ints = np.zeros((act.size, len(INT_FIELDS)), np.int32)
    floats = np.zeros((act.size, len(FLOAT_FIELDS)), np.float32)
    ints[:, COL["act"]] = act
    image, patch = act == ACT_IMAGE, act == ACT_PATCH
    codes, params, cuts = op_parameters(plan.op_names, plan.op.ravel()[image], plan.level.ravel()[image],
                                        plan.sign.ravel()[image], h, w)
    ints[image, COL["op"]], ints[image, COL["cut"]] = codes, cuts
    floats[image, 0:6] = params

    src = patch & plan.from_image.ravel()
    codes, params, cuts = op_parameters(plan.op_names, plan.src_op.ravel()[src],
                                        plan.src_level.ravel()[src], plan.src_sign.ravel()[src], h, w)
    ints[:, COL["src_op"]] = NO_OP
    ints[src, COL["src_op"]], ints[src, COL["src_cut"]] = codes, cuts
    floats[src, 6:12] = params
    for name, values in (("pixel_op", plan.pixel_op), ("top", plan.top), ("left", plan.left),
                         ("rect_h", plan.rect_h), ("rect_w", plan.rect_w)):
        ints[patch, COL[name]] = values.ravel()[patch]
    ints[patch, COL["key"]] = plan.mask_key.ravel()[patch].astype(np.uint32).view(np.int32)
    base = len(INT_FIELDS)
    for name, values in (("wa", plan.wa), ("wb", plan.wb), ("prob", plan.p)):
        floats[patch, COL[name] - base] = values.ravel()[patch]

    steps = np.concatenate([ints.view(np.uint32), floats.view(np.uint32)], axis=1)
    if plan.chain_start:   # each chain's first row: A(x) for the chains that start from it, else none
        start = plan.start.ravel()
        first = np.zeros((start.size, len(STEP_FIELDS)), np.uint32)
        first.view(np.int32)[:, COL["src_op"]] = NO_OP
        first.view(np.int32)[start, COL["act"]] = ACT_IMAGE
        codes, params, cuts = op_parameters(plan.op_names, plan.start_op.ravel()[start],
                                            plan.start_level.ravel()[start], plan.start_sign.ravel()[start],
                                            h, w)
        first.view(np.int32)[start, COL["op"]], first.view(np.int32)[start, COL["cut"]] = codes, cuts
        first[start, COL["p0"]:COL["p0"] + 6] = params.view(np.uint32)
        steps = np.concatenate([first[:, None], steps.reshape(start.size, plan.t, -1)], axis=1)
        steps = steps.reshape(-1, len(STEP_FIELDS))
    mixw = np.concatenate([plan.m[:, None], plan.weights], axis=1).astype(np.float32)
    return steps, np.ascontiguousarray(mixw)


class Device(Protocol):
    """Where the table executor's buffers live and its kernels run (CUDA, host loops, a recorder)."""

    def upload(self, host: np.ndarray):
        """A device copy of a contiguous host array, ordered before later launches."""

    def empty(self, shape, dtype):
        """An uninitialised device array."""

    def contiguous(self, array):
        """``array`` itself when C-contiguous, else a contiguous copy."""

    def launch(self, name: str, blocks: int, args: tuple) -> None:
        """Kernel ``name`` of ``csrc/ipx_kernels.cu`` over ``blocks`` x THREADS threads."""


def _blocks(total: int) -> int:
    return max(1, min(-(-total // THREADS), MAX_BLOCKS))


@dataclasses.dataclass
class TableExecutor:
    """Executes plans on ``device``: 1 upload + ``T`` x (``ipx_prepare`` + ``ipx_step``) + ``ipx_mix``
    (``T = plan.table_steps``, set by the config).

    Inputs are (N, H, W, 3) uint8 C-contiguous device arrays; the result is (N, H, W, 3) float32,
    0..255. No host synchronisation: nothing is read back.
    """

    device: Device

    def launches_per_view(self, t: int) -> int:
        return 2 * max(t, 1) + 1

    def __call__(self, plan: IPMixPlan, images, mixing):
        d = self.device
        n, h, w, _ = images.shape
        if n == 0:
            return d.empty(images.shape, np.float32)
        k, t = plan.k, plan.table_steps
        images, mixing = d.contiguous(images), d.contiguous(mixing)
        steps, mixw = pack_plan(plan)
        table = d.upload(np.concatenate([steps.ravel(), mixw.view(np.uint32).ravel()]))
        steps_dev, mixw_dev = table[:steps.size], table[steps.size:].view(np.float32)
        chains = [d.empty((n * k, h, w, 3), np.uint8) for _ in range(2 if t > 1 else 1)]
        luts = d.empty((n * k, LUT_BYTES_PER_CHAIN), np.uint8)
        i32, i64 = np.int32, np.int64
        src, src_is_x = images, 1
        for j in range(t):
            out = chains[j % len(chains)]
            d.launch("ipx_prepare", min(n * k, MAX_BLOCKS),
                     (steps_dev, i32(j), i32(t), i32(k), src, i32(src_is_x), images, i32(h), i32(w),
                      luts, i64(n * k)))
            total = n * k * h * w
            d.launch("ipx_step", _blocks(total),
                     (steps_dev, i32(j), i32(t), i32(k), src, i32(src_is_x), images, mixing, luts, out,
                      i32(h), i32(w), i64(total)))
            src, src_is_x = out, 0
        result = d.empty((n, h, w, 3), np.float32)
        total = n * h * w * 3
        d.launch("ipx_mix", _blocks(total),
                 (images, src, mixw_dev, result, i32(k), i64(h * w * 3), i64(total)))
        return result
