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
//
// The loops here are host-only rewrites of the per-pixel bodies, row by row, with the same float32
// operations in the same order (so the same bytes): per-row terms hoisted out of the affine warp,
// per-step tables of the pixel-level ops' per-value terms (a uint8 operand has 256 values), and a
// final mix that g++ can vectorise. ipx_core.cuh stays the one source of the kernels' semantics; the
// tests check this file against ipx_host.h's ipx_run_sample (the kernels' grid) byte for byte.
#ifndef DALI_IPMIX_IPX_SAMPLE_H
#define DALI_IPMIX_IPX_SAMPLE_H

#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "ipx_host.h"

// Whether warp matrix m (a b c d e f) maps every output pixel centre onto an input pixel centre:
// a, e = +-1, b = d = 0, c and f whole numbers (small enough for float32 to hold x + 0.5 exactly).
static inline bool ipx_exact_axis_map(const float* m, int h, int w) {
    const float big = 4194304.0f;   // 2^22
    return m[1] == 0.0f && m[3] == 0.0f && (m[0] == 1.0f || m[0] == -1.0f) &&
           (m[4] == 1.0f || m[4] == -1.0f) && floorf(m[2]) == m[2] && floorf(m[5]) == m[5] &&
           fabsf(m[2]) < big && fabsf(m[5]) < big && h < big && w < big;
}

#if defined(__SSE2__)
// The 3 channels of one pixel (3 bytes at p) as the first 3 lanes of a float vector.
static inline __m128 ipx_load_rgb(const unsigned char* p) {
    const __m128i zero = _mm_setzero_si128();
    __m128i v = _mm_cvtsi32_si128(p[0] | (p[1] << 8) | (p[2] << 16));
    v = _mm_unpacklo_epi16(_mm_unpacklo_epi8(v, zero), zero);
    return _mm_cvtepi32_ps(v);
}

// The pixel at p and its right neighbour (p + 3) as float vectors (channels in lanes 0-2; lane 3 holds
// a neighbouring byte and is never stored), from one 8-byte load: p[0..7] must lie in the image.
static inline void ipx_load_rgb_pair(const unsigned char* p, __m128* left, __m128* right) {
    const __m128i zero = _mm_setzero_si128();
    const __m128i v = _mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i*)p), zero);   // 8 x u16
    *left = _mm_cvtepi32_ps(_mm_unpacklo_epi16(v, zero));
    *right = _mm_cvtepi32_ps(_mm_unpacklo_epi16(_mm_srli_si128(v, 6), zero));
}

// ipx_warp_pixel's interpolation of the 3 channels at once from its four taps (lanes 0-2): the same
// float32 operations per lane, then floor (truncation, one down where that rounded up), clamp to
// 0..255 (saturating packs), store 3 bytes.
static inline void ipx_bilinear3_taps(__m128 p00, __m128 p01, __m128 p10, __m128 p11, float dx,
                                      float dy, unsigned char* dst) {
    const __m128 vdx = _mm_set1_ps(dx), vdy = _mm_set1_ps(dy);
    const __m128 top = _mm_add_ps(p00, _mm_mul_ps(_mm_sub_ps(p01, p00), vdx));
    const __m128 bottom = _mm_add_ps(p10, _mm_mul_ps(_mm_sub_ps(p11, p10), vdx));
    const __m128 val = _mm_add_ps(top, _mm_mul_ps(_mm_sub_ps(bottom, top), vdy));
    __m128i t = _mm_cvttps_epi32(val);
    t = _mm_add_epi32(t, _mm_castps_si128(_mm_cmplt_ps(val, _mm_cvtepi32_ps(t))));
    t = _mm_packs_epi32(t, t);
    const int rgb = _mm_cvtsi128_si32(_mm_packus_epi16(t, t));
    dst[0] = (unsigned char)rgb;
    dst[1] = (unsigned char)(rgb >> 8);
    dst[2] = (unsigned char)(rgb >> 16);
}

