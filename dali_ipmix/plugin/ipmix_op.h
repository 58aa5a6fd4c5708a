// IpmixNative: IPMix as a native DALI operator (fn.ipmix_native; dali_ipmix.fn.ipmix(backend="native")).
//
// Inputs: images and mixing pictures, HWC uint8 RGB (0..255), sample i of both of one H x W (H, W >= 2).
// Outputs: one view (HWC float32, 0..255), or with jsd (clean, view1, view2); with `mean` and `std`
// (and/or `output_layout` "CHW", `dtype` float16) every image output is written normalised,
// (v - mean[c]) / std[c] in the asked layout and type, by the final mix (bit for bit what
// crop_mirror_normalize on the same device makes of the plain output); with return_plan, per
// view two more: the plan record (float64, ipx_plan.h's ipx_write_plan) and the plan-table rows the
// view ran (uint32: k * T IpxStep rows of 26 words, T = max(t, 1) plus one with `chain_start`, then m
// and the k chain weights as float32).
//
// Randomness: every sample and view draws its own plan (ipx_plan.h) from the key (seed, batch
// counter, sample, view), so the result depends on neither the thread count nor the batch split
// over threads. That still ties a sample's draws to its place in the batch and to the batches run
// before it, which shuffling, resuming or resharding change. With the optional argument input
// `sample_key` (one int64 per sample: the IPMix key keys.SampleDraws derives from (seed, epoch,
// position in the epoch's order)) the key is instead (seed,
// sample_key, ~0, view): the same image with the same key gets the same views in any batch, at any
// position, on either device. ~0 is never a sample index, so no keyed draw repeats an unkeyed one.
// The per-pixel work is the compiled core of csrc/ (ipx_host.h on the CPU, the kernels
// of ipx_kernels.cu on the GPU).
#ifndef DALI_IPMIX_NATIVE_IPMIX_OP_H
#define DALI_IPMIX_NATIVE_IPMIX_OP_H

#include <cstdint>
#include <string>
#include <vector>

// The compiled core first: outside nvcc it defines __host__/__device__ as empty, which the CUDA
// headers that DALI includes then redefine (silently, as system headers) after the core is parsed.
#include "ipx_plan.h"
#include "ipx_sample.h"
#include "dali/pipeline/operator/operator.h"

namespace dali_ipmix {

// One view of one sample: the table rows (k * steps) and mix row (1 + k) it runs with, and its
// plan record when asked for.
struct SamplePlan {
  std::vector<IpxStep> rows;
  std::vector<float> mixw;
  std::vector<double> record;
};

// The operator's arguments as an IpxConfig; throws naming the argument on an invalid value.
IpxConfig ReadConfig(const ::dali::OpSpec &spec);

// Whether `sample_key` is given (as an argument input); throws when it is given as a constant.
bool ReadKeyed(const ::dali::OpSpec &spec);

// The fused output normalisation (`mean`, `std`, `output_layout`, `dtype`), or throws naming the
// argument. *fused is false when the arguments ask for the default output (HWC float32, 0..255).
struct OutputSpec {
  bool fused = false;
  IpxNorm norm{};
  ::dali::DALIDataType type = DALI_FLOAT;
};
OutputSpec ReadOutputSpec(const ::dali::OpSpec &spec);

// Checks the inputs of a batch; throws naming the input, the sample and the rule. Returns the
// per-sample (H, W). `uniform` additionally requires one size across the batch (GPU).
std::vector<std::pair<int, int>> CheckInputs(const ::dali::Workspace &ws, const IpxConfig &cfg,
                                             bool uniform);

// The two middle words of a sample's draw key, ipx_stream(seed, a, b, view): (batch counter, sample)
// unkeyed, (sample_key, ~0) keyed (dali_ipmix.keys.plan_keys, what the python backend draws from).
struct DrawKey {
  uint64_t a, b;
};

// Checks the `sample_key` argument input against a batch of n samples; throws naming the argument,
// the sample and the rule.
void CheckSampleKeys(const ::dali::Workspace &ws, int n);

// The draw keys of the batch's n samples: from `sample_key` when `keyed`, else from the batch
// counter.
std::vector<DrawKey> SampleKeys(const ::dali::Workspace &ws, bool keyed, uint64_t batch, int n);

// Draws and packs one view of one sample of an h x w image.
void DrawSample(const IpxConfig &cfg, int64_t seed, DrawKey key, int view, int h, int w,
                bool want_record, SamplePlan *out);

// Number of table words per view and sample: k * table_steps IpxStep rows of 26 words, then 1 + k
// floats.
inline int64_t TableWords(const IpxConfig &cfg) {
  return (int64_t)cfg.k * cfg.table_steps() * (int64_t)(sizeof(IpxStep) / 4) + 1 + cfg.k;
}

template <typename Backend>
class IpmixOp : public ::dali::Operator<Backend> {
 public:
  explicit IpmixOp(const ::dali::OpSpec &spec)
      : ::dali::Operator<Backend>(spec),
        cfg_(ReadConfig(spec)),
        jsd_(spec.GetArgument<bool>("jsd")),
        return_plan_(spec.GetArgument<bool>("return_plan")),
        seed_(spec.GetArgument<int64_t>("seed")),
        keyed_(ReadKeyed(spec)),
        out_(ReadOutputSpec(spec)) {}

