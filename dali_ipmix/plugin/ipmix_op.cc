// IpmixNative: schema, argument and input checks, the per-sample draw, and the CPU operator.
//
// CPU: one task per (sample, view) on DALI's thread pool; each draws its plan, packs its table rows
// and runs ipx_sample.h's ipx_run_sample_sparse (ipx_run_sample's result, visiting only the pixels the
// plan changes) with a per-thread scratch buffer. No Python, no GIL.
#include "ipmix_op.h"

#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "dali/core/convert.h"
#include "ipx_sample.h"

namespace dali_ipmix {

using ::dali::CPUBackend;
using ::dali::OpSpec;
using ::dali::Workspace;

namespace {

const char *const kInputNames[2] = {"images", "mixing"};
const char *const kSampleKey = "sample_key";
// Upper bounds of `k` and `t`, as dali_ipmix.config.K_MAX / T_MAX: a typo (k = 2^31 - 1) is an
// error here, not an allocation of k * t plan steps per view until the process is killed.
constexpr int kMaxK = 32;
constexpr int kMaxT = 32;

template <typename... Args>
std::string Msg(const Args &...args) {
  std::ostringstream ss;
  (ss << ... << args);
  return ss.str();
}

[[noreturn]] void Fail(const std::string &what) {
  throw std::runtime_error("ipmix_native: " + what);   // as DALI_ENFORCE: RuntimeError in Python
}

std::string ShapeText(const ::dali::TensorShape<> &s) {
  std::ostringstream ss;
  ss << "(";
  for (int d = 0; d < s.sample_dim(); ++d) ss << (d ? ", " : "") << s[d];
  ss << (s.sample_dim() == 1 ? ",)" : ")");   // as Python writes the tuple
  return ss.str();
}

}  // namespace

IpxConfig ReadConfig(const OpSpec &spec) {
  IpxConfig cfg;
  cfg.k = spec.GetArgument<int>("k");
  cfg.t = spec.GetArgument<int>("t");
  cfg.beta = spec.GetArgument<float>("beta");
  cfg.severity = spec.GetArgument<float>("severity");
  cfg.whole_image_patch = spec.GetArgument<bool>("whole_image_patch");
  cfg.source_from_image = spec.GetArgument<bool>("source_from_image");
  cfg.patch_sizes = spec.GetRepeatedArgument<int>("patch_sizes");
  cfg.op_codes = spec.GetRepeatedArgument<int>("op_codes");
  cfg.min_ops = spec.GetArgument<int>("min_ops");
  cfg.chain_kinds = spec.GetArgument<int>("chain_kinds");
  cfg.pixel_ops = spec.GetArgument<int>("pixel_ops");
  cfg.whole_image_only = spec.GetArgument<bool>("whole_image_only");
  cfg.final_blend = spec.GetArgument<bool>("final_blend");
  cfg.chain_start = spec.GetArgument<bool>("chain_start");

  if (cfg.k < 1 || cfg.k > kMaxK)
    Fail(Msg("argument `k`=", cfg.k, " is invalid: must be >= 1 and <= ", kMaxK));
  if (cfg.t < 0 || cfg.t > kMaxT)
    Fail(Msg("argument `t`=", cfg.t, " is invalid: must be >= 0 and <= ", kMaxT));
  if (!(cfg.beta > 0 && std::isfinite(cfg.beta)))
    Fail(Msg("argument `beta`=", cfg.beta, " is invalid: must be finite and > 0"));
  if (!(cfg.severity >= 1 && cfg.severity <= 10))
    Fail(Msg("argument `severity`=", cfg.severity, " is invalid: allowed range is 1..10"));
  for (int s : cfg.patch_sizes)
    if (s < 2) Fail(Msg("argument `patch_sizes` has entry ", s, ": every patch size must be >= 2"));
  if (cfg.patch_sizes.empty() && !cfg.whole_image_patch)
    Fail("argument `patch_sizes` is empty and `whole_image_patch` is False: no patch size to draw");
  if (cfg.op_codes.empty()) Fail("argument `op_codes` is empty: give at least one image-level op");
  for (int c : cfg.op_codes)
    if (c < 0 || c >= IPX_NUM_LAWS)
      Fail(Msg("argument `op_codes` has entry ", c, ": op codes are 0..", IPX_NUM_LAWS - 1,
               " (dali_ipmix.laws.OP_CODES)"));
  if (cfg.min_ops < 0 || cfg.min_ops > cfg.t)
    Fail(Msg("argument `min_ops`=", cfg.min_ops, " is invalid: must be >= 0 and <= `t` (", cfg.t, ")"));
  if (cfg.chain_kinds < IPX_KINDS_BOTH || cfg.chain_kinds > IPX_KINDS_PATCH)
    Fail(Msg("argument `chain_kinds`=", cfg.chain_kinds,
             " is invalid: 0 (image or patch level), 1 (image level) or 2 (patch level)"));
  if (cfg.pixel_ops < 1 || cfg.pixel_ops > IPX_NUM_PIXEL_OPS)
    Fail(Msg("argument `pixel_ops`=", cfg.pixel_ops, " is invalid: must be >= 1 and <= ",
             IPX_NUM_PIXEL_OPS));
  return cfg;
}

bool ReadKeyed(const OpSpec &spec) {
  if (spec.HasArgument(kSampleKey))
    Fail("argument `sample_key` is a constant: give it as a per-sample tensor input (a DataNode, "
         "e.g. fn.external_source of one int64 per sample); one key for every sample would draw "
         "every sample's plan alike");
  return spec.HasTensorArgument(kSampleKey);
}

OutputSpec ReadOutputSpec(const OpSpec &spec) {
  OutputSpec out;
  auto mean = spec.GetRepeatedArgument<float>("mean");
  auto std = spec.GetRepeatedArgument<float>("std");
  std::string layout = spec.GetArgument<std::string>("output_layout");
  out.type = spec.GetArgument<::dali::DALIDataType>("dtype");
  if (mean.empty() != std.empty())
    Fail(Msg("arguments `mean` and `std` go together: got ", mean.size(), " and ", std.size(),
             " values"));
  for (auto *arg : {&mean, &std}) {
    if (arg->size() == 1) arg->resize(3, arg->front());   // one value for every channel
    if (!arg->empty() && arg->size() != 3)
      Fail(Msg("argument `", arg == &mean ? "mean" : "std", "` has ", arg->size(),
               " values; expected 1 or 3 (per RGB channel, 0..255 scale)"));
  }
  for (float m : mean)
    if (!std::isfinite(m)) Fail(Msg("argument `mean` has entry ", m, ": every mean must be finite"));
  for (float s : std)
    if (!(s > 0 && std::isfinite(s)))
      Fail(Msg("argument `std` has entry ", s, ": every std must be finite and > 0"));
  if (layout != "HWC" && layout != "CHW")
    Fail(Msg("argument `output_layout`=\"", layout, "\" is invalid: use \"HWC\" or \"CHW\""));
  if (out.type != DALI_FLOAT && out.type != DALI_FLOAT16)
    Fail(Msg("argument `dtype`=", ::dali::TypeTable::GetTypeInfo(out.type).name(),
             " is invalid: use FLOAT or FLOAT16"));
  out.fused = !mean.empty() || layout == "CHW" || out.type != DALI_FLOAT;
  if (mean.empty()) {   // layout or type only: v - 0 and v * 1 are exact, the values stay 0..255
    mean.assign(3, 0.0f);
    std.assign(3, 1.0f);
  }
  out.norm = ipx_norm(mean.data(), std.data(), layout == "CHW");
  return out;
}

std::vector<std::pair<int, int>> CheckInputs(const Workspace &ws, const IpxConfig &cfg,
                                             bool uniform) {
  int n = ws.GetInputBatchSize(0);
  if (ws.GetInputBatchSize(1) != n)
    Fail(Msg("inputs `images` and `mixing` have different batch sizes: ", n, " vs ",
             ws.GetInputBatchSize(1)));
  for (int i = 0; i < 2; ++i) {
    auto type = ws.GetInputDataType(i);
    if (type != DALI_UINT8)
      Fail(Msg("input `", kInputNames[i], "` (every sample) has type ",
               ::dali::TypeTable::GetTypeInfo(type).name(),
               "; expected uint8 (HWC RGB on 0..255)"));
    auto layout = ws.GetInputLayout(i);
    if (!layout.empty() && layout != "HWC")
      Fail(Msg("input `", kInputNames[i], "` (every sample) has layout \"", layout.c_str(),
               "\"; expected \"HWC\" (interleaved RGB)"));
  }
  const auto &xs = ws.GetInputShape(0), &zs = ws.GetInputShape(1);
  std::vector<std::pair<int, int>> sizes(n);
  for (int s = 0; s < n; ++s) {
    for (int i = 0; i < 2; ++i) {
      auto shape = (i ? zs : xs)[s];
      if (shape.sample_dim() != 3)
        Fail(Msg("input `", kInputNames[i], "` sample ", s, " has shape ", ShapeText(shape),
                 "; expected 3 dimensions (H, W, 3)"));
      if (shape[2] != 3)
        Fail(Msg("input `", kInputNames[i], "` sample ", s, " has ", shape[2],
                 " channels (shape ", ShapeText(shape), "); expected 3 (RGB)"));
      if (shape[0] < 2 || shape[1] < 2)
        Fail(Msg("input `", kInputNames[i], "` sample ", s, " is ", shape[0], " x ", shape[1],
                 " pixels; images must be at least 2 x 2"));
    }
    if (xs[s] != zs[s])
      Fail(Msg("sample ", s, ": input `mixing` has shape ", ShapeText(zs[s]),
               " but `images` has shape ", ShapeText(xs[s]),
               "; images and mixing must have the same shape per sample (crop or resize first)"));
    sizes[s] = {static_cast<int>(xs[s][0]), static_cast<int>(xs[s][1])};
    if (uniform && sizes[s] != sizes[0])
      Fail(Msg("input `images` sample ", s, " has shape ", ShapeText(xs[s]), " but sample 0 has ",
               ShapeText(xs[0]), "; the GPU operator needs one size across the batch"));
    if (ipx_patch_sizes_for(cfg, sizes[s].first, sizes[s].second).empty())
      Fail(Msg("input `images` sample ", s, " is ", sizes[s].first, " x ", sizes[s].second,
               ": no entry of `patch_sizes` fits and `whole_image_patch` is False"));
  }
  return sizes;
}

void CheckSampleKeys(const Workspace &ws, int n) {
  const auto &keys = ws.ArgumentInput(kSampleKey);
  // DALI 2.4 refuses a mismatch before SetupImpl (external_source's batch size clash, then
  // OperatorBase); checked again because SampleKeys indexes the keys by sample.
  if (keys.num_samples() != n)
    Fail(Msg("argument `sample_key` has ", keys.num_samples(), " samples but input `images` has ",
             n, "; give one key per sample"));
  if (keys.type() != DALI_INT64)
    Fail(Msg("argument `sample_key` (every sample) has type ",
             ::dali::TypeTable::GetTypeInfo(keys.type()).name(),
             "; expected int64 (one key per sample)"));
  for (int s = 0; s < n; ++s)
    if (::dali::volume(keys.tensor_shape(s)) != 1)
      Fail(Msg("argument `sample_key` sample ", s, " has shape ", ShapeText(keys.tensor_shape(s)),
               "; expected one int64 per sample (shape () or (1,))"));
}

std::vector<DrawKey> SampleKeys(const Workspace &ws, bool keyed, uint64_t batch, int n) {
  std::vector<DrawKey> out(n);
  if (keyed) {
    const auto &keys = ws.ArgumentInput(kSampleKey);
    for (int s = 0; s < n; ++s)
      out[s] = {static_cast<uint64_t>(keys.tensor<int64_t>(s)[0]), ~uint64_t{0}};
  } else {
    for (int s = 0; s < n; ++s) out[s] = {batch, static_cast<uint64_t>(s)};
  }
  return out;
}

void DrawSample(const IpxConfig &cfg, int64_t seed, DrawKey key, int view, int h, int w,
                bool want_record, SamplePlan *out) {
  const IpxStream stream =
      ipx_stream(static_cast<uint64_t>(seed), key.a, key.b, static_cast<uint64_t>(view));
  IpxDraw draw;
  ipx_draw_sample(cfg, ipx_patch_sizes_for(cfg, h, w), h, w, stream, &draw);
  out->rows.resize(static_cast<size_t>(cfg.k) * cfg.table_steps());
  out->mixw.resize(1 + cfg.k);
  ipx_pack_sample(cfg, draw, h, w, out->rows.data(), out->mixw.data());
  if (want_record) {
    out->record.resize(ipx_plan_doubles(cfg));
    ipx_write_plan(cfg, draw, out->record.data());
  }
}

namespace {

// float -> output element, as crop_mirror_normalize converts its float result.
template <typename T>
struct ToOutput {
  T operator()(float v) const { return ::dali::ConvertSat<T>(v); }
};

// Image output o, sample s, as T.
template <typename T>
T *OutputOf(Workspace &ws, int o, int s) {
  return ws.Output<CPUBackend>(o).mutable_tensor<T>(s);
}

// One sample's image output, normalised: the clean image when k == 0 (mixw = {0}), else the final mix
// of the chain images `finals`.
void WriteNormalized(const OutputSpec &out, const unsigned char *x, const unsigned char *finals,
                     const float *mixw, int k, int h, int w, void *dst) {
  if (out.type == DALI_FLOAT16) {
    ipx_mix_normalized(x, finals, mixw, k, h, w, out.norm, ToOutput<::dali::float16>(),
                       static_cast<::dali::float16 *>(dst));
  } else {
    ipx_mix_normalized_f32(x, finals, mixw, k, h, w, out.norm, static_cast<float *>(dst));
  }
}

}  // namespace

template <>
void IpmixOp<CPUBackend>::RunImpl(Workspace &ws) {
  const auto &x = ws.Input<CPUBackend>(0);
  const auto &z = ws.Input<CPUBackend>(1);
  auto &pool = ws.GetThreadPool();
  const int n = x.num_samples(), k = cfg_.k, tt = cfg_.table_steps();
  const std::vector<DrawKey> keys = SampleKeys(ws, keyed_, batch_++, n);
  for (int s = 0; s < n; ++s) {
    const int h = sizes_[s].first, w = sizes_[s].second;
    const int64_t hw3 = static_cast<int64_t>(h) * w * 3;
    for (int v = 0; v < NumViews(); ++v) {
      pool.AddWork([&, s, v, h, w](int) {
        SamplePlan plan;
        DrawSample(cfg_, seed_, keys[s], v, h, w, return_plan_, &plan);
        thread_local std::vector<unsigned char> scratch;
        scratch.resize(ipx_sparse_scratch_bytes(k, h, w));
        const uint8_t *xs = x.tensor<uint8_t>(s), *zs = z.tensor<uint8_t>(s);
        if (out_.fused) {
          const unsigned char *finals =
              ipx_run_chains_sparse(plan.rows.data(), k, tt, xs, zs, h, w, scratch.data());
          WriteNormalized(out_, xs, finals, plan.mixw.data(), k, h, w,
                          ws.Output<CPUBackend>(ViewOutput(v)).raw_mutable_tensor(s));
        } else {
          ipx_run_sample_sparse(plan.rows.data(), plan.mixw.data(), k, tt, xs, zs, h, w,
                                scratch.data(), OutputOf<float>(ws, ViewOutput(v), s));
        }
        if (return_plan_) {
          auto &rec = ws.Output<CPUBackend>(PlanOutput(v));
          std::copy(plan.record.begin(), plan.record.end(), rec.mutable_tensor<double>(s));
          uint32_t *table = ws.Output<CPUBackend>(TableOutput(v)).mutable_tensor<uint32_t>(s);
          memcpy(table, plan.rows.data(), plan.rows.size() * sizeof(IpxStep));
          memcpy(table + plan.rows.size() * (sizeof(IpxStep) / 4), plan.mixw.data(),
                 plan.mixw.size() * sizeof(float));
        }
      }, hw3 * k * tt);
    }
    if (jsd_) {
      pool.AddWork([&, s, h, w, hw3](int) {
        const uint8_t *src = x.tensor<uint8_t>(s);
        if (out_.fused) {
          const float no_mix[1] = {0.0f};   // (1 - 0) * x: the image itself
          WriteNormalized(out_, src, src, no_mix, 0, h, w,
                          ws.Output<CPUBackend>(0).raw_mutable_tensor(s));
          return;
        }
        float *dst = OutputOf<float>(ws, 0, s);
        for (int64_t i = 0; i < hw3; ++i) dst[i] = src[i];
      }, hw3);
    }
  }
  pool.RunAll();
  const ::dali::TensorLayout layout = out_.norm.chw ? ::dali::TensorLayout("CHW")
                                                    : ::dali::TensorLayout("HWC");
  for (int o = 0; o < NumImageOutputs(); ++o) ws.Output<CPUBackend>(o).SetLayout(layout);
}

}  // namespace dali_ipmix

