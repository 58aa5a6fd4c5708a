// IpmixNative on the GPU: the kernels of csrc/ipx_kernels.cu over the whole batch, on DALI's stream.
//
// Per view: the batch's plan table (N * k * T IpxStep rows, T = cfg.table_steps(), then N mix rows of
// 1 + k floats) is
// drawn on the host into pinned memory and uploaded with one async copy; then, as
// dali_ipmix.table.TableExecutor launches them, per step j one ipx_prepare (min(N * k, 65535) blocks)
// and one ipx_step, then ipx_mix. The kernels need one image size across the batch and contiguous
// batches: inputs that are not one contiguous run of samples are gathered first, and the clean view
// and the mix are written to a scratch buffer when the output is not one either. With `mean`/`std`
// (or `output_layout`, `dtype`) the clean view and the mix write the normalised output directly
// (ipx_mix_norm, as the GPU crop_mirror_normalize computes it). Launches per batch:
// (1 if JSD) + views x (2 steps + 1), whatever N. Compile with --fmad=false.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <vector>

#include "dali/core/convert.h"
#include "dali/core/cuda_error.h"
#include "dali/core/float16.h"
#include "dali/kernels/dynamic_scratchpad.h"
#include "ipmix_op.h"
#include "ipx_kernels.cu"

namespace dali_ipmix {

using ::dali::GPUBackend;
using ::dali::Workspace;

namespace {

constexpr int kThreads = 256;       // threads per block of every launch (table.THREADS)
constexpr int64_t kMaxBlocks = 65535;   // grid cap; the kernels loop over the rest (table.MAX_BLOCKS)

int Blocks(int64_t total) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((total + kThreads - 1) / kThreads,
                                                                  kMaxBlocks)));
}

__global__ void ipx_to_float(const unsigned char *in, float *out, int64_t total) {
  IPX_LOOP(total) out[i] = in[i];
}

// The normalised image output of a batch (ipx_mix_norm_at): the final mix of the chains, or with
// k == 0 the images themselves; T as crop_mirror_normalize converts its float result.
template <typename T>
__global__ void ipx_mix_norm(const unsigned char *x, const unsigned char *chains, const float *mixw,
                             IpxNorm norm, T *out, int k, int64_t hw, int64_t total) {
  IPX_LOOP(total) out[i] = ::dali::ConvertSat<T>(ipx_mix_norm_at(i, x, chains, mixw, k, hw, &norm));
}

// `bytes_per_sample`-byte samples of `list` as one contiguous device array: the list's own memory
// when its samples already lie back to back, else a gathered copy in `scratch`.
template <typename List>
const unsigned char *Contiguous(const List &list, int64_t bytes_per_sample,
                                ::dali::kernels::Scratchpad &scratch, cudaStream_t stream) {
  int n = list.num_samples();
  auto base = static_cast<const unsigned char *>(list.raw_tensor(0));
  bool packed = true;
  for (int s = 1; s < n && packed; ++s)
    packed = static_cast<const unsigned char *>(list.raw_tensor(s)) == base + s * bytes_per_sample;
  if (packed) return base;
  auto *dst = scratch.AllocateGPU<unsigned char>(n * bytes_per_sample);
  for (int s = 0; s < n; ++s)
    CUDA_CALL(cudaMemcpyAsync(dst + s * bytes_per_sample, list.raw_tensor(s), bytes_per_sample,
                              cudaMemcpyDeviceToDevice, stream));
  return dst;
}

// An image output whose n samples of `bytes` bytes each are written by one launch: straight into the
// output when its samples lie back to back (the usual case), else into a scratch buffer that
// Finish() copies out sample by sample.
template <typename List>
class PackedOutput {
 public:
  PackedOutput(List &out, int n, int64_t bytes, ::dali::kernels::Scratchpad &scratch)
      : out_(out), n_(n), bytes_(bytes) {
    auto *base = static_cast<unsigned char *>(out.raw_mutable_tensor(0));
    data_ = base;
    for (int s = 1; s < n && data_ == base; ++s)
      if (static_cast<unsigned char *>(out.raw_mutable_tensor(s)) != base + s * bytes)
        data_ = scratch.AllocateGPU<unsigned char>(n * bytes);
  }

