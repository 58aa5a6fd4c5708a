// dali-ipmix compiled core, host side: one sample on one CPU thread, doing only the work its plan asks
// for (the native CPU operator's per-sample path).
//
// Same result as ipx_host.h's ipx_run_sample, byte for byte, from the same per-pixel bodies
// (ipx_core.cuh: ipx_step_pixel, ipx_final_mix_pixel) and the same lookup tables (ipx_prepare_chain).
// What differs is only which pixels are visited: ipx_run_sample replays the kernels' grid (every pixel
// of every chain at every step, with index divisions per pixel); here a chain runs its own steps one
// after the other, an inactive step costs nothing, and a patch step copies the chain image once and
// visits only the pixels of its rectangle (ipx_step_pixel leaves every other pixel as it is, and
// reads and writes only its own pixel of the chain image, so the rectangle is updated in place).
// One more shortcut, exact as well: a warp whose matrix only shifts by whole pixels and/or flips
// (translate, mirror, rotate by 0 degrees) lands every output pixel centre on an input pixel centre,
// where ipx_warp_pixel's bilinear weights are exactly 0 and its value the input pixel itself (or black
// outside the image); such warps are copied pixel by pixel (as the NumPy executor does).
#ifndef DALI_IPMIX_IPX_SAMPLE_H
#define DALI_IPMIX_IPX_SAMPLE_H

#include <string.h>

#include "ipx_host.h"

// Whether warp matrix m (a b c d e f) maps every output pixel centre onto an input pixel centre:
// a, e = +-1, b = d = 0, c and f whole numbers (small enough for float32 to hold x + 0.5 exactly).
static inline bool ipx_exact_axis_map(const float* m, int h, int w) {
    const float big = 4194304.0f;   // 2^22
    return m[1] == 0.0f && m[3] == 0.0f && (m[0] == 1.0f || m[0] == -1.0f) &&
           (m[4] == 1.0f || m[4] == -1.0f) && floorf(m[2]) == m[2] && floorf(m[5]) == m[5] &&
           fabsf(m[2]) < big && fabsf(m[5]) < big && h < big && w < big;
}

// ipx_warp_pixel over the whole image for an exact axis map: output (u, v) = input (c + a u - (a < 0),
// f + e v - (e < 0)) when inside the image, else black.
static inline void ipx_warp_exact(const float* m, const unsigned char* src, int h, int w,
                                  unsigned char* dst) {
    int a = (int)m[0], e = (int)m[4], c = (int)m[2], f = (int)m[5];
    for (int v = 0; v < h; ++v) {
        int sy = e > 0 ? f + v : f - v - 1;
        unsigned char* row = dst + (long long)v * w * 3;
        if (sy < 0 || sy >= h) {
            memset(row, 0, (size_t)w * 3);
            continue;
        }
        const unsigned char* srow = src + (long long)sy * w * 3;
        for (int u = 0; u < w; ++u) {
            int sx = a > 0 ? c + u : c - u - 1;
            unsigned char* px = row + u * 3;
            if (sx < 0 || sx >= w) {
                px[0] = px[1] = px[2] = 0;
            } else {
                px[0] = srow[sx * 3]; px[1] = srow[sx * 3 + 1]; px[2] = srow[sx * 3 + 2];
            }
        }
    }
}

// Bytes of scratch ipx_run_sample_sparse needs: k final chain images, one working image, 2 x 3 x 256
// lookup tables.
static inline long long ipx_sparse_scratch_bytes(int k, int h, int w) {
    return (long long)(k + 1) * h * w * 3 + 1536;
}

// The k chains of one sample: steps (k * t rows, chain-major), x and z (h x w x 3 uint8); scratch of
// ipx_sparse_scratch_bytes(k, h, w). Returns the chains' final images (k x h x w x 3 uint8, chain c
// at + c * h * w * 3), which lie in scratch.
static inline const unsigned char* ipx_run_chains_sparse(const IpxStep* steps, int k, int t,
                                                         const unsigned char* x,
                                                         const unsigned char* z, int h, int w,
                                                         unsigned char* scratch) {
    const long long hw3 = (long long)h * w * 3;
    unsigned char* finals = scratch;              // chain c ends in finals + c * hw3
    unsigned char* work = scratch + k * hw3;      // the other buffer of an image-level step
    unsigned char* luts = work + hw3;
    for (int c = 0; c < k; ++c) {
        unsigned char* own = finals + c * hw3;
        const unsigned char* cur = x;
        for (int j = 0; j < t; ++j) {
            const IpxStep* e = steps + (long long)c * t + j;
            if (e->act == IPX_ACT_NONE) continue;
            ipx_prepare_chain(e, cur, x, h, w, luts);
            if (e->act == IPX_ACT_IMAGE) {
                unsigned char* dst = cur == own ? work : own;
                if (e->op >= IPX_FIRST_AFFINE && ipx_exact_axis_map(e->p, h, w)) {
                    ipx_warp_exact(e->p, cur, h, w, dst);
                    cur = dst;
                    continue;
                }
                for (int v = 0; v < h; ++v)
                    for (int u = 0; u < w; ++u)
                        ipx_step_pixel(e, cur, x, z, luts, h, w, u, v, dst + ((long long)v * w + u) * 3);
                cur = dst;
            } else {
                if (cur == x) {   // the chain's first change: it gets its own copy
                    memcpy(own, x, hw3);
                    cur = own;
                }
                unsigned char* img = (unsigned char*)cur;
                int v0 = ipx_clampi(e->top, 0, h), v1 = ipx_clampi(e->top + e->rect_h, 0, h);
                int u0 = ipx_clampi(e->left, 0, w), u1 = ipx_clampi(e->left + e->rect_w, 0, w);
                for (int v = v0; v < v1; ++v)
                    for (int u = u0; u < u1; ++u)
                        ipx_step_pixel(e, img, x, z, luts, h, w, u, v, img + ((long long)v * w + u) * 3);
            }
        }
        if (cur != own) memcpy(own, cur, hw3);
    }
    return finals;
}

