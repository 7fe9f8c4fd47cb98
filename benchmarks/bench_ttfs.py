"""One training epoch of the TTFS FC 784-100-10 (mnist5k, batch 10, Adam 1e-3): spikequant vs a
straightforward numpy implementation written here.

The numpy version does what a direct transcription of the method does: per sample, sort the
inputs, take cumulative sums over all neurons at once, pick the first valid prefix, and
backpropagate the analytical gradients; Adam, the weight-sum penalty, L2 and the row-normalised
clipping as in spikequant. Both start from the same weights; their forward outputs are compared.

``run()`` times one full spikequant epoch (4,000 samples) with the fused kernel and with the
pure-torch backend, and ``numpy_samples`` samples of the numpy version extrapolated to the epoch
(``--full`` times the whole numpy epoch); all three take turns chunk by chunk. Wall-clock and
process CPU time are both reported: on a shared machine the wall time includes the time other
processes hold the CPU, the CPU time does not. Writes ``docs/results/bench_ttfs.json`` when run
alone: ``python -m benchmarks.bench_ttfs``.
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch

Z_MAX = 1e5
K, BETA, L2, CLIP = 100.0, 1.0, 1e-3, 10.0


def numpy_layer_forward(z: np.ndarray, w: np.ndarray):
    """One sample: ``z [N]`` (bias input included), ``w [M, N]`` -> ``z_out [M]``, causal prefix."""
    order = np.argsort(z, kind="stable")
    zs = z[order]
    ws = w[:, order]
    w_cum = np.cumsum(ws, axis=1)
    a_cum = np.cumsum(ws * zs, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = a_cum / (w_cum - 1)
    z_next = np.append(zs[1:], np.inf)
    valid = (w_cum > 1) & (c >= zs) & (c <= z_next) & (c < Z_MAX)
    cand = np.where(valid, c, np.inf)
    k = cand.argmin(axis=1)
    out = cand[np.arange(len(k)), k]
    fired = np.isfinite(out)
    out = np.where(fired, out, Z_MAX)
    return out, order, k, fired, w_cum[np.arange(len(k)), k]


def numpy_layer_backward(g, z, w, out, order, k, fired, w_c):
    """Gradients of one sample: ``dz_in [N]``, ``dw [M, N]``."""
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    causal = rank[None, :] <= k[:, None]
    scale = np.where(fired, g / np.where(fired, w_c - 1, 1.0), 0.0)
    weighted = causal * scale[:, None]
    dz = (weighted * w).sum(0)
    dw = weighted * (z[None, :] - out[:, None])
    return dz, dw


class NumpyTTFS:
    """FC TTFS network in numpy with Adam; weights ``[M, N+1]`` (last column = bias input)."""

    def __init__(self, weights: list[np.ndarray], lr: float = 1e-3) -> None:
        self.w = [w.astype(np.float32).copy() for w in weights]
        self.m = [np.zeros_like(w) for w in self.w]
        self.v = [np.zeros_like(w) for w in self.w]
        self.t, self.lr = 0, lr

    def forward(self, x: np.ndarray):
        zs, caches = [np.concatenate([x, [1.0]])], []
        for w in self.w:
            out, *cache = numpy_layer_forward(zs[-1], w)
            caches.append(cache)
            zs.append(np.concatenate([out, [1.0]]))
        return zs, caches

    def train_batch(self, X: np.ndarray, y: np.ndarray) -> None:
        grads = [np.zeros_like(w) for w in self.w]
        for x, label in zip(X, y, strict=True):
            zs, caches = self.forward(x)
            logits = -zs[-1][:-1]
            p = np.exp(logits - logits.max())
            p /= p.sum()
            p[label] -= 1
            g = -p / len(X)  # d CE / d z = -(softmax - onehot)
            for layer in range(len(self.w) - 1, -1, -1):
                out = zs[layer + 1][:-1]
                dz, dw = numpy_layer_backward(g, zs[layer], self.w[layer], out, *caches[layer])
                grads[layer] += dw
                g = dz[:-1]
        for i, w in enumerate(self.w):
            sums = w.sum(1)
            grads[i] += K * np.where(sums < BETA, -1.0, 0.0)[:, None] / w.shape[0] + 2 * L2 * w
            norm = np.sqrt((grads[i] ** 2).sum()) / w.shape[0]
            if norm > CLIP:
                grads[i] *= CLIP / norm
        self.t += 1
        for i, g in enumerate(grads):
            self.m[i] = 0.9 * self.m[i] + 0.1 * g
            self.v[i] = 0.999 * self.v[i] + 0.001 * g * g
            m_hat = self.m[i] / (1 - 0.9**self.t)
            v_hat = self.v[i] / (1 - 0.999**self.t)
            self.w[i] -= self.lr * m_hat / (np.sqrt(v_hat) + 1e-8)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.array([self.forward(x)[0][-1][:-1].argmin() for x in X])


def _spikequant_steps(model, X, y, batch: int, seed: int):
    """Generator: each ``next()`` runs the next chunk of training steps, returns its seconds."""
    from spikequant.temporal import clip_row_normalised, ttfs_loss

    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = torch.randperm(len(X), generator=torch.Generator().manual_seed(seed))
    starts = list(range(0, len(X), batch))
    steps_per_chunk = yield
    for c in range(0, len(starts), steps_per_chunk):
        begin, begin_cpu = time.perf_counter(), time.process_time()
        for i in starts[c : c + steps_per_chunk]:
            idx = order[i : i + batch]
            loss = ttfs_loss(model, model(X[idx]), y[idx], K=K, beta=BETA, l2=L2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            clip_row_normalised(model, CLIP)
            opt.step()
        yield time.perf_counter() - begin, time.process_time() - begin_cpu


def run(numpy_samples: int = 500, full: bool = False, seed: int = 0, threads: int = 1) -> dict:
    """``threads``: torch intra-op threads for the spikequant epoch (the runner's default is 1:
    on a shared 2-core machine, thread synchronisation per small op costs more than it gives);
    numpy runs its element-wise work on one thread anyway."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run(numpy_samples, full, seed)
    finally:
        torch.set_num_threads(previous)


