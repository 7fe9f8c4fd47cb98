"""Fused C++ causal-set search for CPU (optional; the pure-torch solver is the reference).

The torch path materialises ``[R, N, M]`` tensors (sorted weights, two prefix sums, the crossing,
masks) and makes ~20 passes over them. The fused kernel streams the same prefix sums per row,
keeping ``W_k`` and ``A_k`` of the ``M`` neurons in registers/L1, and stops a row as soon as every
neuron has found its first valid prefix (``W_k > 1`` and ``c_k <= z_(k+1)``). Backward walks the
sorted inputs once, accumulating ``dz_i = sum_j s_j w_ji`` and ``dw_ji += s_j (z_i - z_j)`` with
``s_j = g_j / (W_C - 1)`` for inputs inside each neuron's causal set. The arithmetic is the
reference's (terms rounded to the input dtype, sums accumulated in double in index order, see
:mod:`spikequant.temporal.solver`), so results, and whole training runs, are bit for bit equal.

Compiled on first use with ``torch.utils.cpp_extension.load_inline`` into
``$SPIKEQUANT_CACHE/ttfs/<hash>`` (default ``~/.cache/spikequant``). If compilation fails, or
``SPIKEQUANT_DISABLE_KERNELS`` is set, the torch path is used.
"""

from __future__ import annotations

from typing import Any

from ..kernels.build import CompiledExtension

