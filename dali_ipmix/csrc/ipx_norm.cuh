// dali-ipmix compiled core: the native operator's normalised image output.
//
// Shared by the native GPU operator (ipmix_op.cu's ipx_mix_norm kernel), the native CPU operator
// (IpxNorm, in ipx_sample.h's ipx_mix_normalized) and the host loops the tests run
// (ipx_host.h's ipx_mix_norm_host). Not part of the kernels CuPy loads (ipx_kernels.cu), which
// write the plain float32 output. Compile with --fmad=false / -ffp-contract=off as the core.
#ifndef DALI_IPMIX_IPX_NORM_CUH
#define DALI_IPMIX_IPX_NORM_CUH

#include "ipx_core.cuh"

// The output normalisation of an image value v (0..255) of channel c, as DALI's crop_mirror_normalize
// computes it on each device, so that the native operator's fused output equals IPMix followed by
// that operator bit for bit: on the CPU (v - mean[c]) * inv_std[c] (ipx_sample.h's
// ipx_mix_normalized), on the GPU fmaf(v, inv_std[c], add[c]) with add[c] = -mean[c] * inv_std[c]
// in float32 (ipx_mix_norm_at). inv_std[c] = (float)(1.0 / (double)std[c]), DALI's rounding (set
// by ipx_sample.h's ipx_norm, on the host).
struct IpxNorm {
    float mean[3];      // per channel, 0..255 scale
    float inv_std[3];   // per channel, reciprocal of the standard deviation on the 0..255 scale
    float add[3];       // -mean[c] * inv_std[c], float32: the GPU form's offset
    bool chw;           // planar output (3, h, w) instead of interleaved (h, w, 3)
};

// Element o of a batch's normalised image output, (N, 3, h, w) when norm->chw else (N, h, w, 3), in
// the GPU form: the final mix of sample n's k chains (ipx_final_mix_pixel; chains (N*k, h, w, 3),
// mixw (N, 1 + k)), or with k == 0 its image x itself (the clean output of JSD mode).
IPX_FN float ipx_mix_norm_at(long long o, const unsigned char* x, const unsigned char* chains,
                             const float* mixw, int k, long long hw, const IpxNorm* norm) {
    long long hw3 = hw * 3, n = o / hw3, r = o - n * hw3, pix;
    int c;
    if (norm->chw) {
        c = (int)(r / hw);
        pix = r - c * hw;
    } else {
        pix = r / 3;
        c = (int)(r - pix * 3);
    }
    long long at = n * hw3 + pix * 3 + c;   // the element in the HWC inputs
    float v = k == 0 ? (float)x[at]
                     : ipx_final_mix_pixel(x[at], chains + n * k * hw3 + pix * 3 + c, hw3,
                                           mixw + n * (1 + k), k);
    return fmaf(v, norm->inv_std[c], norm->add[c]);
}

#endif  // DALI_IPMIX_IPX_NORM_CUH
