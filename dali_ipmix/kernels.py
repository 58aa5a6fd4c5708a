"""Fused CUDA kernels for the CuPy backend, and the argument handling they share with a CPU harness.

Each kernel replaces a chain of CuPy calls that would pass over the batch several times: the bilinear
affine warp, one patch step (every rectangle of every chain of the step in ONE launch, whatever its
size and pixel op), the lookup-table apply and the final mix. The per-element logic is plain C in
``__host__ __device__`` inline functions (:data:`KERNEL_CORE`); the ``__global__`` kernels
(:data:`KERNEL_SOURCE`) only wrap them in a flat grid-stride loop. The same core also compiles with a
host C++ compiler (``dali_ipmix._kernel_harness``: the same loops on the CPU), which is how the
kernels are checked bit for bit against the NumPy code of ``execute.py`` on a machine without a GPU.

Semantics are those of the xp-generic functions in ``execute.py`` (the reference), float32 math in
the same order; the kernels are compiled with ``--fmad=false`` so that no ``a * b + c`` is contracted
into an FMA (which would round differently). The one op that is not bit-exact across platforms is
``multiply``'s ``powf`` (CUDA's and glibc's/NumPy-SIMD's differ by a few ulp), which can move a
rounded uint8 by one grey level.

CuPy is imported only inside :func:`cupy_backend`; CPU users never need it.
"""

from __future__ import annotations

import functools

import numpy as np

#: NVRTC / nvcc options the kernels are built with (no FMA contraction: results match NumPy's order).
COMPILE_OPTIONS = ("--std=c++14", "--fmad=false")

