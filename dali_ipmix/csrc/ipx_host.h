// dali-ipmix compiled core, host side: the chain steps as plain loops on the CPU.
//
// The same per-chain and per-pixel bodies as the CUDA kernels (ipx_core.cuh); the functions named
// like a kernel (ipx_prepare_host, ipx_step_host, ipx_mix_host) take the kernel's arguments and run
// its whole grid in a loop, which is how the tests check the kernels on a machine without a GPU.
// ipx_run_sample runs one whole sample, for per-sample work on a thread pool (the native CPU operator).
#ifndef DALI_IPMIX_IPX_HOST_H
#define DALI_IPMIX_IPX_HOST_H

#include <string.h>

#include "ipx_core.cuh"
#include "ipx_norm.cuh"

// Per-channel histograms (3 x 256) and the grey-level sum of one h x w x 3 image.
static inline void ipx_image_stats(const unsigned char* img, int h, int w, int* hist,
                                   long long* grey_sum) {
    memset(hist, 0, 768 * sizeof(int));
    long long grey = 0;
    long long n = (long long)h * w;
    for (long long i = 0; i < n; ++i) {
        const unsigned char* px = img + i * 3;
        ++hist[px[0]];
        ++hist[256 + px[1]];
        ++hist[512 + px[2]];
        grey += ipx_grey(px);
    }
    *grey_sum = grey;
}

// The 3 x 256 tables of LUT op `op` (parameters p, cut) for image `img`; nothing for other ops.
static inline void ipx_build_luts(int op, const float* p, int cut, const unsigned char* img, int h,
                                  int w, unsigned char* luts) {
    if (!ipx_is_lut_op(op)) return;
    int hist[768];
    long long grey_sum = 0;
    if (ipx_needs_histogram(op) || ipx_needs_grey_sum(op)) ipx_image_stats(img, h, w, hist, &grey_sum);
    for (int c = 0; c < 3; ++c)
        ipx_lut_channel(op, p[0], cut, hist + c * 256, grey_sum, (long long)h * w, luts + c * 256);
}

// The tables of chain `chain` for step `e`: luts[0:768] for the chain's op (on its current image
// `in`), luts[768:1536] for the patch source op (on the original image `x`).
static inline void ipx_prepare_chain(const IpxStep* e, const unsigned char* in,
                                     const unsigned char* x, int h, int w, unsigned char* luts) {
    if (e->act == IPX_ACT_IMAGE) ipx_build_luts(e->op, e->p, e->cut, in, h, w, luts);
    if (e->act == IPX_ACT_PATCH && e->src_op != IPX_NO_OP)
        ipx_build_luts(e->src_op, e->s, e->src_cut, x, h, w, luts + 768);
}

// ---- the kernels' grids as host loops (same arguments as ipx_kernels.cu) ----

static inline void ipx_prepare_host(const IpxStep* steps, int j, int t, int k,
                                    const unsigned char* in, int in_is_x, const unsigned char* x,
                                    int h, int w, unsigned char* luts, long long n_chains) {
    long long hw3 = (long long)h * w * 3;
    for (long long chain = 0; chain < n_chains; ++chain)
        ipx_prepare_chain(steps + chain * t + j, ipx_chain_input(in, in_is_x, chain, k, hw3),
                          x + (chain / k) * hw3, h, w, luts + chain * 1536);
}

static inline void ipx_step_host(const IpxStep* steps, int j, int t, int k,
                                 const unsigned char* in, int in_is_x, const unsigned char* x,
                                 const unsigned char* z, const unsigned char* luts,
                                 unsigned char* out, int h, int w, long long total) {
    for (long long i = 0; i < total; ++i) ipx_step_at(i, steps, j, t, k, in, in_is_x, x, z, luts, out, h, w);
}

static inline void ipx_mix_host(const unsigned char* x, const unsigned char* chains,
                                const float* mixw, float* out, int k, long long hw3, long long total) {
    for (long long i = 0; i < total; ++i) ipx_mix_at(i, x, chains, mixw, out, k, hw3);
}

// The native GPU operator's normalised output (ipmix_op.cu's ipx_mix_norm), float32.
static inline void ipx_mix_norm_host(const unsigned char* x, const unsigned char* chains,
                                     const float* mixw, IpxNorm norm, float* out, int k, long long hw,
                                     long long total) {
    for (long long i = 0; i < total; ++i) out[i] = ipx_mix_norm_at(i, x, chains, mixw, k, hw, &norm);
}

// Bytes of scratch ipx_run_sample needs: two chain buffers of k images and 2 x 3 x 256 tables per chain.
static inline long long ipx_sample_scratch_bytes(int k, int h, int w) {
    return 2LL * k * h * w * 3 + (long long)k * 1536;
}

// One whole sample: steps (k * t rows, chain-major), mixw (1 + k), x and z (h x w x 3 uint8),
// out (h x w x 3 float32, 0..255); scratch of ipx_sample_scratch_bytes(k, h, w).
static inline void ipx_run_sample(const IpxStep* steps, const float* mixw, int k, int t,
                                  const unsigned char* x, const unsigned char* z, int h, int w,
                                  unsigned char* scratch, float* out) {
    long long hw = (long long)h * w, hw3 = hw * 3;
    unsigned char* buf[2] = {scratch, scratch + k * hw3};
    unsigned char* luts = scratch + 2 * k * hw3;
    const unsigned char* in = x;
    if (t <= 0) {   // no steps: every chain is x itself (the mix reads k chain images)
        for (int c = 0; c < k; ++c) memcpy(buf[0] + c * hw3, x, (size_t)hw3);
        in = buf[0];
    }
    for (int j = 0; j < t; ++j) {
        unsigned char* dst = buf[j & 1];
        ipx_prepare_host(steps, j, t, k, in, j == 0, x, h, w, luts, k);
        ipx_step_host(steps, j, t, k, in, j == 0, x, z, luts, dst, h, w, k * hw);
        in = dst;
    }
    ipx_mix_host(x, in, mixw, out, k, hw3, hw3);
}

#endif  // DALI_IPMIX_IPX_HOST_H
