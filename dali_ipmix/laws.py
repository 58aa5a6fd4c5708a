"""The one source of what a plan's numbers mean: the image-level ops' codes and magnitude laws, and
the order of a sample's draws. Python evaluates the laws from here (:mod:`dali_ipmix.ops`,
:func:`dali_ipmix.table.op_parameters`); the compiled drawer gets them as C from ``csrc/ipx_laws.h``,
which ``python -m dali_ipmix.laws`` writes from this module (a test checks it is current).

A law is an expression that reads the same in Python and in C: ``+ - * /``, parentheses, float
literals and the functions ``floor``, ``cos``, ``sin``, ``round15`` (``numpy.round(x, 15)``) and
``floor_divide`` (NumPy's float ``//``). Names: ``level`` (drawn in [0.1, severity)), ``h``, ``w``
(the image size, integers), ``p`` (the op's parameter after its sign) and ``npix`` (``h * w`` as a
double). Everything is float64, evaluated in the written order (so both languages round alike), and
the table stores float32.

``param``: level -> the op's parameter (``ip(level, max) = floor(level * max / 10)``, ``fp(level, max)
= level * max / 10`` of the spec); a ``signed`` op negates it with probability 1/2. Affine ops: ``let``
temporaries and the six ``matrix`` entries ``a b c d e f`` mapping an output pixel centre to the
input point it samples. ``cut``: autocontrast's pixels per histogram end.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Optional, Tuple

import numpy as np

LUT, AFFINE, IMAGE = "lut", "affine", "image"


@dataclasses.dataclass(frozen=True)
class Law:
    code: int                                   # IPX_OP_* of csrc/ipx_core.cuh
    family: str                                 # LUT, AFFINE or IMAGE (see dali_ipmix.ops)
    param: str = "0.0"
    signed: bool = False
    param_range: Optional[Tuple[float, float]] = None   # param at level 0 and 10 (docs, tests)
    let: Tuple[Tuple[str, str], ...] = ()
    matrix: Tuple[str, ...] = ()
    cut: Optional[str] = None
    kernel: Optional[str] = None                # the op of the compiled core that runs it (None: itself)


_ENHANCE = dict(param="level * 1.8 / 10.0 + 0.1", param_range=(0.1, 1.9))
_SHEAR = dict(param="level * 0.3 / 10.0", param_range=(0, 0.3), signed=True)

#: Every image-level op: LUT ops first, then the blends, then the affine ops (the kernels rely on
#: the code ranges: ``IPX_FIRST_BLEND``, ``IPX_FIRST_AFFINE``); then the laws that another op's kernel
#: runs with their own parameters (``kernel``): their codes exist in the plan drawer only.
LAWS = {
    "invert": Law(0, LUT),
    "posterize": Law(1, LUT, "4 - floor(level * 4 / 10.0)", param_range=(4, 0)),
    "solarize": Law(2, LUT, "256 - floor(level * 256 / 10.0)", param_range=(256, 0)),
    "equalize": Law(3, LUT),
    "autocontrast": Law(4, LUT, "10 - level * 10 / 10.0", param_range=(10, 0),
                        cut="floor(floor_divide(npix * p, 100.0))"),
    "brightness": Law(5, LUT, **_ENHANCE),
    "contrast": Law(6, LUT, **_ENHANCE),
    "color": Law(7, IMAGE, **_ENHANCE),
    "sharpness": Law(8, IMAGE, **_ENHANCE),
    "rotate": Law(9, AFFINE, "floor(level * 30 / 10.0)", signed=True, param_range=(0, 30),
                  let=(("angle", "-(p * (3.141592653589793 / 180.0))"), ("cs", "round15(cos(angle))"),
                       ("sn", "round15(sin(angle))"), ("cx", "w / 2.0"), ("cy", "h / 2.0")),
                  matrix=("cs", "sn", "cs * -cx + sn * -cy + cx", "-sn", "cs", "-sn * -cx + cs * -cy + cy")),
    "shear_x": Law(10, AFFINE, **_SHEAR, matrix=("1.0", "p", "0.0", "0.0", "1.0", "0.0")),
    "shear_y": Law(11, AFFINE, **_SHEAR, matrix=("1.0", "0.0", "0.0", "p", "1.0", "0.0")),
    "translate_x": Law(12, AFFINE, "floor(level * (w / 3.0) / 10.0)", signed=True, param_range=(0, 1 / 3),
                       matrix=("1.0", "0.0", "p", "0.0", "1.0", "0.0")),
    "translate_y": Law(13, AFFINE, "floor(level * (h / 3.0) / 10.0)", signed=True, param_range=(0, 1 / 3),
                       matrix=("1.0", "0.0", "0.0", "0.0", "1.0", "p")),
    "mirror": Law(14, AFFINE, matrix=("-1.0", "0.0", "w", "0.0", "1.0", "0.0")),
    "autocontrast_plain": Law(15, LUT, param_range=(0, 0), kernel="autocontrast"),
}
#: Law codes (the plan drawer's op codes, ``op_codes`` of the native operator).
OP_CODES = {name: law.code for name, law in LAWS.items()}
#: The compiled core's op code (``IPX_OP_*``) that runs each law.
KERNEL_CODES = {name: LAWS[law.kernel or name].code for name, law in LAWS.items()}
#: Number of kernel ops (``IPX_NUM_OPS``); law codes run to ``len(LAWS) - 1``.
NUM_KERNEL_OPS = sum(law.kernel is None for law in LAWS.values())

#: Pixel-level mixing ops of a patch step (``IPX_ADD`` .. ``IPX_RANDOM_ELEMS``), drawn uniformly.
PIXEL_OPS = ("add", "multiply", "random_pixels", "random_elems")

#: One sample's plan is drawn from ``plan_draws(k, t, chain_start)`` uniforms on [0, 1): the header
#: (chain weights ``k``, ``m``, chain kinds ``k``, op counts ``k``), then these slots for each of the
#: ``k * max(t, 1)`` steps, chain-major, then (engines with a chain start only) :data:`START_DRAWS`
#: for each chain. Every slot is drawn whether the plan uses it or not, so a draw's place depends on
#: the engine's (k, t, chain_start) only. See :func:`dali_ipmix.plan.draw_plan` for what each becomes.
STEP_DRAWS = ("op", "level", "sign", "size", "square", "rect_w", "rect_h", "left", "top", "pixel_op",
              "ab", "wa", "wb", "p", "mask_key", "from_image", "src_op", "src_level", "src_sign")
#: A chain's start (``Engine.chain_start``): whether it starts from A(x), and that op's draws.
START_DRAWS = ("start", "start_op", "start_level", "start_sign")


def plan_draws(k: int, t: int, chain_start: bool = False) -> int:
    """Uniforms per sample and view: ``3 k + 1`` header slots, ``len(STEP_DRAWS)`` per step, and with
    ``chain_start`` ``len(START_DRAWS)`` per chain after them."""
    return 3 * k + 1 + k * max(t, 1) * len(STEP_DRAWS) + (k * len(START_DRAWS) if chain_start else 0)


# ----------------------------------------------------------------------------- Python evaluation

_FUNCTIONS = dict(floor=np.floor, cos=np.cos, sin=np.sin, round15=lambda x: np.round(x, 15),
                  floor_divide=np.floor_divide)


def _eval(expr: str, names: dict):
    return eval(compile(expr, f"<law {expr}>", "eval"), {"__builtins__": {}}, {**_FUNCTIONS, **names})


def parameter(name: str, level, sign, height: int, width: int) -> np.ndarray:
    """The op's parameter (float64, the shape of ``level``) after its sign."""
    law = LAWS[name]
    level = np.asarray(level, np.float64)
    p = np.broadcast_to(np.asarray(_eval(law.param, dict(level=level, h=int(height), w=int(width))),
                                   np.float64), level.shape)
    return p * np.asarray(sign, np.float64) if law.signed else np.array(p)