// One whole sample: steps (k * t rows, chain-major), mixw (1 + k), x and z (h x w x 3 uint8), out
// (h x w x 3 float32, 0..255); scratch of ipx_sparse_scratch_bytes(k, h, w).
static inline void ipx_run_sample_sparse(const IpxStep* steps, const float* mixw, int k, int t,
                                         const unsigned char* x, const unsigned char* z, int h, int w,
                                         unsigned char* scratch, float* out) {
    const long long hw3 = (long long)h * w * 3;
    const unsigned char* finals = ipx_run_chains_sparse(steps, k, t, x, z, h, w, scratch);
    for (long long i = 0; i < hw3; ++i) out[i] = ipx_final_mix_pixel(x[i], finals + i, hw3, mixw, k);
}

// ------------------------------------------------------------------ normalised output

// Normalisation fused into the final mix: out = (v - mean[c]) * inv_std[c] for the mixed value v
// (0..255) of channel c, as DALI's crop_mirror_normalize computes it (float32 subtraction, then a
// multiplication by the reciprocal; inv_std[c] = (float)(1.0 / (double)std[c]), DALI's rounding).
struct IpxNorm {
    float mean[3];      // per channel, 0..255 scale
    float inv_std[3];   // per channel, reciprocal of the standard deviation on the 0..255 scale
    bool chw;           // planar output (3, h, w) instead of interleaved (h, w, 3)
};

// An IpxNorm from mean and std (3 floats each, 0..255 scale; std > 0).
static inline IpxNorm ipx_norm(const float* mean, const float* std, bool chw) {
    IpxNorm n;
    for (int c = 0; c < 3; ++c) {
        n.mean[c] = mean[c];
        n.inv_std[c] = (float)(1.0 / (double)std[c]);
    }
    n.chw = chw;
    return n;
}

// ipx_run_sample_sparse's final mix written normalised: x (h x w x 3 uint8), finals the k chain images
// of ipx_run_chains_sparse, mixw (1 + k); out (3 x h x w when norm.chw, else h x w x 3) of T, each
// value passed through convert (float -> T). k = 0 with mixw = {0} writes x itself, normalised.
template <typename T, typename Convert>
static inline void ipx_mix_normalized(const unsigned char* x, const unsigned char* finals,
                                      const float* mixw, int k, int h, int w, const IpxNorm& norm,
                                      Convert convert, T* out) {
    const long long hw = (long long)h * w, hw3 = hw * 3;
    const float m0 = norm.mean[0], m1 = norm.mean[1], m2 = norm.mean[2];
    const float s0 = norm.inv_std[0], s1 = norm.inv_std[1], s2 = norm.inv_std[2];
    T* plane1 = out + hw;
    T* plane2 = out + 2 * hw;
    for (long long p = 0; p < hw; ++p) {
        const long long i = p * 3;
        float v0 = ipx_final_mix_pixel(x[i], finals + i, hw3, mixw, k);
        float v1 = ipx_final_mix_pixel(x[i + 1], finals + i + 1, hw3, mixw, k);
        float v2 = ipx_final_mix_pixel(x[i + 2], finals + i + 2, hw3, mixw, k);
        if (norm.chw) {
            out[p] = convert((v0 - m0) * s0);
            plane1[p] = convert((v1 - m1) * s1);
            plane2[p] = convert((v2 - m2) * s2);
        } else {
            out[i] = convert((v0 - m0) * s0);
            out[i + 1] = convert((v1 - m1) * s1);
            out[i + 2] = convert((v2 - m2) * s2);
        }
    }
}

#endif  // DALI_IPMIX_IPX_SAMPLE_H
