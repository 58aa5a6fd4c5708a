// dali-ipmix CUDA kernels: one chain step of every chain of a batch per launch pair, then the final
// mix. Per batch view: t x (ipx_prepare + ipx_step) + ipx_mix, whatever the plan drew; every thread
// reads its chain's row of the plan table and dispatches on the device.
//
// Compiled by NVRTC (CuPy RawModule, dali_ipmix.cuda) and by nvcc (the native DALI operator), with
// --fmad=false. The bodies are in ipx_core.cuh, shared with the host loops of ipx_host.h.
#include "ipx_core.cuh"

#define IPX_LOOP(total) \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (total); \
         i += (long long)blockDim.x * gridDim.x)

// Stats of one image by the whole block: 3 x 256 histograms and the grey-level sum, in shared memory.
static __device__ void ipx_block_stats(const unsigned char* img, long long npix, int* hist,
                                       unsigned long long* grey_sum, bool want_grey) {
    for (int i = threadIdx.x; i < 768; i += blockDim.x) hist[i] = 0;
    if (threadIdx.x == 0) *grey_sum = 0;
    __syncthreads();
    unsigned long long grey = 0;
    for (long long i = threadIdx.x; i < npix; i += blockDim.x) {
        const unsigned char* px = img + i * 3;
        atomicAdd(&hist[px[0]], 1);
        atomicAdd(&hist[256 + px[1]], 1);
        atomicAdd(&hist[512 + px[2]], 1);
        if (want_grey) grey += (unsigned long long)ipx_grey(px);
    }
    if (want_grey) atomicAdd(grey_sum, grey);
    __syncthreads();
}

static __device__ void ipx_block_luts(int op, const float* p, int cut, const unsigned char* img,
                                      int h, int w, unsigned char* luts, int* hist,
                                      unsigned long long* grey_sum) {
    if (!ipx_is_lut_op(op)) return;   // op is the same for the whole block: no divergent barrier
    long long npix = (long long)h * w;
    if (ipx_needs_histogram(op) || ipx_needs_grey_sum(op))
        ipx_block_stats(img, npix, hist, grey_sum, ipx_needs_grey_sum(op));
    if (threadIdx.x < 3)
        ipx_lut_channel(op, p[0], cut, hist + threadIdx.x * 256, (long long)*grey_sum, npix,
                        luts + threadIdx.x * 256);
    __syncthreads();
}

// One block per chain: the lookup tables of step j (ipx_host.h's ipx_prepare_chain).
extern "C" __global__ void ipx_prepare(const IpxStep* steps, int j, int t, int k,
                                       const unsigned char* in, int in_is_x, const unsigned char* x,
                                       int h, int w, unsigned char* luts, long long n_chains) {
    __shared__ int hist[768];
    __shared__ unsigned long long grey_sum;
    long long hw3 = (long long)h * w * 3;
    for (long long chain = blockIdx.x; chain < n_chains; chain += gridDim.x) {
        const IpxStep* e = steps + chain * t + j;
        unsigned char* own = luts + chain * 1536;
        if (e->act == IPX_ACT_IMAGE)
            ipx_block_luts(e->op, e->p, e->cut, ipx_chain_input(in, in_is_x, chain, k, hw3), h, w,
                           own, hist, &grey_sum);
        if (e->act == IPX_ACT_PATCH && e->src_op != IPX_NO_OP)
            ipx_block_luts(e->src_op, e->s, e->src_cut, x + (chain / k) * hw3, h, w, own + 768,
                           hist, &grey_sum);
    }
}

// One thread per pixel of every chain: step j.
extern "C" __global__ void ipx_step(const IpxStep* steps, int j, int t, int k,
                                    const unsigned char* in, int in_is_x, const unsigned char* x,
                                    const unsigned char* z, const unsigned char* luts,
                                    unsigned char* out, int h, int w, long long total) {
    IPX_LOOP(total) ipx_step_at(i, steps, j, t, k, in, in_is_x, x, z, luts, out, h, w);
}

// One thread per output element: (1 - m) x + sum_c m w_c y_c.
extern "C" __global__ void ipx_mix(const unsigned char* x, const unsigned char* chains,
                                   const float* mixw, float* out, int k, long long hw3,
                                   long long total) {
    IPX_LOOP(total) ipx_mix_at(i, x, chains, mixw, out, k, hw3);
}