def _run(numpy_samples: int, full: bool, seed: int) -> dict:
    from spikequant.data import load_arrays
    from spikequant.temporal import ttfs_fc

    X, y = load_arrays("mnist5k", "train")
    Xt, yt = load_arrays("mnist5k", "test")
    X, Xt = X.reshape(len(X), -1), Xt.reshape(len(Xt), -1)
    torch.manual_seed(seed)
    model = ttfs_fc([784, 100, 10])
    weights = [
        torch.cat([layer.weight, layer.bias[:, None]], 1).detach().numpy() for layer in model.layers
    ]
    reference = NumpyTTFS(weights)

    # same weights, same input -> same spike times (float32 both)
    z_in = np.exp(3.0 * (1.0 - X[:20].numpy()))
    with torch.no_grad():
        torch_out = model.layers(torch.from_numpy(z_in)).numpy()
    numpy_out = np.stack([reference.forward(z)[0][-1][:-1] for z in z_in])
    agree = float(np.max(np.abs(np.log(torch_out) - np.log(numpy_out))))

    # All take turns chunk by chunk, so that load drift on a shared machine hits them alike.
    # "fused" is the default solver (C++ kernel), "torch" the pure-torch reference backend.
    from spikequant.temporal import kernel
    from spikequant.temporal.layers import set_solver_backend

    n_np = len(X) if full else min(numpy_samples, len(X))
    Xn = np.exp(3.0 * (1.0 - X.numpy()))
    yn = y.numpy()
    np_order = np.random.default_rng(seed).permutation(len(X))[:n_np]
    chunks = 10
    backends = ["fused", "torch"] if kernel.load() is not None else ["torch"]
    models = {b: set_solver_backend(copy.deepcopy(model), b) for b in backends}
    steps = {b: _spikequant_steps(models[b], X, y, 10, seed) for b in backends}
    seconds = {b: 0.0 for b in backends}
    cpu_seconds = {b: 0.0 for b in backends}
    for gen in steps.values():
        next(gen)
    np_seconds = np_cpu_seconds = 0.0
    np_batches = [np_order[i : i + 10] for i in range(0, n_np, 10)]
    per_chunk = -(-len(np_batches) // chunks)
    for c in range(chunks):
        for b in backends:
            gen = steps[b]
            wall, cpu = gen.send(len(X) // 10 // chunks) if c == 0 else next(gen)
            seconds[b] += wall
            cpu_seconds[b] += cpu
        begin, begin_cpu = time.perf_counter(), time.process_time()
        for idx in np_batches[c * per_chunk : (c + 1) * per_chunk]:
            reference.train_batch(Xn[idx], yn[idx])
        np_seconds += time.perf_counter() - begin
        np_cpu_seconds += time.process_time() - begin_cpu
    np_seconds *= len(X) / n_np
    np_cpu_seconds *= len(X) / n_np
    best = backends[0]
    with torch.no_grad():
        sq_acc = float((model.predict(models[best](Xt)) == yt).float().mean())
    result = {
        "workload": "TTFS FC 784-100-10, mnist5k train (4,000 samples), batch 10, Adam 1e-3",
        "torch_threads": torch.get_num_threads(),
        "spikequant_backend": best,
        "spikequant_epoch_s": seconds[best],
        "spikequant_torch_backend_epoch_s": seconds.get("torch"),
        "spikequant_test_accuracy_after_epoch": sq_acc,
        "numpy_epoch_s": np_seconds,
        "numpy_timed_samples": n_np,
        "numpy_extrapolated": n_np < len(X),
        "speedup": np_seconds / seconds[best],
        "spikequant_epoch_cpu_s": cpu_seconds[best],
        "spikequant_torch_backend_epoch_cpu_s": cpu_seconds.get("torch"),
        "numpy_epoch_cpu_s": np_cpu_seconds,
        "speedup_cpu_time": np_cpu_seconds / cpu_seconds[best],
        "speedup_vs_spec_numpy_35s": 35.0 / seconds[best],
        "max_abs_log_z_difference_numpy_vs_spikequant": agree,
    }
    if full:
        result["numpy_test_accuracy_after_epoch"] = float(
            (reference.predict(np.exp(3.0 * (1.0 - Xt.numpy()))) == yt.numpy()).mean()
        )
    return result


def main() -> None:
    from spikequant.io import command_line, results_dir, write_json

    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_ttfs")
    parser.add_argument("--numpy-samples", type=int, default=500)
    parser.add_argument("--full", action="store_true", help="time the whole numpy epoch")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    result = run(args.numpy_samples, args.full, threads=args.threads)
    path = results_dir(None, "docs/results") / "bench_ttfs.json"
    write_json(path, {"command": command_line(), **result})
    for key, value in result.items():
        print(f"{key}: {value}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