DALI_REGISTER_OPERATOR(IpmixNative, ::dali_ipmix::IpmixOp<::dali::CPUBackend>, ::dali::CPU);

DALI_SCHEMA(IpmixNative)
    .DocStr(R"(IPMix (NeurIPS 2023) augmentation of HWC uint8 RGB images with per-sample mixing pictures;
AugMix and PixMix are settings of its arguments (dali_ipmix.native.operator_args of their configs).

Outputs HWC float32 on 0..255: one view, or with ``jsd`` (clean, view1, view2). ``mean`` and ``std``
(and ``output_layout``, ``dtype``) write every image output normalised instead, in the final mix,
as fn.crop_mirror_normalize of the default output would on the same device. With ``return_plan``
each view adds two debug outputs: its plan record (float64) and its plan-table rows (uint32); see
dali_ipmix.native. Each sample and view draws its plan from ``seed``, the batch counter and the
sample's index in the batch; with ``sample_key`` (one int64 per sample, an argument input) from
``seed`` and that key instead, so that a sample's views survive reshuffling and rebatching. Prefer
``dali_ipmix.fn.ipmix(..., backend="native")``, which fills the arguments from an IPMixConfig.)")
    .NumInput(2)
    .InputDox(0, "images", "TensorList of uint8, layout HWC", "images to augment, RGB, H, W >= 2")
    .InputDox(1, "mixing", "TensorList of uint8, layout HWC",
              "one mixing picture per sample, the size of its image")
    .OutputFn([](const ::dali::OpSpec &spec) {
      int views = spec.GetArgument<bool>("jsd") ? 2 : 1;
      return (views == 2 ? 3 : 1) + (spec.GetArgument<bool>("return_plan") ? 2 * views : 0);
    })
    .AddOptionalArg("k", "chains mixed per augmented image (1..32)", 3)
    .AddOptionalArg("t", "at most this many operations per chain (0..32)", 3)
    .AddOptionalArg("beta", "pixel-level mixing severity, the Beta parameter (finite, > 0; float32)", 4.0f)
    .AddOptionalArg("severity", "image-level op severity, 1..10 (level ~ U(0.1, severity); float32)", 1.0f)
    .AddOptionalArg("patch_sizes", "candidate patch edges in pixels (>= 2)",
                                      std::vector<int>{4, 8, 16, 32, 64})
    .AddOptionalArg("whole_image_patch", "also offer the image's shorter side as a patch size", true)
    .AddOptionalArg("source_from_image",
                    "a patch may come (prob. 1/2) from an augmented copy of the image", true)
    .AddOptionalArg(
        "op_codes", "image-level ops drawn from, as codes of dali_ipmix.laws.OP_CODES",
        std::vector<int>{3, 1, 9, 2, 10, 11, 12, 13, 14, 0})
    .AddOptionalArg("min_ops", "at least this many operations per chain (0..t; AugMix: 1)", 0)
    .AddOptionalArg("chain_kinds",
                    "chain kinds drawn: 0 image or patch level (IPMix), 1 image level only (AugMix), "
                    "2 patch level only (PixMix)", 0)
    .AddOptionalArg("pixel_ops",
                    "pixel-level ops drawn: the first this many of add, multiply, random_pixels, "
                    "random_elems (1..4; PixMix: 2)", 4)
    .AddOptionalArg("whole_image_only", "every patch is the whole image (PixMix)", false)
    .AddOptionalArg("final_blend",
                    "blend the chains' mix with the image by m ~ Beta(1, 1); false: m = 1 (PixMix)", true)
    .AddOptionalArg("chain_start",
                    "a chain starts (prob. 1/2) from one fresh image-level op on the image (PixMix)",
                    false)
    .AddOptionalArg("jsd", "output (clean, view1, view2) instead of one view", false)
    .AddOptionalArg("return_plan", "add each view's plan record and table rows as outputs", false)
    .AddOptionalArg("mean",
                    "write every image output normalised, (v - mean) / std per channel (1 or 3 "
                    "values, 0..255 scale; with `std`), as fn.crop_mirror_normalize computes it",
                    std::vector<float>{})
    .AddOptionalArg("std", "per-channel standard deviation of the normalisation (1 or 3 values "
                    "finite and > 0, 0..255 scale; with `mean`)", std::vector<float>{})
    .AddOptionalArg("output_layout", "layout of the image outputs, \"HWC\" or \"CHW\"",
                    std::string("HWC"))
    .AddOptionalTypeArg("dtype", "type of the image outputs, FLOAT or FLOAT16", DALI_FLOAT)
    .AddOptionalArg<int64_t>(
        "sample_key",
        "per-sample int64 key (argument input, one element per sample, e.g. the IPMix key of keys.SampleDraws for (seed, epoch, position)): "
        "each sample's draws then depend on `seed`, its key and the view only, not on its batch or "
        "its place in it, so an image with the same key gets the same views however it is batched. "
        "Without it the draws follow the batch counter and the sample's index in the batch",
        nullptr, true)
    .AddRandomSeedArg();