KERNEL_CORE = r"""
// ---- dali-ipmix kernel core: per-element logic, compiled for the device and for the host ----
#if !defined(__CUDACC__) && !defined(__CUDACC_RTC__)
#define __host__
#define __device__
#define __global__
#define __forceinline__ inline
#endif
#define IPX_FN static __host__ __device__ __forceinline__

// Pixel-level ops, indices into plan.PIXEL_OPS.
#define IPX_ADD 0
#define IPX_MULTIPLY 1
#define IPX_RANDOM_PIXELS 2
#define IPX_RANDOM_ELEMS 3
// Columns of the int32 table of patch entries (kernels.pack_patch_entries).
#define IPX_E_ROW 0
#define IPX_E_SRC 1
#define IPX_E_TOP 2
#define IPX_E_LEFT 3
#define IPX_E_HEIGHT 4
#define IPX_E_WIDTH 5
#define IPX_E_OP 6
#define IPX_E_KEY 7
#define IPX_E_INTS 8
// Columns of the float32 table: wa, wb, p.
#define IPX_E_FLOATS 3

IPX_FN float ipx_clampf(float v, float lo, float hi) { return fminf(fmaxf(v, lo), hi); }
IPX_FN int ipx_clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

// Chris Wellons' lowbias32 (execute._lowbias32).
IPX_FN unsigned int ipx_lowbias32(unsigned int x) {
    x ^= x >> 16;
    x *= 0x7FEB352Du;
    x ^= x >> 15;
    x *= 0x846CA68Bu;
    x ^= x >> 16;
    return x;
}

// [0, 1] float -> uint8, clamped and rounded to nearest (execute.to_uint8).
IPX_FN unsigned char ipx_to_uint8(float v) {
    return (unsigned char)floorf(ipx_clampf(v, 0.0f, 1.0f) * 255.0f + 0.5f);
}

// One output pixel (3 channels) of the bilinear affine warp with black fill (execute.warp_affine_batched):
// src is one h x w x 3 image, mat its 2x3 matrix (a b c d e f) mapping the output pixel centre
// (u + 0.5, v + 0.5) to the input point; edge neighbours clamped, result truncated.
IPX_FN void ipx_warp_pixel(const unsigned char* src, const float* mat, int h, int w, int u, int v,
                           unsigned char* dst) {
    float fu = (float)u + 0.5f, fv = (float)v + 0.5f;
    float xs = (mat[1] * fv + mat[2]) + mat[0] * fu;
    float ys = (mat[4] * fv + mat[5]) + mat[3] * fu;
    if (!(xs >= 0.0f && xs < (float)w && ys >= 0.0f && ys < (float)h)) {
        dst[0] = 0; dst[1] = 0; dst[2] = 0;
        return;
    }
    xs = xs - 0.5f;
    ys = ys - 0.5f;
    float fx0 = floorf(xs), fy0 = floorf(ys);
    float dx = xs - fx0, dy = ys - fy0;
    int x0 = (int)fx0, y0 = (int)fy0;
    int xa = ipx_clampi(x0, 0, w - 1) * 3, xb = ipx_clampi(x0 + 1, 0, w - 1) * 3;
    const unsigned char* ra = src + (long long)ipx_clampi(y0, 0, h - 1) * w * 3;
    const unsigned char* rb = src + (long long)ipx_clampi(y0 + 1, 0, h - 1) * w * 3;
    for (int c = 0; c < 3; ++c) {
        float p00 = (float)ra[xa + c], p01 = (float)ra[xb + c];
        float p10 = (float)rb[xa + c], p11 = (float)rb[xb + c];
        float top = p00 + (p01 - p00) * dx;
        float bottom = p10 + (p11 - p10) * dx;
        float val = top + (bottom - top) * dy;
        dst[c] = (unsigned char)ipx_clampf(floorf(val), 0.0f, 255.0f);
    }
}

// One element of a pixel-level op (execute.pixel_mix): a = chain, b = source; (r, c) relative to the
// rectangle's top-left corner, ch the channel, hkey = lowbias32(mask key).
IPX_FN unsigned char ipx_patch_pixel(int op, unsigned char a, unsigned char b, float wa, float wb,
                                     float p, unsigned int hkey, int r, int c, int ch) {
    float fa = (float)a / 255.0f, fb = (float)b / 255.0f;
    float out;
    if (op == IPX_ADD) {
        out = (wa * (2.0f * fa - 1.0f) + wb * (2.0f * fb - 1.0f) + 1.0f) / 2.0f;
    } else if (op == IPX_MULTIPLY) {
        out = powf(2.0f * fa, wa) * powf(fmaxf(2.0f * fb, 1e-37f), wb) / 2.0f;
    } else {
        unsigned int counter = ((unsigned int)r * 65536u + (unsigned int)c) * 4u
                               + (op == IPX_RANDOM_ELEMS ? (unsigned int)ch : 0u);
        float noise = (float)(ipx_lowbias32(counter ^ hkey) >> 8) * (1.0f / 16777216.0f);
        out = noise < p ? fa : fb;
    }
    return ipx_to_uint8(out);
}

IPX_FN unsigned char ipx_lut_pixel(const unsigned char* lut, unsigned char x) { return lut[x]; }

// (1 - m) x + sum_c (m w_c) y_c, clamped to [0, 255] (the end of execute.execute_plan).
IPX_FN float ipx_final_mix_pixel(unsigned char x, const unsigned char* y, long long y_stride,
                                 float m, const float* w, int k) {
    float acc = (1.0f - m) * (float)x;
    for (int c = 0; c < k; ++c) acc = acc + (m * w[c]) * (float)y[c * y_stride];
    return ipx_clampf(acc, 0.0f, 255.0f);
}

// ---- flat-index bodies: element i of a launch (the kernels and the host harness loop over i) ----

// i < M*h*w: one output pixel of image i / (h*w).
IPX_FN void ipx_warp_at(long long i, const unsigned char* images, const float* mats,
                        unsigned char* out, int h, int w) {
    long long hw = (long long)h * w;
    long long m = i / hw;
    int p = (int)(i - m * hw);
    int v = p / w, u = p - v * w;
    ipx_warp_pixel(images + m * hw * 3, mats + m * 6, h, w, u, v, out + i * 3);
}

// i < M*hw3: out[i] = luts[m, channel, images[i]].
IPX_FN void ipx_lut_at(long long i, const unsigned char* images, const unsigned char* luts,
                       unsigned char* out, long long hw3) {
    long long m = i / hw3;
    int ch = (int)(i % 3);
    out[i] = ipx_lut_pixel(luts + (m * 3 + ch) * 256, images[i]);
}

// i < offsets[n_entries]: the rectangles of all entries, concatenated (offsets = cumulative h*w*3);
// the entry is found by binary search. Reads and writes chains[row] in place (one element per i).
// The source picture is mixing[src] for src < n_mix, else augmented[src - n_mix].
IPX_FN void ipx_patch_at(long long i, unsigned char* chains, const unsigned char* mixing,
                         const unsigned char* augmented, int n_mix, int h, int w,
                         const int* ints, const float* floats, const long long* offsets,
                         int n_entries) {
    int lo = 0, hi = n_entries;
    while (hi - lo > 1) {
        int mid = (lo + hi) >> 1;
        if (offsets[mid] <= i) lo = mid; else hi = mid;
    }
    const int* e = ints + (long long)lo * IPX_E_INTS;
    const float* f = floats + (long long)lo * IPX_E_FLOATS;
    long long local = i - offsets[lo];
    int ch = (int)(local % 3);
    long long pix = local / 3;
    int r = (int)(pix / e[IPX_E_WIDTH]), c = (int)(pix % e[IPX_E_WIDTH]);
    long long hw3 = (long long)h * w * 3;
    long long at = ((long long)(e[IPX_E_TOP] + r) * w + (e[IPX_E_LEFT] + c)) * 3 + ch;
    int src = e[IPX_E_SRC];
    const unsigned char* s = src < n_mix ? mixing + (long long)src * hw3
                                         : augmented + (long long)(src - n_mix) * hw3;
    unsigned char* y = chains + (long long)e[IPX_E_ROW] * hw3;
    y[at] = ipx_patch_pixel(e[IPX_E_OP], y[at], s[at], f[0], f[1], f[2],
                            ipx_lowbias32((unsigned int)e[IPX_E_KEY]), r, c, ch);
}

// i < N*hw3: the final mix of sample i / hw3; chains (N*k, h, w, 3), weights (N, k).
IPX_FN void ipx_mix_at(long long i, const unsigned char* images, const unsigned char* chains,
                       const float* m, const float* weights, float* out, int k, long long hw3) {
    long long n = i / hw3, p = i - n * hw3;
    out[i] = ipx_final_mix_pixel(images[i], chains + n * k * hw3 + p, hw3, m[n], weights + n * k, k);
}
"""