  template <typename T>
  T *data() const { return reinterpret_cast<T *>(data_); }

  void Finish(cudaStream_t stream) {
    if (data_ == out_.raw_mutable_tensor(0)) return;
    for (int s = 0; s < n_; ++s)
      CUDA_CALL(cudaMemcpyAsync(out_.raw_mutable_tensor(s), data_ + s * bytes_, bytes_,
                                cudaMemcpyDeviceToDevice, stream));
  }

 private:
  List &out_;
  int n_;
  int64_t bytes_;
  unsigned char *data_;
};

// One image output (the clean image when chains is null, else the final mix of the chains): HWC
// float32 on 0..255, or normalised as `spec` says; one launch.
template <typename List>
void WriteImages(const OutputSpec &spec, List &out, const unsigned char *x,
                 const unsigned char *chains, const float *mixw, int k, int n, int64_t hw,
                 ::dali::kernels::Scratchpad &scratch, cudaStream_t stream) {
  const int64_t total = n * hw * 3;
  const int64_t size = spec.type == DALI_FLOAT16 ? sizeof(::dali::float16) : sizeof(float);
  PackedOutput<List> dst(out, n, hw * 3 * size, scratch);
  if (!spec.fused && chains == nullptr) {
    ipx_to_float<<<Blocks(total), kThreads, 0, stream>>>(x, dst.template data<float>(), total);
  } else if (!spec.fused) {
    ipx_mix<<<Blocks(total), kThreads, 0, stream>>>(x, chains, mixw, dst.template data<float>(), k,
                                                     hw * 3, total);
  } else if (spec.type == DALI_FLOAT16) {
    ipx_mix_norm<<<Blocks(total), kThreads, 0, stream>>>(
        x, chains, mixw, spec.norm, dst.template data<::dali::float16>(), chains ? k : 0, hw, total);
  } else {
    ipx_mix_norm<<<Blocks(total), kThreads, 0, stream>>>(
        x, chains, mixw, spec.norm, dst.template data<float>(), chains ? k : 0, hw, total);
  }
  CUDA_CALL(cudaGetLastError());
  dst.Finish(stream);
}

}  // namespace

