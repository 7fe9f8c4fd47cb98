// Fused multi-step integrate-and-fire kernels (IF / LIF / ATIF-u / ATIF-nu) for CPU.
//
// One pass over time forward and one backward. Per element and step t:
//     h_t = a v_{t-1} + b x_t                   (IF: a = b = 1; LIF: a = decay, b = 1 or 1 - decay)
//     q_t = h_t - th_t,   z_t = 1[q_t >= 0]
//     soft reset: v_t = h_t - th_t z_t          hard reset: v_t = h_t (1 - z_t) + v_reset z_t
//     out_t = z_t * s      (s = spike value: the threshold for ATIF-u, p_1 for ATIF-nu, or 1)
// Nothing is stored for backward besides the input x and v_0, which autograd holds anyway: the
// backward pass re-runs the recurrence for one chunk of neurons over all steps into a buffer that
// stays in L2, then walks it backwards. The arithmetic is the forward's (same function), so h and
// z are bit-identical; recomputing costs a few vector operations per element, storing h would
// cost a write and a read of a full [T, N] tensor through DRAM.
//
// Backward (gv = dL/dv_t carried from t+1, go = dL/dout_t, sg = surrogate'(q_t)):
//     gz = go s + [not detached] (soft: -gv th_t,  hard: gv (v_reset - h_t))
//     gh = gz sg + (soft: gv,  hard: gv (1 - z_t))
//     dL/dx_t = b gh,   dL/dv_{t-1} = a gh
//     dL/dth_t += -gz sg + (soft: -gv z_t),    dL/ds += go z_t
//
// Must be compiled with -ffp-contract=off: a fused multiply-add in h = a v + b x would round
// differently from PyTorch's separate mul and add and change spikes at the threshold.

#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

namespace {

constexpr int64_t kChunk = 4096;  // elements per chunk: long enough runs for the prefetcher
constexpr int64_t kPrefetchAhead = 1024;  // elements; measured best of 512 / 1024 / 2048

enum SurrogateKind : int64_t { kSigmoid = 0, kTriangle = 1, kAtan = 2, kRectangle = 3 };

// exp(x) for x <= 0, written with plain arithmetic so that the compiler vectorizes it:
// x = n ln2 + r with |r| <= ln2/2, exp(r) by a degree-7 Taylor polynomial, 2^n via the exponent.
// The file is compiled without automatic FMA contraction (for the forward recurrence, see the
// top); the polynomial asks for fused multiply-adds explicitly, halving its instruction count.
template <typename T>
inline T exp_nonpositive(T x) {
  if constexpr (std::is_same_v<T, double>) {
    return std::exp(x);
  } else {
    x = x < -87.0f ? -87.0f : x;
    const float kLog2e = 1.44269504088896341f;
    const float kRound = 12582912.0f;  // 1.5 * 2^23: adding and subtracting it rounds to integer
    float n = (x * kLog2e + kRound) - kRound;
    float r = __builtin_fmaf(n, -0.693145751953125f, x);  // ln2 split in a high part exact ...
    r = __builtin_fmaf(n, -1.428606765330187e-06f, r);    // ... in float and the remainder
    float p = 1.0f / 5040.0f;
    p = __builtin_fmaf(p, r, 1.0f / 720.0f);
    p = __builtin_fmaf(p, r, 1.0f / 120.0f);
    p = __builtin_fmaf(p, r, 1.0f / 24.0f);
    p = __builtin_fmaf(p, r, 1.0f / 6.0f);
    p = __builtin_fmaf(p, r, 0.5f);
    p = __builtin_fmaf(p, r, 1.0f);
    p = __builtin_fmaf(p, r, 1.0f);
    int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
    return p * __builtin_bit_cast(float, bits);
  }
}

struct SurrogateConsts {
  // Constants rounded to the tensor dtype the way PyTorch rounds Python-float scalars.
  double alpha, c1, c2;
};

template <typename T, int64_t KIND>
inline T surrogate_grad(T q, T alpha, T c1, T c2) {
  if constexpr (KIND == kSigmoid) {
    // alpha s (1 - s) = alpha e / (1 + e)^2 with e = exp(-alpha |q|): no cancellation.
    T e = exp_nonpositive<T>(-alpha * (q < T(0) ? -q : q));
    T d = T(1) + e;
    return alpha * e / (d * d);
  } else if constexpr (KIND == kTriangle) {
    // c1 = 1/alpha (half-width g), c2 = g^2.
    T m = c1 - (q < T(0) ? -q : q);
    return (m > T(0) ? m : T(0)) / c2;
  } else if constexpr (KIND == kAtan) {
    // c1 = pi/2 alpha, c2 = alpha/2.
    T u = c1 * q;
    return c2 / (T(1) + u * u);
  } else {
    // c1 = half-width 1/(2 alpha).
    return (q < T(0) ? -q : q) < c1 ? alpha : T(0);
  }
}

// Element n = sample * P + p of a step; its channel is (p / S) % C.
struct Layout {
  int64_t N, P, S, C;
};

// Fill dst[0..len) with src[(p / S) % C] for p = p0 .. p0 + len (one value per element).
template <typename T>
inline void expand_channels(T* dst, const T* src, int64_t p0, int64_t len, const Layout& L) {
  if (L.C == 1) {
    std::fill(dst, dst + len, src[0]);
    return;
  }
  int64_t i = 0;
  while (i < len) {
    int64_t p = p0 + i;
    int64_t seg_end = std::min(len, i + (L.S - p % L.S));
    T value = src[(p / L.S) % L.C];
    std::fill(dst + i, dst + seg_end, value);
    i = seg_end;
  }
}

// Sum of vals[0..n) in double with 8 independent partial sums (vectorizes without reassociation).
template <typename T>
inline double sum_as_double(const T* vals, int64_t n) {
  double part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int k = 0; k < 8; ++k) part[k] += static_cast<double>(vals[j + k]);
  double s = 0.0;
  for (; j < n; ++j) s += static_cast<double>(vals[j]);
  for (int k = 0; k < 8; ++k) s += part[k];
  return s;
}