// ipx_bilinear_interp with SSE2: rows ra, rb, byte offsets xa, xb (ipx_bilinear_taps); end is one past
// the image. Right neighbours (xb = xa + 3, every tap but the clamped edges) come in pairs from one
// load each where the 8 bytes lie in the image; the rest a pixel at a time.
static inline void ipx_bilinear3(const unsigned char* ra, const unsigned char* rb, int xa, int xb,
                                 float dx, float dy, const unsigned char* end, unsigned char* dst) {
    __m128 p00, p01, p10, p11;
    if (xb == xa + 3 && rb + xa + 8 <= end && ra + xa + 8 <= end) {
        ipx_load_rgb_pair(ra + xa, &p00, &p01);
        ipx_load_rgb_pair(rb + xa, &p10, &p11);
    } else {
        p00 = ipx_load_rgb(ra + xa);
        p01 = ipx_load_rgb(ra + xb);
        p10 = ipx_load_rgb(rb + xa);
        p11 = ipx_load_rgb(rb + xb);
    }
    ipx_bilinear3_taps(p00, p01, p10, p11, dx, dy, dst);
}
#endif

// ipx_image_op_pixel for the pixels u0 <= u < u1 of row v, written to dst ((u1 - u0) x 3 bytes).
static inline void ipx_image_op_span(int op, const float* p, const unsigned char* lut,
                                     const unsigned char* img, int h, int w, int v, int u0, int u1,
                                     unsigned char* dst) {
    const unsigned char* row = img + (long long)v * w * 3;
    if (ipx_is_lut_op(op)) {
        for (int u = u0; u < u1; ++u, dst += 3) {
            const unsigned char* px = row + u * 3;
            dst[0] = lut[px[0]];
            dst[1] = lut[256 + px[1]];
            dst[2] = lut[512 + px[2]];
        }
        return;
    }
    if (op < IPX_FIRST_AFFINE) {   // color, sharpness: the shared body, pixel by pixel
        for (int u = u0; u < u1; ++u, dst += 3) ipx_image_op_pixel(op, p, lut, img, h, w, u, v, dst);
        return;
    }
    // ipx_warp_pixel, its row terms computed once per row.
    const float fv = (float)v + 0.5f;
    const float rx = p[1] * fv + p[2], ry = p[4] * fv + p[5];
    int u = u0;
#if defined(__SSE2__)
    // Four pixels at a time up to the taps: ipx_warp_pixel's and ipx_bilinear_taps' float32
    // operations, lane by lane (floor as truncation, one down where that rounded up: exact for the
    // points inside the image, the only ones used), then each pixel's clamps and interpolation.
    const unsigned char* end = img + (long long)h * w * 3;
    const __m128 vp0 = _mm_set1_ps(p[0]), vp3 = _mm_set1_ps(p[3]), vrx = _mm_set1_ps(rx),
                 vry = _mm_set1_ps(ry), half = _mm_set1_ps(0.5f), zero = _mm_setzero_ps(),
                 fw = _mm_set1_ps((float)w), fh = _mm_set1_ps((float)h);
    for (; u + 4 <= u1; u += 4) {
        const __m128 fu = _mm_add_ps(_mm_cvtepi32_ps(_mm_setr_epi32(u, u + 1, u + 2, u + 3)), half);
        __m128 xs = _mm_add_ps(vrx, _mm_mul_ps(vp0, fu));
        __m128 ys = _mm_add_ps(vry, _mm_mul_ps(vp3, fu));
        const int inside = _mm_movemask_ps(_mm_and_ps(
            _mm_and_ps(_mm_cmpge_ps(xs, zero), _mm_cmplt_ps(xs, fw)),
            _mm_and_ps(_mm_cmpge_ps(ys, zero), _mm_cmplt_ps(ys, fh))));
        xs = _mm_sub_ps(xs, half);
        ys = _mm_sub_ps(ys, half);
        __m128i ix = _mm_cvttps_epi32(xs), iy = _mm_cvttps_epi32(ys);
        ix = _mm_add_epi32(ix, _mm_castps_si128(_mm_cmplt_ps(xs, _mm_cvtepi32_ps(ix))));
        iy = _mm_add_epi32(iy, _mm_castps_si128(_mm_cmplt_ps(ys, _mm_cvtepi32_ps(iy))));
        alignas(16) float dxs[4], dys[4];
        alignas(16) int x0s[4], y0s[4];
        _mm_store_ps(dxs, _mm_sub_ps(xs, _mm_cvtepi32_ps(ix)));
        _mm_store_ps(dys, _mm_sub_ps(ys, _mm_cvtepi32_ps(iy)));
        _mm_store_si128((__m128i*)x0s, ix);
        _mm_store_si128((__m128i*)y0s, iy);
        // All four inside, with both taps of each in the image (x0 in [0, w - 2], y0 in [0, h - 2]):
        // no clamps, the right neighbours in pairs (the usual case away from the borders).
        const __m128i interior = _mm_and_si128(
            _mm_and_si128(_mm_cmpgt_epi32(ix, _mm_set1_epi32(-1)), _mm_cmplt_epi32(ix, _mm_set1_epi32(w - 1))),
            _mm_and_si128(_mm_cmpgt_epi32(iy, _mm_set1_epi32(-1)), _mm_cmplt_epi32(iy, _mm_set1_epi32(h - 1))));
        if (inside == 15 && _mm_movemask_epi8(interior) == 0xFFFF) {
            const long long w3 = (long long)w * 3;
            for (int i = 0; i < 4; ++i, dst += 3) {
                const unsigned char* ra = img + y0s[i] * w3 + x0s[i] * 3;
                __m128 p00, p01, p10, p11;
                ipx_load_rgb_pair(ra, &p00, &p01);
                if (ra + w3 + 8 <= end) {
                    ipx_load_rgb_pair(ra + w3, &p10, &p11);
                } else {
                    p10 = ipx_load_rgb(ra + w3);
                    p11 = ipx_load_rgb(ra + w3 + 3);
                }
                ipx_bilinear3_taps(p00, p01, p10, p11, dxs[i], dys[i], dst);
            }
            continue;
        }
        for (int i = 0; i < 4; ++i, dst += 3) {
            if (!((inside >> i) & 1)) {
                dst[0] = 0; dst[1] = 0; dst[2] = 0;
                continue;
            }
            const int xa = ipx_clampi(x0s[i], 0, w - 1) * 3, xb = ipx_clampi(x0s[i] + 1, 0, w - 1) * 3;
            const unsigned char* ra = img + (long long)ipx_clampi(y0s[i], 0, h - 1) * w * 3;
            const unsigned char* rb = img + (long long)ipx_clampi(y0s[i] + 1, 0, h - 1) * w * 3;
            ipx_bilinear3(ra, rb, xa, xb, dxs[i], dys[i], end, dst);
        }
    }
#endif
    for (; u < u1; ++u, dst += 3) {
        float fu = (float)u + 0.5f;
        float xs = rx + p[0] * fu;
        float ys = ry + p[3] * fu;
        const unsigned char *ra, *rb;
        int xa, xb;
        float dx, dy;
        if (!ipx_bilinear_taps(img, h, w, xs, ys, &ra, &rb, &xa, &xb, &dx, &dy)) {
            dst[0] = 0; dst[1] = 0; dst[2] = 0;
            continue;
        }
#if defined(__SSE2__)
        ipx_bilinear3(ra, rb, xa, xb, dx, dy, end, dst);
#else
        ipx_bilinear_interp(ra, rb, xa, xb, dx, dy, dst);
#endif
    }
}

