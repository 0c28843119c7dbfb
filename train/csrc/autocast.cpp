// The one libtorch call tch does not expose: choosing bf16 (instead of fp16) as the CUDA autocast
// dtype. bf16 has fp32's exponent range, so training needs no loss scaling.
#include <ATen/autocast_mode.h>

extern "C" void d2ae_set_cuda_autocast_bf16() {
  at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
}