// acc[c] += sum of vals over each channel segment of p0 .. p0 + len.
template <typename T>
inline void accumulate_channels(double* acc, const T* vals, int64_t p0, int64_t len,
                                const Layout& L) {
  if (L.C == 1) {
    acc[0] += sum_as_double(vals, len);
    return;
  }
  int64_t i = 0;
  while (i < len) {
    int64_t p = p0 + i;
    int64_t seg_end = std::min(len, i + (L.S - p % L.S));
    acc[(p / L.S) % L.C] += sum_as_double(vals + i, seg_end - i);
    i = seg_end;
  }
}

// Calls fn(first element, offset within its sample, length, thread id) for every chunk of at
// most `chunk` elements. Chunks are handed out dynamically: on a shared machine a descheduled
// thread then delays only the chunks it holds, not a static half of the tensor.
template <typename F>
inline void for_each_chunk(const Layout& L, int64_t chunk, F&& fn) {
  const int64_t samples = L.N / L.P;
  const int64_t per_sample = (L.P + chunk - 1) / chunk;
  const int64_t units = samples * per_sample;
  auto body = [&](int64_t u, int tid) {
    int64_t sample = u / per_sample;
    int64_t p0 = (u % per_sample) * chunk;
    int64_t len = std::min(chunk, L.P - p0);
    fn(sample * L.P + p0, p0, len, tid);
  };
  const int64_t threads = at::in_parallel_region() ? 1 : std::min<int64_t>(at::get_num_threads(),
                                                                           units / 4);
  if (threads <= 1) {
    for (int64_t u = 0; u < units; ++u) body(u, 0);
    return;
  }
#pragma omp parallel for schedule(dynamic, 4) num_threads(threads)
  for (int64_t u = 0; u < units; ++u) body(u, omp_get_thread_num());
}

// One step of the recurrence for `len` elements: v <- reset(h), h_t and z_t handed to `emit`.
// The forward pass and the backward recomputation both call this, so they round identically.
template <typename T, bool HARD, typename Emit>
inline void integrate_fire_step(T* __restrict__ v, const T* __restrict__ xt,
                                const T* __restrict__ thr, T a, T b, T v_reset, int64_t len,
                                Emit&& emit) {
  // Each step of a chunk is a short run in a different part of x (steps are N elements apart);
  // the hardware prefetcher stops at page boundaries, so ask for the whole run up front.
  for (int64_t i = 0; i < len; i += 64 / sizeof(T)) __builtin_prefetch(xt + i + kPrefetchAhead);
  for (int64_t i = 0; i < len; ++i) {
    T h = a * v[i] + b * xt[i];
    T z = static_cast<T>((h - thr[i]) >= T(0));
    if constexpr (HARD) {
      v[i] = h * (T(1) - z) + v_reset * z;
    } else {
      v[i] = h - thr[i] * z;
    }
    emit(i, h, z);
  }
}