  IpmixOp(const IpmixOp &) = delete;
  IpmixOp &operator=(const IpmixOp &) = delete;

 protected:
  int NumViews() const { return jsd_ ? 2 : 1; }
  int NumImageOutputs() const { return jsd_ ? 3 : 1; }

  bool SetupImpl(std::vector<::dali::OutputDesc> &output_desc,
                 const ::dali::Workspace &ws) override {
    sizes_ = CheckInputs(ws, cfg_, std::is_same<Backend, ::dali::GPUBackend>::value);
    int n = static_cast<int>(sizes_.size());
    if (keyed_) CheckSampleKeys(ws, n);
    ::dali::TensorListShape<> images(n, 3);
    for (int i = 0; i < n; ++i) {
      const int h = sizes_[i].first, w = sizes_[i].second;
      if (out_.norm.chw)
        images.set_tensor_shape(i, {3, h, w});
      else
        images.set_tensor_shape(i, {h, w, 3});
    }
    output_desc.clear();
    for (int o = 0; o < NumImageOutputs(); ++o) output_desc.push_back({images, out_.type});
    if (return_plan_) {
      auto plan = ::dali::uniform_list_shape(n, ::dali::TensorShape<1>{ipx_plan_doubles(cfg_)});
      auto table = ::dali::uniform_list_shape(n, ::dali::TensorShape<1>{TableWords(cfg_)});
      for (int v = 0; v < NumViews(); ++v) {
        output_desc.push_back({plan, DALI_FLOAT64});
        output_desc.push_back({table, DALI_UINT32});
      }
    }
    return true;
  }

  void RunImpl(::dali::Workspace &ws) override;

  // Output index of view v's image, plan record and table.
  int ViewOutput(int v) const { return jsd_ ? 1 + v : 0; }
  int PlanOutput(int v) const { return NumImageOutputs() + 2 * v; }
  int TableOutput(int v) const { return NumImageOutputs() + 2 * v + 1; }

  IpxConfig cfg_;
  bool jsd_, return_plan_;
  int64_t seed_;
  bool keyed_;           // `sample_key` given: it replaces (batch_, sample) in the draw keys
  OutputSpec out_;
  uint64_t batch_ = 0;   // batches run so far: part of every unkeyed draw's key
  std::vector<std::pair<int, int>> sizes_;
};

}  // namespace dali_ipmix

#endif  // DALI_IPMIX_NATIVE_IPMIX_OP_H