KERNEL_SOURCE = KERNEL_CORE + r"""
// ---- CUDA kernels: a flat grid-stride loop around each body ----
#define IPX_LOOP(total) \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (total); \
         i += (long long)blockDim.x * gridDim.x)

extern "C" __global__ void ipx_warp(const unsigned char* images, const float* mats, unsigned char* out,
                                    int h, int w, long long total) {
    IPX_LOOP(total) ipx_warp_at(i, images, mats, out, h, w);
}

extern "C" __global__ void ipx_lut(const unsigned char* images, const unsigned char* luts,
                                   unsigned char* out, long long hw3, long long total) {
    IPX_LOOP(total) ipx_lut_at(i, images, luts, out, hw3);
}

extern "C" __global__ void ipx_patch(unsigned char* chains, const unsigned char* mixing,
                                     const unsigned char* augmented, int n_mix, int h, int w,
                                     const int* ints, const float* floats, const long long* offsets,
                                     int n_entries, long long total) {
    IPX_LOOP(total) ipx_patch_at(i, chains, mixing, augmented, n_mix, h, w, ints, floats, offsets,
                                 n_entries);
}

extern "C" __global__ void ipx_mix(const unsigned char* images, const unsigned char* chains,
                                   const float* m, const float* weights, float* out, int k,
                                   long long hw3, long long total) {
    IPX_LOOP(total) ipx_mix_at(i, images, chains, m, weights, out, k, hw3);
}
"""

KERNEL_NAMES = ("ipx_warp", "ipx_lut", "ipx_patch", "ipx_mix")


def pack_patch_entries(rows, source_of, top, left, height, width, op, wa, wb, p, keys):
    """Host tables of one patch step for ``ipx_patch`` (all arguments host arrays of shape (E,)).

    Returns ``(ints, floats, offsets)``: int32 (E, 8) row, source, top, left, height, width, pixel op,
    mask key (its uint32 bits); float32 (E, 3) wa, wb, p; int64 (E + 1) cumulative rectangle sizes
    height * width * 3 (the flat index space of the launch).
    """
    ints = np.stack([np.asarray(v, np.int64) for v in (rows, source_of, top, left, height, width, op)]
                    + [np.asarray(keys, np.uint32).astype(np.int64)], axis=1)
    ints = ints.astype(np.uint32).view(np.int32)     # keys keep their bits; the rest is small
    floats = np.stack([np.asarray(v, np.float32) for v in (wa, wb, p)], axis=1)
    offsets = np.zeros(len(ints) + 1, np.int64)
    np.cumsum(np.asarray(height, np.int64) * np.asarray(width, np.int64) * 3, out=offsets[1:])
    return np.ascontiguousarray(ints), np.ascontiguousarray(floats), offsets


