// dali-ipmix compiled core: what one IPMix chain step computes, per pixel and per chain.
//
// One source for every compiled executor: the CUDA kernels (ipx_kernels.cu, loaded by CuPy with NVRTC
// and compiled by nvcc for the native DALI operator), the host loops (ipx_host.h: the native CPU
// operator and the g++-compiled checks of the tests). Semantics are those of the NumPy executor
// (dali_ipmix/execute.py, dali_ipmix/ops.py), float32 math in the same order; compile with
// --fmad=false (nvcc/NVRTC) or -ffp-contract=off (g++) so that no a * b + c becomes an FMA.
//
// Images are HWC uint8 RGB, 0..255, h x w x 3, rows of w * 3 bytes. A batch of N samples with k
// chains of t steps is described by a plan table of N * k * t IpxStep rows (row (n * k + c) * t + j:
// sample n, chain c, step j) and N rows of 1 + k floats (m, then the k chain weights).
#ifndef DALI_IPMIX_IPX_CORE_CUH
#define DALI_IPMIX_IPX_CORE_CUH

#if !defined(__CUDACC__) && !defined(__CUDACC_RTC__)
#include <math.h>
#define __host__
#define __device__
#define __global__
#define __forceinline__ inline
#endif
#define IPX_FN static __host__ __device__ __forceinline__

// Image-level op codes (dali_ipmix.table.OP_CODES maps op names to these).
#define IPX_OP_INVERT 0
#define IPX_OP_POSTERIZE 1
#define IPX_OP_SOLARIZE 2
#define IPX_OP_EQUALIZE 3
#define IPX_OP_AUTOCONTRAST 4
#define IPX_OP_BRIGHTNESS 5
#define IPX_OP_CONTRAST 6
#define IPX_OP_COLOR 7
#define IPX_OP_SHARPNESS 8
#define IPX_OP_ROTATE 9
#define IPX_OP_SHEAR_X 10
#define IPX_OP_SHEAR_Y 11
#define IPX_OP_TRANSLATE_X 12
#define IPX_OP_TRANSLATE_Y 13
#define IPX_OP_MIRROR 14
#define IPX_NUM_OPS 15
// Codes below this one are lookup-table ops (the table is built per chain, from its histogram where
// the op needs one); color and sharpness are per-pixel blends; the rest are affine warps.
#define IPX_FIRST_BLEND IPX_OP_COLOR
#define IPX_FIRST_AFFINE IPX_OP_ROTATE

// Pixel-level ops (dali_ipmix.plan.PIXEL_OPS order).
#define IPX_ADD 0
#define IPX_MULTIPLY 1
#define IPX_RANDOM_PIXELS 2
#define IPX_RANDOM_ELEMS 3

// What a chain does at one step.
#define IPX_ACT_NONE 0    // nothing: the chain has fewer ops than this step
#define IPX_ACT_IMAGE 1   // one image-level op on the whole chain image
#define IPX_ACT_PATCH 2   // one patch + pixel-level mix

#define IPX_NO_OP (-1)    // src_op of a patch that takes its source from the mixing picture z

// One row of the plan table: one step of one chain. 26 four-byte fields, no padding
// (dali_ipmix.table.STEP_FIELDS gives the same layout to NumPy).
struct IpxStep {
    int act;          // IPX_ACT_*
    int op;           // image-level op code (act == IPX_ACT_IMAGE)
    int pixel_op;     // IPX_ADD.. (act == IPX_ACT_PATCH)
    int top, left;    // patch rectangle corner, pixels
    int rect_h, rect_w;  // patch rectangle size, pixels (>= 1)
    int src_op;       // image-level op applied to the ORIGINAL image for the patch source, or IPX_NO_OP
    unsigned int key;    // seed of the random_pixels / random_elems mask
    int cut;          // autocontrast: pixels cut at each end of the histogram, for op
    int src_cut;      // the same for src_op
    float p[6];       // parameters of op: affine matrix (a b c d e f), or p[0] = bits / threshold / factor
    float s[6];       // parameters of src_op, same convention
    float wa, wb;     // add / multiply weights
    float prob;       // random_pixels / random_elems mask threshold
};