_CPP = r"""
#include <torch/extension.h>
#include <cmath>
#include <limits>
#include <vector>

// Forward: z_sorted [R, N] ascending (inf = silent), order [R, N] int64 (sorted -> original
// input index), weight_t [N, M] contiguous. Returns z_out [R, M], prefix [R, M] (int64),
// fired [R, M] (bool), w_causal [R, M].
//
// Same arithmetic as the torch reference, so the two agree bit for bit: each term w * z is
// rounded to T, the prefix sums W_k, A_k accumulate in double (torch's CPU cumsum does this for
// float32 too; the solver asks for it explicitly), and every test and the crossing
// c_k = A_k / (W_k - 1) use the sums rounded back to T.
template <typename T>
static void forward_impl(const T* zs, const int64_t* order, const T* wt, int64_t R, int64_t N,
                         int64_t M, T z_max, T* z_out, int64_t* prefix, bool* fired, T* w_causal) {
  using acc_t = double;
  const acc_t inf = std::numeric_limits<acc_t>::infinity();
  // A neuron that found its spike gets W = -inf: it never passes "W > 1" again, so the inner
  // loops stay branch-free (vectorised) and need no "done" flags.
  const T slack = T(1) + T(64) * std::numeric_limits<T>::epsilon();
  std::vector<acc_t> W(M), A(M);
  for (int64_t r = 0; r < R; ++r) {
    std::fill(W.begin(), W.end(), acc_t(0));
    std::fill(A.begin(), A.end(), acc_t(0));
    T* zo = z_out + r * M;
    int64_t* pk = prefix + r * M;
    bool* fi = fired + r * M;
    T* wc = w_causal + r * M;
    for (int64_t m = 0; m < M; ++m) { zo[m] = z_max; pk[m] = 0; fi[m] = false; wc[m] = T(0); }
    int64_t remaining = M;
    const T* z_row = zs + r * N;
    const int64_t* o_row = order + r * N;
    acc_t* Wp = W.data();
    acc_t* Ap = A.data();
    for (int64_t k = 0; k < N && remaining > 0; ++k) {
      const T zk = z_row[k];
      if (!std::isfinite(zk)) break;  // silent inputs sort last
      const T z_next = (k + 1 < N) ? z_row[k + 1] : std::numeric_limits<T>::infinity();
      const T* w_row = wt + o_row[k] * M;
      int candidates = 0;
      for (int64_t m = 0; m < M; ++m) {
        const T term = w_row[m] * zk;  // rounded to T, as the reference's w_sorted * z_sorted
        Wp[m] += w_row[m];
        Ap[m] += term;
        const T w_k = static_cast<T>(Wp[m]), a_k = static_cast<T>(Ap[m]);
        // cheap filter (multiplication, a little slack); the exact test below divides
        candidates |= (w_k > T(1)) & (a_k <= z_next * (w_k - T(1)) * slack);
      }
      if (!candidates) continue;
      for (int64_t m = 0; m < M; ++m) {
        const T w_k = static_cast<T>(Wp[m]);
        if (!(w_k > T(1))) continue;
        const T c = static_cast<T>(Ap[m]) / (w_k - T(1));
        if (c <= z_next) {
          --remaining;
          pk[m] = k;
          wc[m] = w_k;
          if (c < z_max) { zo[m] = c; fi[m] = true; }
          Wp[m] = -inf;
        }
      }
    }
  }
}

std::vector<torch::Tensor> ttfs_forward(torch::Tensor z_sorted, torch::Tensor order,
                                        torch::Tensor weight_t, double z_max) {
  const int64_t R = z_sorted.size(0), N = z_sorted.size(1), M = weight_t.size(1);
  auto z_out = torch::empty({R, M}, z_sorted.options());
  auto prefix = torch::empty({R, M}, order.options());
  auto fired = torch::empty({R, M}, z_sorted.options().dtype(torch::kBool));
  auto w_causal = torch::empty({R, M}, z_sorted.options());
  AT_DISPATCH_FLOATING_TYPES(z_sorted.scalar_type(), "ttfs_forward", [&] {
    forward_impl<scalar_t>(z_sorted.data_ptr<scalar_t>(), order.data_ptr<int64_t>(),
                           weight_t.data_ptr<scalar_t>(), R, N, M, static_cast<scalar_t>(z_max),
                           z_out.data_ptr<scalar_t>(), prefix.data_ptr<int64_t>(),
                           fired.data_ptr<bool>(), w_causal.data_ptr<scalar_t>());
  });
  return {z_out, prefix, fired, w_causal};
}

// Backward: grad_out [R, M]; z [R, N] in original order; order [R, N]; weight_t [N, M];
// z_out, prefix, fired, w_causal from forward. Returns grad_z [R, N], grad_w_t [N, M].
// As in the reference, each product is rounded to T and the sums accumulate in double in a fixed
// order (grad_z over neurons m ascending, grad_w over rows r ascending), then round to T.
template <typename T>
static void backward_impl(const T* g, const T* z, const int64_t* order, const T* wt,
                          const T* z_out, const int64_t* prefix, const bool* fired,
                          const T* w_causal, int64_t R, int64_t N, int64_t M, T* grad_z,
                          T* grad_wt) {
  using acc_t = double;
  std::vector<T> s(M);
  std::vector<int64_t> last(M);
  std::vector<acc_t> grad_w_acc(static_cast<size_t>(N * M), acc_t(0));
  for (int64_t r = 0; r < R; ++r) {
    int64_t k_max = -1;
    for (int64_t m = 0; m < M; ++m) {
      const int64_t i = r * M + m;
      s[m] = fired[i] ? g[i] / (w_causal[i] - T(1)) : T(0);
      last[m] = (fired[i] && s[m] != T(0)) ? prefix[i] : -1;
      if (last[m] > k_max) k_max = last[m];
    }
    const T* zo = z_out + r * M;
    for (int64_t k = 0; k <= k_max; ++k) {
      const int64_t n = order[r * N + k];
      const T zn = z[r * N + n];
      const T* w_row = wt + n * M;
      acc_t* gw_row = grad_w_acc.data() + n * M;
      acc_t acc = acc_t(0);
      for (int64_t m = 0; m < M; ++m) {
        const T sm = (k <= last[m]) ? s[m] : T(0);
        const T dz_term = sm * w_row[m];
        const T dw_term = sm * (zn - zo[m]);
        acc += dz_term;
        gw_row[m] += dw_term;
      }
      grad_z[r * N + n] = static_cast<T>(acc);
    }
  }
  for (int64_t i = 0; i < N * M; ++i) grad_wt[i] = static_cast<T>(grad_w_acc[i]);
}

std::vector<torch::Tensor> ttfs_backward(torch::Tensor grad_out, torch::Tensor z,
                                         torch::Tensor order, torch::Tensor weight_t,
                                         torch::Tensor z_out, torch::Tensor prefix,
                                         torch::Tensor fired, torch::Tensor w_causal) {
  const int64_t R = z.size(0), N = z.size(1), M = weight_t.size(1);
  auto grad_z = torch::zeros_like(z);
  auto grad_wt = torch::zeros_like(weight_t);
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "ttfs_backward", [&] {
    backward_impl<scalar_t>(grad_out.data_ptr<scalar_t>(), z.data_ptr<scalar_t>(),
                            order.data_ptr<int64_t>(), weight_t.data_ptr<scalar_t>(),
                            z_out.data_ptr<scalar_t>(), prefix.data_ptr<int64_t>(),
                            fired.data_ptr<bool>(), w_causal.data_ptr<scalar_t>(), R, N, M,
                            grad_z.data_ptr<scalar_t>(), grad_wt.data_ptr<scalar_t>());
  });
  return {grad_z, grad_wt};
}
"""


TTFS_EXTENSION = CompiledExtension(
    "spikequant_ttfs_kernels",
    subdir="ttfs",
    source=_CPP,
    functions=["ttfs_forward", "ttfs_backward"],
)


def load() -> Any:
    """The compiled extension (built on first call, cached on disk), or None when unavailable."""
    return TTFS_EXTENSION.load()


def load_error() -> str | None:
    """Why the kernel is unavailable (None when it loaded or was never requested)."""
    return TTFS_EXTENSION.error