// One patch step on the rectangle rows v0 <= v < v1, columns u0 <= u < u1 of the chain image img,
// in place (ipx_step_pixel for act == IPX_ACT_PATCH); `row` holds w x 3 bytes of scratch.
static inline void ipx_patch_rect(const IpxStep* e, unsigned char* img, const unsigned char* x,
                                  const unsigned char* z, const unsigned char* luts, int h, int w,
                                  int v0, int v1, int u0, int u1, unsigned char* row) {
    // The per-value terms of ipx_patch_pixel: a (chain) and b (source) are uint8, so each term has 256
    // values, computed here once with the same float32 operations.
    float ta[256], tb[256];
    unsigned char ua[256], ub[256];
    const int op = e->pixel_op;
    for (int i = 0; i < 256; ++i) {
        float f = (float)i / 255.0f;
        if (op == IPX_ADD) {
            ta[i] = e->wa * (2.0f * f - 1.0f);
            tb[i] = e->wb * (2.0f * f - 1.0f);
        } else if (op == IPX_MULTIPLY) {
            ta[i] = powf(2.0f * f, e->wa);
            tb[i] = powf(fmaxf(2.0f * f, 1e-37f), e->wb);
        } else {
            ua[i] = ub[i] = ipx_to_uint8(f);
        }
    }
    const unsigned int hkey = ipx_lowbias32(e->key);
    const int n = (u1 - u0) * 3;
    for (int v = v0; v < v1; ++v) {
        unsigned char* a = img + ((long long)v * w + u0) * 3;
        const unsigned char* b;
        if (e->src_op == IPX_NO_OP) {
            b = z + ((long long)v * w + u0) * 3;
        } else {
            ipx_image_op_span(e->src_op, e->s, luts + 768, x, h, w, v, u0, u1, row);
            b = row;
        }
        if (op == IPX_ADD) {
            for (int i = 0; i < n; ++i) a[i] = ipx_to_uint8((ta[a[i]] + tb[b[i]] + 1.0f) / 2.0f);
        } else if (op == IPX_MULTIPLY) {
            for (int i = 0; i < n; ++i) a[i] = ipx_to_uint8(ta[a[i]] * tb[b[i]] / 2.0f);
        } else {
            const unsigned int r = (unsigned int)(v - e->top);
            const bool elems = op == IPX_RANDOM_ELEMS;
            const float prob = e->prob;
            for (int u = u0; u < u1; ++u) {
                const unsigned int base = (r * 65536u + (unsigned int)(u - e->left)) * 4u;
                unsigned char* pa = a + (u - u0) * 3;
                const unsigned char* pb = b + (u - u0) * 3;
                // random_pixels: one draw for the pixel (the three channels share its counter).
                bool keep = !elems && (float)(ipx_lowbias32(base ^ hkey) >> 8) * (1.0f / 16777216.0f) < prob;
                for (int ch = 0; ch < 3; ++ch) {
                    if (elems) {
                        unsigned int counter = base + (unsigned int)ch;
                        keep = (float)(ipx_lowbias32(counter ^ hkey) >> 8) * (1.0f / 16777216.0f) < prob;
                    }
                    pa[ch] = keep ? ua[pa[ch]] : ub[pb[ch]];
                }
            }
        }
    }
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
// lookup tables, one row of a patch source.
static inline long long ipx_sparse_scratch_bytes(int k, int h, int w) {
    return (long long)(k + 1) * h * w * 3 + 1536 + (long long)w * 3;
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
    unsigned char* row = luts + 1536;
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
                    ipx_image_op_span(e->op, e->p, luts, cur, h, w, v, 0, w, dst + (long long)v * w * 3);
                cur = dst;
            } else {
                if (cur == x) {   // the chain's first change: it gets its own copy
                    memcpy(own, x, hw3);
                    cur = own;
                }
                unsigned char* img = (unsigned char*)cur;
                int v0 = ipx_clampi(e->top, 0, h), v1 = ipx_clampi(e->top + e->rect_h, 0, h);
                int u0 = ipx_clampi(e->left, 0, w), u1 = ipx_clampi(e->left + e->rect_w, 0, w);
                if (v0 < v1 && u0 < u1) ipx_patch_rect(e, img, x, z, luts, h, w, v0, v1, u0, u1, row);
            }
        }
        if (cur != own) memcpy(own, cur, hw3);
    }
    return finals;
}