// fminf(fmaxf(v, lo), hi). Host code spells it with comparisons: g++ calls libm for fminf/fmaxf (12
// calls per pixel of a sharpness step), and the comparisons give the same value for every v, NaN
// included (-> lo), and the same zero (fmaxf(-0, 0) is -0 in glibc, as here).
IPX_FN float ipx_clampf(float v, float lo, float hi) {
#ifdef __CUDA_ARCH__
    return fminf(fmaxf(v, lo), hi);
#else
    return v >= lo ? (v <= hi ? v : hi) : lo;
#endif
}
IPX_FN int ipx_clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }
IPX_FN bool ipx_is_lut_op(int op) { return op >= 0 && op < IPX_FIRST_BLEND; }
IPX_FN bool ipx_needs_histogram(int op) { return op == IPX_OP_EQUALIZE || op == IPX_OP_AUTOCONTRAST; }
IPX_FN bool ipx_needs_grey_sum(int op) { return op == IPX_OP_CONTRAST; }

// PIL's RGB -> L conversion, integer-exact (ops.grey_levels).
IPX_FN int ipx_grey(const unsigned char* rgb) {
    return (rgb[0] * 19595 + rgb[1] * 38470 + rgb[2] * 7471 + 0x8000) >> 16;
}

// PIL Image.blend(degenerate, image, factor) on uint8: float32 math, clipping, truncation
// (ops.blend_to_uint8).
IPX_FN unsigned char ipx_blend(float degenerate, float image, float factor) {
    float out = degenerate + factor * (image - degenerate);
    return (unsigned char)ipx_clampf(out, 0.0f, 255.0f);
}

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

// ------------------------------------------------------------------ lookup tables (per chain)

// The 256-entry table of LUT op `op` for one channel, from that channel's histogram `hist` (256
// counts; equalize, autocontrast) or the image's grey-level sum (contrast) over `npix` pixels.
// `param` is p[0] of the step (bits, threshold or factor); `cut` the autocontrast cut.
IPX_FN void ipx_lut_channel(int op, float param, int cut, const int* hist, long long grey_sum,
                            long long npix, unsigned char* lut) {
    if (op == IPX_OP_EQUALIZE) {   // PIL ImageOps.equalize (Pillow >= 11: step divides by 255)
        int last = 255, nonzero = 0;
        long long total = 0;
        for (int i = 0; i < 256; ++i) {
            total += hist[i];
            if (hist[i] > 0) { last = i; ++nonzero; }
        }
        long long step = (total - hist[last]) / 255;
        long long cum = 0;
        for (int i = 0; i < 256; ++i) {
            if (nonzero <= 1 || step == 0) {
                lut[i] = (unsigned char)i;
            } else {
                long long v = (step / 2 + cum) / step;
                lut[i] = (unsigned char)(v < 255 ? v : 255);
            }
            cum += hist[i];
        }
        return;
    }
    if (op == IPX_OP_AUTOCONTRAST) {   // PIL ImageOps.autocontrast(cutoff), cut precomputed
        long long cum = 0;
        int lo = 0, hi = 255;
        for (int i = 0; i < 256; ++i) {
            cum += hist[i];
            if (cum > cut) { lo = i; break; }
        }
        cum = 0;
        for (int i = 255; i >= 0; --i) {
            cum += hist[i];
            if (cum > cut) { hi = i; break; }
        }
        double scale = 255.0 / (double)(hi - lo > 1 ? hi - lo : 1);
        double offset = (double)(-lo) * scale;
        for (int i = 0; i < 256; ++i) {
            if (hi <= lo) {
                lut[i] = (unsigned char)i;
            } else {
                double v = trunc((double)i * scale + offset);
                lut[i] = (unsigned char)(v < 0.0 ? 0.0 : (v > 255.0 ? 255.0 : v));
            }
        }
        return;
    }
    float degenerate = 0.0f;   // brightness: blend with black
    if (op == IPX_OP_CONTRAST) degenerate = (float)floor((double)grey_sum / (double)npix + 0.5);
    int bits = (int)param;
    int mask = (~((1 << (8 - (bits < 0 ? 0 : bits))) - 1)) & 0xFF;
    for (int i = 0; i < 256; ++i) {
        switch (op) {
            case IPX_OP_INVERT: lut[i] = (unsigned char)(255 - i); break;
            case IPX_OP_POSTERIZE: lut[i] = (unsigned char)(i & mask); break;
            case IPX_OP_SOLARIZE: lut[i] = (unsigned char)((float)i < param ? i : 255 - i); break;
            default: lut[i] = ipx_blend(degenerate, (float)i, param);   // brightness, contrast
        }
    }
}

// ------------------------------------------------------------------ per-pixel ops