def matrix(name: str, p, height: int, width: int) -> np.ndarray:
    """An affine op's (..., 2, 3) float64 matrices for parameters ``p`` (after the sign)."""
    law = LAWS[name]
    names = dict(p=np.asarray(p, np.float64), h=int(height), w=int(width))
    for var, expr in law.let:
        names[var] = _eval(expr, names)
    entries = np.broadcast_arrays(*(np.asarray(_eval(e, names), np.float64) for e in law.matrix),
                                  names["p"])[:6]
    return np.stack(entries, -1).reshape(names["p"].shape + (2, 3))


def cut(name: str, p, height: int, width: int) -> np.ndarray:
    """Autocontrast's pixels per histogram end for parameters ``p`` (int64; zeros for other ops)."""
    law = LAWS[name]
    p = np.asarray(p, np.float64)
    if law.cut is None:
        return np.zeros(p.shape, np.int64)
    return np.asarray(_eval(law.cut, dict(p=p, npix=np.float64(int(height) * int(width)))),
                      np.float64).astype(np.int64)


# ----------------------------------------------------------------------------- C generation

HEADER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc", "ipx_laws.h")
_C_FUNCTIONS = {"round15": "ipx_round15", "floor_divide": "ipx_floor_divide"}


def _c(expr: str) -> str:
    return re.sub(r"\b(round15|floor_divide)\b", lambda m: _C_FUNCTIONS[m.group(1)], expr)