// ipx_final_mix_pixel for n consecutive elements: x (n bytes), chain c's at finals + c * stride, out
// (n floats); a pass per chain over the span (each element's sum still in chain order), so that the
// loops vectorise.
static inline void ipx_mix_span(const unsigned char* x, const unsigned char* finals, long long stride,
                                const float* mixw, int k, long long n, float* out) {
    const float m = mixw[0], keep = 1.0f - m;
    for (long long i = 0; i < n; ++i) out[i] = keep * (float)x[i];
    for (int c = 0; c < k; ++c) {
        const float wc = m * mixw[1 + c];
        const unsigned char* y = finals + c * stride;
        for (long long i = 0; i < n; ++i) out[i] = out[i] + wc * (float)y[i];
    }
    for (long long i = 0; i < n; ++i) out[i] = ipx_clampf(out[i], 0.0f, 255.0f);
}

// One whole sample: steps (k * t rows, chain-major), mixw (1 + k), x and z (h x w x 3 uint8), out
// (h x w x 3 float32, 0..255); scratch of ipx_sparse_scratch_bytes(k, h, w).
static inline void ipx_run_sample_sparse(const IpxStep* steps, const float* mixw, int k, int t,
                                         const unsigned char* x, const unsigned char* z, int h, int w,
                                         unsigned char* scratch, float* out) {
    const long long hw3 = (long long)h * w * 3;
    const unsigned char* finals = ipx_run_chains_sparse(steps, k, t, x, z, h, w, scratch);
    ipx_mix_span(x, finals, hw3, mixw, k, hw3, out);
}