// The four source taps of a bilinear sample at the input point (xs, ys) of an h x w x 3 image (PIL's
// convention: pixel centres at +0.5; a point outside [0, w) x [0, h) is black, returns false; edge
// neighbours clamped): rows ra (top) and rb (bottom), byte offsets xa (left) and xb (right), weights.
IPX_FN bool ipx_bilinear_taps(const unsigned char* src, int h, int w, float xs, float ys,
                              const unsigned char** ra, const unsigned char** rb, int* xa, int* xb,
                              float* dx, float* dy) {
    if (!(xs >= 0.0f && xs < (float)w && ys >= 0.0f && ys < (float)h)) return false;
    xs = xs - 0.5f;
    ys = ys - 0.5f;
    float fx0 = floorf(xs), fy0 = floorf(ys);
    *dx = xs - fx0;
    *dy = ys - fy0;
    int x0 = (int)fx0, y0 = (int)fy0;
    *xa = ipx_clampi(x0, 0, w - 1) * 3;
    *xb = ipx_clampi(x0 + 1, 0, w - 1) * 3;
    *ra = src + (long long)ipx_clampi(y0, 0, h - 1) * w * 3;
    *rb = src + (long long)ipx_clampi(y0 + 1, 0, h - 1) * w * 3;
    return true;
}

// The 3 channels of a bilinear sample from its taps (ipx_bilinear_taps), truncated as PIL does.
IPX_FN void ipx_bilinear_interp(const unsigned char* ra, const unsigned char* rb, int xa, int xb,
                                float dx, float dy, unsigned char* dst) {
    for (int c = 0; c < 3; ++c) {
        float p00 = (float)ra[xa + c], p01 = (float)ra[xb + c];
        float p10 = (float)rb[xa + c], p11 = (float)rb[xb + c];
        float top = p00 + (p01 - p00) * dx;
        float bottom = p10 + (p11 - p10) * dx;
        float val = top + (bottom - top) * dy;
        dst[c] = (unsigned char)ipx_clampf(floorf(val), 0.0f, 255.0f);
    }
}

// One output pixel (3 channels) of the bilinear affine warp with black fill (execute.warp_affine_batched):
// src is one h x w x 3 image, mat its 2x3 matrix (a b c d e f) mapping the output pixel centre
// (u + 0.5, v + 0.5) to the input point; the result is truncated.
IPX_FN void ipx_warp_pixel(const unsigned char* src, const float* mat, int h, int w, int u, int v,
                           unsigned char* dst) {
    float fu = (float)u + 0.5f, fv = (float)v + 0.5f;
    float xs = (mat[1] * fv + mat[2]) + mat[0] * fu;
    float ys = (mat[4] * fv + mat[5]) + mat[3] * fu;
    const unsigned char *ra, *rb;
    int xa, xb;
    float dx, dy;
    if (!ipx_bilinear_taps(src, h, w, xs, ys, &ra, &rb, &xa, &xb, &dx, &dy)) {
        dst[0] = 0; dst[1] = 0; dst[2] = 0;
        return;
    }
    ipx_bilinear_interp(ra, rb, xa, xb, dx, dy, dst);
}