// The flags are template parameters so that every inner loop is branch-free and vectorizes.
template <typename T, bool HARD, bool SCALED>
void forward_impl(const T* x, const T* v0, const T* th, int64_t th_steps, const T* spike_value,
                  T a, T b, T v_reset, int64_t steps, const Layout& L, T* out, T* v_final) {
  for_each_chunk(L, kChunk, [&](int64_t n0, int64_t p0, int64_t len, int tid) {
    alignas(64) T v[kChunk];
    alignas(64) T thr[kChunk];
    alignas(64) T sval[kChunk];
    std::copy(v0 + n0, v0 + n0 + len, v);
    if (SCALED) expand_channels(sval, spike_value, p0, len, L);
    for (int64_t t = 0; t < steps; ++t) {
      if (t == 0 || th_steps > 1) expand_channels(thr, th + (th_steps > 1 ? t * L.C : 0), p0, len, L);
      T* __restrict__ ot = out + t * L.N + n0;
      integrate_fire_step<T, HARD>(v, x + t * L.N + n0, thr, a, b, v_reset, len,
                                   [&](int64_t i, T, T z) {
                                     if constexpr (SCALED) {
                                       ot[i] = z * sval[i];
                                     } else {
                                       ot[i] = z;
                                     }
                                   });
    }
    std::copy(v, v + len, v_final + n0);
  });
}

// Elements per backward chunk: the recomputed h of all steps ([steps, chunk]) should stay in L2.
inline int64_t backward_chunk(int64_t steps, int64_t element_bytes) {
  constexpr int64_t kBufferBytes = 256 * 1024;
  int64_t chunk = kBufferBytes / (steps * element_bytes);
  chunk = std::max<int64_t>(256, std::min<int64_t>(kChunk, chunk));
  return chunk / 64 * 64;
}

template <typename T, int64_t KIND, bool HARD, bool SCALED, bool DETACH>
void backward_impl(const T* grad_out, const T* grad_v_final, const T* x, const T* v0, const T* th,
                   int64_t th_steps, const T* spike_value, T a, T b, T v_reset,
                   const SurrogateConsts& sc, int64_t steps, const Layout& L, T* grad_x,
                   T* grad_v0, double* grad_th_acc, double* grad_sv_acc, int64_t acc_stride) {
  const T alpha = static_cast<T>(sc.alpha), c1 = static_cast<T>(sc.c1), c2 = static_cast<T>(sc.c2);
  const int64_t chunk = backward_chunk(steps, sizeof(T));
  // One [steps, chunk] buffer per thread for the recomputed pre-spike membrane h.
  std::unique_ptr<T[]> h_buffers(new T[at::get_num_threads() * steps * chunk]);
  for_each_chunk(L, chunk, [&](int64_t n0, int64_t p0, int64_t len, int tid) {
    T* h_saved = h_buffers.get() + tid * steps * chunk;
    double* my_th = grad_th_acc ? grad_th_acc + tid * acc_stride : nullptr;
    double* my_sv = grad_sv_acc ? grad_sv_acc + tid * L.C : nullptr;
    alignas(64) T gv[kChunk];
    alignas(64) T thr[kChunk];
    alignas(64) T sval[kChunk];
    alignas(64) T dth[kChunk];
    alignas(64) T dsv[kChunk];
    alignas(64) T zeros[kChunk];
    // Per-element sums over time of the threshold / spike-value gradients (reduced per channel
    // once per chunk instead of once per step).
    alignas(64) double dth_time[kChunk];
    alignas(64) double dsv_time[kChunk];

    // Recompute h_t for this chunk (gv serves as the membrane buffer until the backward walk).
    std::copy(v0 + n0, v0 + n0 + len, gv);
    for (int64_t t = 0; t < steps; ++t) {
      if (t == 0 || th_steps > 1) expand_channels(thr, th + (th_steps > 1 ? t * L.C : 0), p0, len, L);
      T* __restrict__ ht = h_saved + t * chunk;
      integrate_fire_step<T, HARD>(gv, x + t * L.N + n0, thr, a, b, v_reset, len,
                                   [&](int64_t i, T h, T) { ht[i] = h; });
    }

    const bool per_step_th = th_steps > 1;
    if (my_th && !per_step_th) std::fill(dth_time, dth_time + len, 0.0);
    if (my_sv) std::fill(dsv_time, dsv_time + len, 0.0);
    if (grad_v_final) {
      std::copy(grad_v_final + n0, grad_v_final + n0 + len, gv);
    } else {
      std::fill(gv, gv + len, T(0));
    }
    if (!grad_out) std::fill(zeros, zeros + len, T(0));
    if (SCALED) expand_channels(sval, spike_value, p0, len, L);
    for (int64_t t = steps - 1; t >= 0; --t) {
      if (per_step_th) expand_channels(thr, th + t * L.C, p0, len, L);
      const T* __restrict__ ht = h_saved + t * chunk;
      const T* __restrict__ got = grad_out ? grad_out + t * L.N + n0 : zeros;
      T* __restrict__ gxt = grad_x + t * L.N + n0;
      for (int64_t i = 0; i < len; ++i) {
        T h = ht[i];
        T q = h - thr[i];
        T z = static_cast<T>(q >= T(0));
        T sg = surrogate_grad<T, KIND>(q, alpha, c1, c2);
        T go = got[i];
        T g = gv[i];
        T gz = SCALED ? go * sval[i] : go;
        T gh;
        if constexpr (HARD) {
          if constexpr (!DETACH) gz = gz + g * (v_reset - h);
          gh = gz * sg + g * (T(1) - z);
          dth[i] = -gz * sg;
        } else {
          if constexpr (!DETACH) gz = gz - g * thr[i];
          gh = gz * sg + g;
          dth[i] = -gz * sg - g * z;
        }
        dsv[i] = go * z;
        gxt[i] = b * gh;
        gv[i] = a * gh;
      }
      if (my_th) {
        if (per_step_th) {
          accumulate_channels(my_th + t * L.C, dth, p0, len, L);
        } else {
          for (int64_t i = 0; i < len; ++i) dth_time[i] += static_cast<double>(dth[i]);
        }
      }
      if (my_sv) {
        for (int64_t i = 0; i < len; ++i) dsv_time[i] += static_cast<double>(dsv[i]);
      }
    }
    if (my_th && !per_step_th) accumulate_channels(my_th, dth_time, p0, len, L);
    if (my_sv) accumulate_channels(my_sv, dsv_time, p0, len, L);
    if (grad_v0) std::copy(gv, gv + len, grad_v0 + n0);
  });
}