// ------------------------------------------------------------------ normalised output

// An IpxNorm (ipx_core.cuh) from mean and std (3 floats each, 0..255 scale; std > 0).
static inline IpxNorm ipx_norm(const float* mean, const float* std, bool chw) {
    IpxNorm n;
    for (int c = 0; c < 3; ++c) {
        n.mean[c] = mean[c];
        n.inv_std[c] = (float)(1.0 / (double)std[c]);
        n.add[c] = -mean[c] * n.inv_std[c];
    }
    n.chw = chw;
    return n;
}

// ipx_run_sample_sparse's final mix written normalised: x (h x w x 3 uint8), finals the k chain images
// of ipx_run_chains_sparse, mixw (1 + k); out (3 x h x w when norm.chw, else h x w x 3) of T, each
// value passed through convert (float -> T). k = 0 with mixw = {0} writes x itself, normalised.
// Pixels from `first` on only (the rest is written by the caller).
template <typename T, typename Convert>
static inline void ipx_mix_normalized(const unsigned char* x, const unsigned char* finals,
                                      const float* mixw, int k, int h, int w, const IpxNorm& norm,
                                      Convert convert, T* out, long long first = 0) {
    const long long hw = (long long)h * w, hw3 = hw * 3;
    // Blocks of kBlock pixels: mixed and normalised in a float buffer with per-element mean and
    // 1 / std patterns (vectorisable), then stored in the output's layout and type.
    constexpr long long kBlock = 256;
    float buf[kBlock * 3], mean[kBlock * 3], inv[kBlock * 3];
    for (int i = 0; i < kBlock * 3; ++i) {
        mean[i] = norm.mean[i % 3];
        inv[i] = norm.inv_std[i % 3];
    }
    T* planes[3] = {out, out + hw, out + 2 * hw};
    for (long long p0 = first; p0 < hw; p0 += kBlock) {
        const int np = (int)(hw - p0 < kBlock ? hw - p0 : kBlock), n = np * 3;
        ipx_mix_span(x + p0 * 3, finals + p0 * 3, hw3, mixw, k, n, buf);
        for (int i = 0; i < n; ++i) buf[i] = (buf[i] - mean[i]) * inv[i];
        if (norm.chw) {
            for (int c = 0; c < 3; ++c) {
                T* plane = planes[c] + p0;
                for (int j = 0; j < np; ++j) plane[j] = convert(buf[j * 3 + c]);
            }
        } else {
            T* dst = out + p0 * 3;
            for (int i = 0; i < n; ++i) dst[i] = convert(buf[i]);
        }
    }
}

#if defined(__SSE2__)
// 12 bytes at p (four RGB pixels) as three float vectors [r0 g0 b0 r1], [g1 b1 r2 g2], [b2 r3 g3 b3];
// reads p[0..15], which must lie in the buffer.
static inline void ipx_load_rgb4(const unsigned char* p, __m128* v0, __m128* v1, __m128* v2) {
    const __m128i zero = _mm_setzero_si128();
    const __m128i b = _mm_loadu_si128((const __m128i*)p);
    const __m128i lo = _mm_unpacklo_epi8(b, zero), hi = _mm_unpackhi_epi8(b, zero);
    *v0 = _mm_cvtepi32_ps(_mm_unpacklo_epi16(lo, zero));
    *v1 = _mm_cvtepi32_ps(_mm_unpackhi_epi16(lo, zero));
    *v2 = _mm_cvtepi32_ps(_mm_unpacklo_epi16(hi, zero));
}

// ipx_clampf lane by lane (the same value for every input, NaN and -0 included).
static inline __m128 ipx_clamp4(__m128 v, __m128 lo, __m128 hi) {
    const __m128 le = _mm_cmple_ps(v, hi), ge = _mm_cmpge_ps(v, lo);
    const __m128 upper = _mm_or_ps(_mm_and_ps(le, v), _mm_andnot_ps(le, hi));
    return _mm_or_ps(_mm_and_ps(ge, upper), _mm_andnot_ps(ge, lo));
}
#endif