template <>
void IpmixOp<GPUBackend>::RunImpl(Workspace &ws) {
  const auto &xin = ws.Input<GPUBackend>(0);
  const auto &zin = ws.Input<GPUBackend>(1);
  const int n = xin.num_samples();
  const std::vector<DrawKey> keys = SampleKeys(ws, keyed_, batch_++, n);
  const ::dali::TensorLayout layout = out_.norm.chw ? ::dali::TensorLayout("CHW")
                                                    : ::dali::TensorLayout("HWC");
  for (int o = 0; o < NumImageOutputs(); ++o) ws.Output<GPUBackend>(o).SetLayout(layout);
  if (n == 0) return;
  cudaStream_t stream = ws.stream();
  ::dali::kernels::DynamicScratchpad scratch(stream);
  const int k = cfg_.k, tt = cfg_.table_steps();
  const int h = sizes_[0].first, w = sizes_[0].second;
  const int64_t hw = static_cast<int64_t>(h) * w, hw3 = hw * 3, chains = static_cast<int64_t>(n) * k;
  const unsigned char *x = Contiguous(xin, hw3, scratch, stream);
  const unsigned char *z = Contiguous(zin, hw3, scratch, stream);

  if (jsd_)   // one launch over the batch, as for the views
    WriteImages(out_, ws.Output<GPUBackend>(0), x, nullptr, nullptr, 0, n, hw, scratch, stream);

  const int64_t row_words = sizeof(IpxStep) / 4, rows_per_sample = static_cast<int64_t>(k) * tt;
  const int64_t table_words = n * rows_per_sample * row_words + static_cast<int64_t>(n) * (1 + k);
  unsigned char *buf[2] = {scratch.AllocateGPU<unsigned char>(chains * hw3),
                           tt > 1 ? scratch.AllocateGPU<unsigned char>(chains * hw3) : nullptr};
  unsigned char *luts = scratch.AllocateGPU<unsigned char>(chains * 1536);

  for (int v = 0; v < NumViews(); ++v) {
    // The table, drawn per sample on the host, pinned, one upload.
    uint32_t *host = scratch.AllocatePinned<uint32_t>(table_words);
    auto *host_rows = reinterpret_cast<IpxStep *>(host);
    auto *host_mixw = reinterpret_cast<float *>(host + n * rows_per_sample * row_words);
    std::vector<SamplePlan> plans(return_plan_ ? n : 1);
    for (int s = 0; s < n; ++s) {
      SamplePlan &plan = plans[return_plan_ ? s : 0];
      DrawSample(cfg_, seed_, keys[s], v, h, w, return_plan_, &plan);
      std::copy(plan.rows.begin(), plan.rows.end(), host_rows + s * rows_per_sample);
      std::copy(plan.mixw.begin(), plan.mixw.end(), host_mixw + s * (1 + k));
    }
    uint32_t *table = scratch.AllocateGPU<uint32_t>(table_words);
    CUDA_CALL(cudaMemcpyAsync(table, host, table_words * 4, cudaMemcpyHostToDevice, stream));
    const auto *steps = reinterpret_cast<const IpxStep *>(table);
    const auto *mixw = reinterpret_cast<const float *>(table + n * rows_per_sample * row_words);

    const unsigned char *src = x;
    int src_is_x = 1;
    for (int j = 0; j < tt; ++j) {
      unsigned char *dst = buf[tt > 1 ? j % 2 : 0];
      ipx_prepare<<<static_cast<int>(std::min<int64_t>(chains, kMaxBlocks)), kThreads, 0, stream>>>(
          steps, j, tt, k, src, src_is_x, x, h, w, luts, chains);
      const int64_t total = chains * h * w;
      ipx_step<<<Blocks(total), kThreads, 0, stream>>>(steps, j, tt, k, src, src_is_x, x, z, luts,
                                                       dst, h, w, total);
      src = dst;
      src_is_x = 0;
    }
    WriteImages(out_, ws.Output<GPUBackend>(ViewOutput(v)), x, src, mixw, k, n, hw, scratch, stream);

    if (return_plan_) {   // debug outputs: straight from the pinned table and the drawn records
      auto &rec = ws.Output<GPUBackend>(PlanOutput(v));
      auto &tab = ws.Output<GPUBackend>(TableOutput(v));
      double *records = scratch.AllocatePinned<double>(n * ipx_plan_doubles(cfg_));
      for (int s = 0; s < n; ++s) {
        std::copy(plans[s].record.begin(), plans[s].record.end(),
                  records + s * ipx_plan_doubles(cfg_));
        CUDA_CALL(cudaMemcpyAsync(rec.mutable_tensor<double>(s), records + s * ipx_plan_doubles(cfg_),
                                  ipx_plan_doubles(cfg_) * sizeof(double), cudaMemcpyHostToDevice,
                                  stream));
        uint32_t *t = tab.mutable_tensor<uint32_t>(s);
        CUDA_CALL(cudaMemcpyAsync(t, host + s * rows_per_sample * row_words,
                                  rows_per_sample * row_words * 4, cudaMemcpyHostToDevice, stream));
        CUDA_CALL(cudaMemcpyAsync(t + rows_per_sample * row_words, host_mixw + s * (1 + k),
                                  (1 + k) * sizeof(float), cudaMemcpyHostToDevice, stream));
      }
    }
  }
}

}  // namespace dali_ipmix

DALI_REGISTER_OPERATOR(IpmixNative, ::dali_ipmix::IpmixOp<::dali::GPUBackend>, ::dali::GPU);