def c_header() -> str:
    """The text of ``csrc/ipx_laws.h``."""
    out = ["// GENERATED by `python -m dali_ipmix.laws` from dali_ipmix/laws.py: do not edit (a test checks",
           "// that it is current). The op codes, the magnitude laws and the plan's draw slots, for",
           "// csrc/ipx_plan.h; included after ipx_core.cuh and the helpers ipx_round15, ipx_floor_divide.",
           "#ifndef DALI_IPMIX_IPX_LAWS_H", "#define DALI_IPMIX_IPX_LAWS_H", ""]
    for name, law in LAWS.items():
        if law.kernel is None:
            out.append(f'static_assert(IPX_OP_{name.upper()} == {law.code}, "ipx_core.cuh and '
                       f'dali_ipmix/laws.py disagree on {name}");')
    out.append(f'static_assert(IPX_NUM_OPS == {NUM_KERNEL_OPS}, "ipx_core.cuh and dali_ipmix/laws.py '
               f'disagree on the number of ops");')
    out += ["", "// Laws that another op's kernel runs with their own parameters (plan drawer codes only)."]
    out += [f"#define IPX_OP_{name.upper()} {law.code}" for name, law in LAWS.items() if law.kernel]
    out += [f"#define IPX_NUM_LAWS {len(LAWS)}", "",
            "// The kernel op (IPX_OP_* of ipx_core.cuh) that runs law `code`.",
            "static inline int ipx_kernel_op(int code) {", "    switch (code) {"]
    out += [f"        case IPX_OP_{name.upper()}: return IPX_OP_{law.kernel.upper()};"
            for name, law in LAWS.items() if law.kernel]
    out += ["        default: return code;", "    }", "}"]
    out += ["", f"#define IPX_NUM_PIXEL_OPS {len(PIXEL_OPS)}",
            "// Uniforms of one sample and view: header (weights k, m, kinds k, op counts k), then",
            "// IPX_STEP_DRAWS per step (chain-major), at these offsets; then, with a chain start,",
            "// IPX_START_DRAWS per chain.",
            f"#define IPX_STEP_DRAWS {len(STEP_DRAWS)}"]
    out += [f"#define IPX_U_{slot.upper()} {i}" for i, slot in enumerate(STEP_DRAWS)]
    out += [f"#define IPX_START_DRAWS {len(START_DRAWS)}"]
    out += [f"#define IPX_U_{slot.upper()} {i}" for i, slot in enumerate(START_DRAWS)]
    out += ["", "// Kernel parameters of image-level op `code` at (level, sign) on an h x w image: p (6 floats:",
            "// the affine matrix a b c d e f, or p[0] = the parameter) and the autocontrast cut.",
            "static inline void ipx_op_parameters(int code, double level, int sign, int h, int w, float* out,",
            "                                     int* cut) {",
            "    const double npix = (double)((long long)h * w);",
            "    double p = 0.0, m[6] = {0, 0, 0, 0, 0, 0};",
            "    bool affine = false;",
            "    (void)npix;",
            "    *cut = 0;",
            "    switch (code) {"]
    for name, law in LAWS.items():
        body = [] if law.param == "0.0" else [f"p = {_c(law.param)};"]
        if law.signed:
            body.append("p = p * (double)sign;")
        if law.cut:
            body.append(f"*cut = (int)({_c(law.cut)});")
        if law.matrix:
            body += [f"const double {var} = {_c(expr)};" for var, expr in law.let]
            body += [f"m[{i}] = {_c(e)};" for i, e in enumerate(law.matrix)]
            body.append("affine = true;")
        out.append(f"        case IPX_OP_{name.upper()}: {{")
        out += [f"            {line}" for line in body]
        out += ["            break;", "        }"]
    out += ["        default: break;", "    }",
            "    for (int i = 0; i < 6; ++i) out[i] = 0.0f;",
            "    if (affine) {",
            "        for (int i = 0; i < 6; ++i) out[i] = (float)m[i];",
            "    } else {",
            "        out[0] = (float)p;",
            "    }", "}", "", "#endif  // DALI_IPMIX_IPX_LAWS_H", ""]
    return "\n".join(out)


if __name__ == "__main__":
    with open(HEADER, "w") as f:
        f.write(c_header())
    print(f"wrote {HEADER}")