// Calls fn(std::integral_constant<bool, flag>) so that a runtime flag picks a template instance.
template <typename F>
inline void dispatch_bool(bool flag, F&& fn) {
  if (flag) {
    fn(std::true_type{});
  } else {
    fn(std::false_type{});
  }
}

Layout make_layout(const torch::Tensor& x, int64_t per_sample, int64_t inner, int64_t channels) {
  Layout L;
  L.N = x.numel() / x.size(0);
  L.P = per_sample;
  L.S = inner;
  L.C = channels;
  TORCH_CHECK(L.P > 0 && L.N % L.P == 0, "per-sample size must divide the step size");
  TORCH_CHECK(L.S > 0 && L.C > 0, "bad channel layout");
  return L;
}

std::vector<torch::Tensor> fused_forward(torch::Tensor x, torch::Tensor v0, torch::Tensor th,
                                         c10::optional<torch::Tensor> spike_value, double a,
                                         double b, bool hard, double v_reset, int64_t per_sample,
                                         int64_t inner) {
  // x may be contiguous or channels-last: the kernel walks memory order, the caller checked that
  // time is the outermost dense dimension and that v0 has the layout of one step.
  TORCH_CHECK(x.is_non_overlapping_and_dense() && x.stride(0) == x.numel() / x.size(0),
              "time must be the outermost dense dimension");
  TORCH_CHECK(v0.is_non_overlapping_and_dense() && th.is_contiguous(), "dense inputs");
  const int64_t steps = x.size(0);
  const int64_t channels = th.size(1);
  const int64_t th_steps = th.size(0);
  TORCH_CHECK(th_steps == 1 || th_steps == steps, "threshold must have 1 or T rows");
  Layout L = make_layout(x, per_sample, inner, channels);
  auto out = torch::empty_like(x);
  auto v_final = torch::empty_like(v0);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "spikequant_fused_forward", [&] {
    const scalar_t* sv = spike_value.has_value() ? spike_value->data_ptr<scalar_t>() : nullptr;
    dispatch_bool(hard, [&](auto hard_c) {
      dispatch_bool(sv != nullptr, [&](auto scaled_c) {
        forward_impl<scalar_t, decltype(hard_c)::value, decltype(scaled_c)::value>(
            x.data_ptr<scalar_t>(), v0.data_ptr<scalar_t>(), th.data_ptr<scalar_t>(), th_steps,
            sv, static_cast<scalar_t>(a), static_cast<scalar_t>(b),
            static_cast<scalar_t>(v_reset), steps, L, out.data_ptr<scalar_t>(),
            v_final.data_ptr<scalar_t>());
      });
    });
  });
  return {out, v_final};
}

