"""Peak memory and time of training steps, measured in a fresh process.

``python -m benchmarks.memprobe --lib spikequant --model vgg11 --steps 16 --batch 16``
prints one JSON line. Peak memory is the process's resident-set high-water mark (VmHWM) minus the
resident set just before the first training step (after imports, model and data exist): the
working memory of a step, allocator effects included, independent of import footprints. Every
library runs with the allocator setting of :func:`spikequant.kernels.retain_freed_memory`.
"""

from __future__ import annotations

import argparse
import gc
import json
import time


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure(
    lib: str,
    model_name: str,
    steps: int,
    batch: int,
    chunk: int | None,
    channels_last: bool,
    repeats: int,
) -> dict:
    import torch

    from benchmarks import models, peers
    from spikequant import kernels
    from spikequant.bptt import checkpointed_forward

    # the same allocator policy for every library (spikequant's kernels set it when they load)
    kernels.retain_freed_memory()

    ok, reason = peers.available(lib)
    if not ok:
        return {"missing": reason}
    build = models.vgg11 if model_name == "vgg11" else models.three_conv_cnn
    model = build(lambda: peers.make_neuron_module(lib))
    x, y = models.data(steps, batch)
    forward = None
    if chunk:

        def forward(inputs):
            return checkpointed_forward(model, inputs, chunk)

    step = models.training_step(model, x, y, channels_last=channels_last, forward=forward)
    gc.collect()
    baseline = _status_kib("VmRSS")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    peak = _status_kib("VmHWM")
    later = sorted(times[1:]) or times
    return {
        "peak_mib": round((peak - baseline) / 1024, 1),
        "step_ms": round(1e3 * later[len(later) // 2], 1),
        "torch_threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lib", required=True)
    parser.add_argument("--model", choices=["cnn", "vgg11"], default="cnn")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--chunk", type=int, default=None)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    result = measure(
        args.lib, args.model, args.steps, args.batch, args.chunk, args.channels_last, args.repeats
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