// Pixel (u, v) of image-level op `op` applied to `img` (h x w x 3); `p` its parameters, `lut` its
// 3 x 256 tables (LUT ops only, built by ipx_lut_channel).
IPX_FN void ipx_image_op_pixel(int op, const float* p, const unsigned char* lut,
                               const unsigned char* img, int h, int w, int u, int v,
                               unsigned char* dst) {
    const unsigned char* px = img + ((long long)v * w + u) * 3;
    if (ipx_is_lut_op(op)) {
        for (int c = 0; c < 3; ++c) dst[c] = lut[c * 256 + px[c]];
    } else if (op == IPX_OP_COLOR) {   // PIL ImageEnhance.Color: blend with the grey image
        float grey = (float)ipx_grey(px);
        for (int c = 0; c < 3; ++c) dst[c] = ipx_blend(grey, (float)px[c], p[0]);
    } else if (op == IPX_OP_SHARPNESS) {   // blend with the 3x3 smoothed image, border kept
        bool border = u == 0 || v == 0 || u == w - 1 || v == h - 1;
        for (int c = 0; c < 3; ++c) {
            float smooth = (float)px[c];
            if (!border) {
                int acc = 4 * px[c];
                for (int dy = -1; dy <= 1; ++dy)
                    for (int dx = -1; dx <= 1; ++dx) acc += px[((long long)dy * w + dx) * 3 + c];
                smooth = ipx_clampf(floorf((float)acc / 13.0f + 0.5f), 0.0f, 255.0f);
                smooth = (float)(unsigned char)smooth;
            }
            dst[c] = ipx_blend(smooth, (float)px[c], p[0]);
        }
    } else {
        ipx_warp_pixel(img, p, h, w, u, v, dst);
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

// Pixel (u, v) of one chain after step `e`: `in` is the chain image before the step, `x` and `z`
// the sample's original image and mixing picture, `luts` the chain's 2 x 3 x 256 tables of this
// step (op, then src_op). Writes 3 bytes to dst.
IPX_FN void ipx_step_pixel(const IpxStep* e, const unsigned char* in, const unsigned char* x,
                           const unsigned char* z, const unsigned char* luts, int h, int w, int u,
                           int v, unsigned char* dst) {
    long long at = ((long long)v * w + u) * 3;
    if (e->act == IPX_ACT_IMAGE) {
        ipx_image_op_pixel(e->op, e->p, luts, in, h, w, u, v, dst);
        return;
    }
    int r = v - e->top, c = u - e->left;
    if (e->act != IPX_ACT_PATCH || r < 0 || c < 0 || r >= e->rect_h || c >= e->rect_w) {
        dst[0] = in[at]; dst[1] = in[at + 1]; dst[2] = in[at + 2];
        return;
    }
    unsigned char src[3];
    if (e->src_op == IPX_NO_OP) {
        src[0] = z[at]; src[1] = z[at + 1]; src[2] = z[at + 2];
    } else {
        ipx_image_op_pixel(e->src_op, e->s, luts + 768, x, h, w, u, v, src);
    }
    unsigned int hkey = ipx_lowbias32(e->key);
    for (int ch = 0; ch < 3; ++ch)
        dst[ch] = ipx_patch_pixel(e->pixel_op, in[at + ch], src[ch], e->wa, e->wb, e->prob, hkey, r, c, ch);
}

// (1 - m) x + sum_c (m w_c) y_c, clamped to [0, 255] (the end of execute.execute_plan); `mixw` is
// the sample's row (m, w_0 .. w_k-1), y the first chain's value, chains y_stride bytes apart.
IPX_FN float ipx_final_mix_pixel(unsigned char x, const unsigned char* y, long long y_stride,
                                 const float* mixw, int k) {
    float m = mixw[0];
    float acc = (1.0f - m) * (float)x;
    for (int c = 0; c < k; ++c) acc = acc + (m * mixw[1 + c]) * (float)y[c * y_stride];
    return ipx_clampf(acc, 0.0f, 255.0f);
}

// ------------------------------------------------------------------ flat-index bodies

// Chain image `chain` as a step reads it: the sample's original image while in_is_x (step 0),
// else the chain's own buffer.
IPX_FN const unsigned char* ipx_chain_input(const unsigned char* in, int in_is_x, long long chain,
                                            int k, long long hw3) {
    return in + (in_is_x ? chain / k : chain) * hw3;
}

// i < N*k*h*w: pixel i of chain i / (h*w) after step j.
IPX_FN void ipx_step_at(long long i, const IpxStep* steps, int j, int t, int k,
                        const unsigned char* in, int in_is_x, const unsigned char* x,
                        const unsigned char* z, const unsigned char* luts, unsigned char* out,
                        int h, int w) {
    long long hw = (long long)h * w, hw3 = hw * 3;
    long long chain = i / hw;
    int pix = (int)(i - chain * hw);
    int v = pix / w, u = pix - v * w;
    long long n = chain / k;
    ipx_step_pixel(steps + chain * t + j, ipx_chain_input(in, in_is_x, chain, k, hw3), x + n * hw3,
                   z + n * hw3, luts + chain * 1536, h, w, u, v, out + chain * hw3 + (long long)pix * 3);
}

// i < N*h*w*3: element i of the final mix; chains (N*k, h, w, 3), mixw (N, 1 + k).
IPX_FN void ipx_mix_at(long long i, const unsigned char* x, const unsigned char* chains,
                       const float* mixw, float* out, int k, long long hw3) {
    long long n = i / hw3, p = i - n * hw3;
    out[i] = ipx_final_mix_pixel(x[i], chains + n * k * hw3 + p, hw3, mixw + n * (1 + k), k);
}

#endif  // DALI_IPMIX_IPX_CORE_CUH