std::vector<torch::Tensor> fused_backward(c10::optional<torch::Tensor> grad_out,
                                          c10::optional<torch::Tensor> grad_v_final,
                                          torch::Tensor x, torch::Tensor v0, torch::Tensor th,
                                          c10::optional<torch::Tensor> spike_value, double a,
                                          double b, bool hard, double v_reset, bool detach,
                                          int64_t kind, double alpha, double c1, double c2,
                                          int64_t per_sample, int64_t inner, bool need_v0,
                                          bool need_th, bool need_sv) {
  TORCH_CHECK(x.is_non_overlapping_and_dense() && x.stride(0) == x.numel() / x.size(0),
              "time must be the outermost dense dimension");
  TORCH_CHECK(th.is_contiguous(), "contiguous thresholds");
  TORCH_CHECK(v0.strides() == x.strides().slice(1), "v0 layout");
  if (grad_out.has_value()) TORCH_CHECK(grad_out->strides() == x.strides(), "grad layout");
  const int64_t steps = x.size(0);
  const int64_t channels = th.size(1);
  const int64_t th_steps = th.size(0);
  Layout L = make_layout(x, per_sample, inner, channels);
  auto grad_x = torch::empty_like(x);
  torch::Tensor grad_v0 =
      need_v0 ? torch::empty_like(v0)
              : torch::Tensor();
  const int64_t threads = at::get_num_threads();
  const int64_t acc_stride = th_steps * channels;
  std::vector<double> th_acc(need_th ? threads * acc_stride : 0, 0.0);
  std::vector<double> sv_acc(need_sv ? threads * channels : 0, 0.0);
  SurrogateConsts sc{alpha, c1, c2};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "spikequant_fused_backward", [&] {
    const scalar_t* go = grad_out.has_value() ? grad_out->data_ptr<scalar_t>() : nullptr;
    const scalar_t* gvf = grad_v_final.has_value() ? grad_v_final->data_ptr<scalar_t>() : nullptr;
    const scalar_t* sv = spike_value.has_value() ? spike_value->data_ptr<scalar_t>() : nullptr;
    auto run = [&](auto kind_tag) {
      constexpr int64_t K = decltype(kind_tag)::value;
      dispatch_bool(hard, [&](auto hard_c) {
        dispatch_bool(sv != nullptr, [&](auto scaled_c) {
          dispatch_bool(detach, [&](auto detach_c) {
            backward_impl<scalar_t, K, decltype(hard_c)::value, decltype(scaled_c)::value,
                          decltype(detach_c)::value>(
                go, gvf, x.data_ptr<scalar_t>(), v0.data_ptr<scalar_t>(), th.data_ptr<scalar_t>(), th_steps, sv,
                static_cast<scalar_t>(a), static_cast<scalar_t>(b),
                static_cast<scalar_t>(v_reset), sc, steps, L, grad_x.data_ptr<scalar_t>(),
                need_v0 ? grad_v0.data_ptr<scalar_t>() : nullptr,
                need_th ? th_acc.data() : nullptr, need_sv ? sv_acc.data() : nullptr, acc_stride);
          });
        });
      });
    };
    switch (kind) {
      case kSigmoid: run(std::integral_constant<int64_t, kSigmoid>{}); break;
      case kTriangle: run(std::integral_constant<int64_t, kTriangle>{}); break;
      case kAtan: run(std::integral_constant<int64_t, kAtan>{}); break;
      case kRectangle: run(std::integral_constant<int64_t, kRectangle>{}); break;
      default: TORCH_CHECK(false, "unknown surrogate kind ", kind);
    }
  });
  auto reduce = [&](const std::vector<double>& acc, int64_t width) {
    auto total = torch::zeros({width}, torch::dtype(torch::kFloat64));
    double* dst = total.data_ptr<double>();
    for (int64_t t = 0; t < threads; ++t)
      for (int64_t j = 0; j < width; ++j) dst[j] += acc[t * width + j];
    return total.to(x.scalar_type());
  };
  torch::Tensor grad_th = need_th ? reduce(th_acc, acc_stride).view({th_steps, channels})
                                  : torch::Tensor();
  torch::Tensor grad_sv = need_sv ? reduce(sv_acc, channels) : torch::Tensor();
  return {grad_x, grad_v0, grad_th, grad_sv};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &fused_forward, "fused multi-step integrate-and-fire forward");
  m.def("backward", &fused_backward, "fused multi-step integrate-and-fire backward");
}
