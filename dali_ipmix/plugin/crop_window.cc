// IpmixCropWindow: the window of a random-resized crop from each image's decoded shape and its keyed
// parameters (dali_ipmix.presets.RandomResizedCrop: `law` draws them on the host, `window` is the
// rule this operator follows in the same float64 operations, so both give the same pixels).
//
// Inputs: shape (int64 (H, W[, C]) per sample, as fn.peek_image_shape gives it) and params (float64:
// `attempts` area fractions, `attempts` aspects, then the anchor's uniforms y and x). Outputs: anchor
// (x, y) and shape (w, h), int32, for decoders.image_slice / slice with axis_names "WH". One DALI
// node instead of the ~30 arithmetic nodes the rule takes in DALI's own ops (docs/performance.md has
// the measured difference).
#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "dali/pipeline/operator/operator.h"

namespace dali_ipmix {

namespace {

[[noreturn]] void WindowFail(const std::string &what) {
  throw std::runtime_error("ipmix_crop_window: " + what);
}

}  // namespace

class CropWindowOp : public ::dali::Operator<::dali::CPUBackend> {
 public:
  explicit CropWindowOp(const ::dali::OpSpec &spec)
      : ::dali::Operator<::dali::CPUBackend>(spec),
        aspect_min_(spec.GetArgument<float>("aspect_min")),
        aspect_max_(spec.GetArgument<float>("aspect_max")) {
    if (!(aspect_min_ > 0 && aspect_min_ <= aspect_max_)) {
      std::ostringstream ss;
      ss << "arguments `aspect_min`=" << aspect_min_ << ", `aspect_max`=" << aspect_max_
         << " are invalid: need 0 < aspect_min <= aspect_max";
      WindowFail(ss.str());
    }
  }

 protected:
  bool SetupImpl(std::vector<::dali::OutputDesc> &output_desc, const ::dali::Workspace &ws) override {
    const auto &shapes = ws.Input<::dali::CPUBackend>(0);
    const auto &params = ws.Input<::dali::CPUBackend>(1);
    const int n = shapes.num_samples();
    if (params.num_samples() != n) WindowFail("inputs `shape` and `params` have different batch sizes");
    if (shapes.type() != DALI_INT64) WindowFail("input `shape` must be int64 (fn.peek_image_shape)");
    if (params.type() != DALI_FLOAT64) WindowFail("input `params` must be float64 (RandomResizedCrop.law)");
    for (int s = 0; s < n; ++s) {
      auto len = ::dali::volume(params.tensor_shape(s));
      if (len < 4 || len % 2) {
        std::ostringstream ss;
        ss << "input `params` sample " << s << " has " << len
           << " values; expected 2 * attempts + 2 (attempts >= 1)";
        WindowFail(ss.str());
      }
      if (::dali::volume(shapes.tensor_shape(s)) < 2) {
        std::ostringstream ss;
        ss << "input `shape` sample " << s << " has fewer than 2 values; expected (H, W[, C])";
        WindowFail(ss.str());
      }
    }
    auto pair = ::dali::uniform_list_shape(n, ::dali::TensorShape<1>{2});
    output_desc = {{pair, DALI_INT32}, {pair, DALI_INT32}};
    return true;
  }

  void RunImpl(::dali::Workspace &ws) override {
    const auto &shapes = ws.Input<::dali::CPUBackend>(0);
    const auto &params = ws.Input<::dali::CPUBackend>(1);
    auto &anchor = ws.Output<::dali::CPUBackend>(0);
    auto &size = ws.Output<::dali::CPUBackend>(1);
    for (int s = 0; s < shapes.num_samples(); ++s) {
      const int64_t *hw = shapes.tensor<int64_t>(s);
      const double *p = params.tensor<double>(s);
      const int a = static_cast<int>((::dali::volume(params.tensor_shape(s)) - 2) / 2);
      int32_t *xy = anchor.mutable_tensor<int32_t>(s), *wh = size.mutable_tensor<int32_t>(s);
      Window(static_cast<double>(hw[0]), static_cast<double>(hw[1]), p, a, xy, wh);
    }
  }

 private:
  // RandomResizedCrop.window, operation for operation.
  void Window(double height, double width, const double *p, int a, int32_t *xy, int32_t *wh) const {
    for (int i = 0; i < a; ++i) {
      const double target = height * width * p[i], ratio = p[a + i];
      const double w = std::floor(std::sqrt(target * ratio) + 0.5);
      const double h = std::floor(std::sqrt(target / ratio) + 0.5);
      if (w >= 1 && w <= width && h >= 1 && h <= height) {
        xy[0] = static_cast<int32_t>(std::floor(p[2 * a + 1] * (width - w + 1)));
        xy[1] = static_cast<int32_t>(std::floor(p[2 * a] * (height - h + 1)));
        wh[0] = static_cast<int32_t>(w);
        wh[1] = static_cast<int32_t>(h);
        return;
      }
    }
    const double w = std::fmin(width, std::floor(height * static_cast<double>(aspect_max_) + 0.5));
    const double h = std::fmin(height, std::floor(width / static_cast<double>(aspect_min_) + 0.5));
    xy[0] = static_cast<int32_t>(std::floor((width - w) * 0.5));
    xy[1] = static_cast<int32_t>(std::floor((height - h) * 0.5));
    wh[0] = static_cast<int32_t>(w);
    wh[1] = static_cast<int32_t>(h);
  }

  float aspect_min_, aspect_max_;
};

}  // namespace dali_ipmix

DALI_REGISTER_OPERATOR(IpmixCropWindow, ::dali_ipmix::CropWindowOp, ::dali::CPU);

DALI_SCHEMA(IpmixCropWindow)
    .DocStr(R"(The window (anchor (x, y), shape (w, h), int32) of a random-resized crop of each image from
its decoded shape and its keyed parameters; dali_ipmix.presets.RandomResizedCrop's rule.)")
    .NumInput(2)
    .InputDox(0, "shape", "TensorList of int64", "decoded (H, W[, C]) per sample (fn.peek_image_shape)")
    .InputDox(1, "params", "TensorList of float64",
              "attempts area fractions, attempts aspects (w / h), anchor uniforms y, x")
    .NumOutput(2)
    .AddOptionalArg("aspect_min", "smallest aspect (w / h) of the fallback crop (float32)", 0.75f)
    .AddOptionalArg("aspect_max", "largest aspect (w / h) of the fallback crop (float32)", 4.0f / 3.0f);