// ipx_mix_normalized for float32 output (ToOutput<float> is the identity): the same operations per
// element, four pixels at a time with SSE2 (mix, clamp, normalise, and for CHW the split into planes
// by shuffles), the rest of the image element by element.
static inline void ipx_mix_normalized_f32(const unsigned char* x, const unsigned char* finals,
                                          const float* mixw, int k, int h, int w, const IpxNorm& norm,
                                          float* out) {
    const long long hw = (long long)h * w, hw3 = hw * 3;
    long long p = 0;
    (void)hw3;
#if defined(__SSE2__)
    const float m = mixw[0], keep = 1.0f - m;
    const __m128 vkeep = _mm_set1_ps(keep), lo = _mm_setzero_ps(), hi = _mm_set1_ps(255.0f);
    const float* mn = norm.mean;
    const float* iv = norm.inv_std;
    // Per-lane channel patterns of the three vectors of four interleaved pixels.
    const __m128 mean0 = _mm_setr_ps(mn[0], mn[1], mn[2], mn[0]), inv0 = _mm_setr_ps(iv[0], iv[1], iv[2], iv[0]);
    const __m128 mean1 = _mm_setr_ps(mn[1], mn[2], mn[0], mn[1]), inv1 = _mm_setr_ps(iv[1], iv[2], iv[0], iv[1]);
    const __m128 mean2 = _mm_setr_ps(mn[2], mn[0], mn[1], mn[2]), inv2 = _mm_setr_ps(iv[2], iv[0], iv[1], iv[2]);
    float* planes[3] = {out, out + hw, out + 2 * hw};
    for (; p * 3 + 16 <= hw3; p += 4) {
        __m128 a0, a1, a2;
        ipx_load_rgb4(x + p * 3, &a0, &a1, &a2);
        a0 = _mm_mul_ps(vkeep, a0);
        a1 = _mm_mul_ps(vkeep, a1);
        a2 = _mm_mul_ps(vkeep, a2);
        for (int c = 0; c < k; ++c) {
            const __m128 wc = _mm_set1_ps(m * mixw[1 + c]);
            __m128 y0, y1, y2;
            ipx_load_rgb4(finals + c * hw3 + p * 3, &y0, &y1, &y2);
            a0 = _mm_add_ps(a0, _mm_mul_ps(wc, y0));
            a1 = _mm_add_ps(a1, _mm_mul_ps(wc, y1));
            a2 = _mm_add_ps(a2, _mm_mul_ps(wc, y2));
        }
        a0 = _mm_mul_ps(_mm_sub_ps(ipx_clamp4(a0, lo, hi), mean0), inv0);
        a1 = _mm_mul_ps(_mm_sub_ps(ipx_clamp4(a1, lo, hi), mean1), inv1);
        a2 = _mm_mul_ps(_mm_sub_ps(ipx_clamp4(a2, lo, hi), mean2), inv2);
        if (norm.chw) {   // [r0 g0 b0 r1] [g1 b1 r2 g2] [b2 r3 g3 b3] -> R, G, B of the four pixels
            const __m128 r = _mm_shuffle_ps(a0, _mm_shuffle_ps(a1, a2, _MM_SHUFFLE(1, 1, 2, 2)),
                                            _MM_SHUFFLE(2, 0, 3, 0));
            const __m128 g = _mm_shuffle_ps(_mm_shuffle_ps(a0, a1, _MM_SHUFFLE(0, 0, 1, 1)),
                                            _mm_shuffle_ps(a1, a2, _MM_SHUFFLE(2, 2, 3, 3)),
                                            _MM_SHUFFLE(2, 0, 2, 0));
            const __m128 b = _mm_shuffle_ps(_mm_shuffle_ps(a0, a1, _MM_SHUFFLE(1, 1, 2, 2)), a2,
                                            _MM_SHUFFLE(3, 0, 2, 0));
            _mm_storeu_ps(planes[0] + p, r);
            _mm_storeu_ps(planes[1] + p, g);
            _mm_storeu_ps(planes[2] + p, b);
        } else {
            _mm_storeu_ps(out + p * 3, a0);
            _mm_storeu_ps(out + p * 3 + 4, a1);
            _mm_storeu_ps(out + p * 3 + 8, a2);
        }
    }
#endif
    // The tail pixels: the generic path (the same operations).
    ipx_mix_normalized(x, finals, mixw, k, h, w, norm, [](float v) { return v; }, out, p);
}

#endif  // DALI_IPMIX_IPX_SAMPLE_H