class KernelBackend:
    """Allocation and argument preparation shared by the CUDA launcher and the CPU harness.

    A subclass sets ``xp`` (the array module of its arrays) and ``_launch(name, total, *args)``, which
    runs kernel ``name`` over ``i < total`` with ``args`` (arrays of ``xp``, NumPy scalars of the C
    parameter types) followed by ``total`` as int64.
    """

    xp = np

    def _launch(self, name, total, *args):  # pragma: no cover - abstract
        raise NotImplementedError

    def _run(self, name, total, *args):
        if total > 0:
            self._launch(name, int(total), *args)

    def warp_affine(self, images, matrices):
        """:func:`execute.warp_affine_batched` in one launch; ``matrices`` (M, 2, 3) host floats."""
        xp = self.xp
        images = xp.ascontiguousarray(images)
        m, h, w, _ = images.shape
        mats = xp.asarray(np.ascontiguousarray(np.asarray(matrices, np.float32).reshape(m, 6)))
        out = xp.empty_like(images)
        self._run("ipx_warp", m * h * w, images, mats, out, np.int32(h), np.int32(w))
        return out

    def apply_luts(self, images, luts):
        """:func:`execute.apply_luts` in one launch; ``luts`` (M, 3, 256) uint8 of ``xp``."""
        xp = self.xp
        images = xp.ascontiguousarray(images)
        luts = xp.ascontiguousarray(luts, dtype=xp.uint8)
        out = xp.empty_like(images)
        self._run("ipx_lut", images.size, images, luts, out, np.int64(images.size // max(len(images), 1)))
        return out

    def patch_step(self, chains, mixing, augmented, entries):
        """One patch step in place on ``chains`` (N*k, H, W, 3), contiguous: one launch for all entries.

        ``entries`` from :func:`pack_patch_entries`; a source index ``s`` reads ``mixing[s]`` below
        ``len(mixing)``, else ``augmented[s - len(mixing)]`` (no concatenated copy of the sources).
        """
        xp = self.xp
        if not chains.flags.c_contiguous:
            raise ValueError("patch_step works in place and needs a C-contiguous chains array")
        ints, floats, offsets = entries
        _, h, w, _ = chains.shape
        mixing = xp.ascontiguousarray(mixing)
        augmented = mixing if augmented is None else xp.ascontiguousarray(augmented)
        self._run("ipx_patch", offsets[-1], chains, mixing, augmented, np.int32(mixing.shape[0]),
                  np.int32(h), np.int32(w), xp.asarray(ints), xp.asarray(floats), xp.asarray(offsets),
                  np.int32(len(ints)))

    def final_mix(self, images, chains, m, weights):
        """The end of :func:`execute.execute_plan`: images (N, H, W, 3), chains (N*k, H, W, 3) uint8,
        ``m`` (N,) and ``weights`` (N, k) host floats. Returns (N, H, W, 3) float32."""
        xp = self.xp
        images = xp.ascontiguousarray(images)
        chains = xp.ascontiguousarray(chains)
        n = images.shape[0]
        weights = np.ascontiguousarray(np.asarray(weights, np.float32).reshape(n, -1))
        out = xp.empty(images.shape, dtype=xp.float32)
        self._run("ipx_mix", images.size, images, chains, xp.asarray(np.asarray(m, np.float32)),
                  xp.asarray(weights), out, np.int32(weights.shape[1]),
                  np.int64(images.size // max(n, 1)))
        return out


class CupyKernels(KernelBackend):
    """The kernels on CuPy's current device and stream; one NVRTC-compiled module per device."""

    threads = 256
    max_blocks = 65535

    def __init__(self):
        import cupy
        self.xp = cupy
        self._functions = {}

    def _function(self, name):
        device = self.xp.cuda.Device().id
        fn = self._functions.get((device, name))
        if fn is None:
            module = self._functions.get(device)
            if module is None:
                module = self._functions[device] = self.xp.RawModule(code=KERNEL_SOURCE,
                                                                     options=COMPILE_OPTIONS)
            fn = self._functions[(device, name)] = module.get_function(name)
        return fn

    def _launch(self, name, total, *args):
        blocks = max(1, min((total + self.threads - 1) // self.threads, self.max_blocks))
        self._function(name)((blocks,), (self.threads,), args + (np.int64(total),))


@functools.lru_cache(maxsize=None)
def cupy_backend() -> CupyKernels:
    """The process-wide :class:`CupyKernels` (imports CuPy; compiles on the first launch)."""
    return CupyKernels()
