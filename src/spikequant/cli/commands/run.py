"""``spikequant run model.sqrt INPUT``: run an integer program on one input with the C++ runtime.

INPUT is a ``.npy`` array (float values are quantized with the program's input scale, integers
are taken as codes; ``[C, H, W]`` static or ``[T, C, H, W]`` frames) or an image file (needs
Pillow). Prints the prediction, the integer logits, the latency (median of ``--repeat`` runs) and
the process's peak resident memory next to the bytes the runtime itself holds.
"""

from __future__ import annotations

import resource
import statistics
import time


def run(args) -> int:
    from ...errors import ConfigError
    from ...runtime.format import load_program
    from ...runtime.inputs import read_input
    from ...runtime.native import NativeRuntime

    if args.repeat < 1:
        raise ConfigError(f"--repeat must be positive, got {args.repeat}")
    program = load_program(args.program)
    codes, static = read_input(program, args.input)
    runtime = NativeRuntime(program, batch=1, threads=args.threads)
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        logits = runtime.run(codes)
        times.append(time.perf_counter() - start)
    held = runtime.memory_bytes()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    steps = program.timesteps if static else codes.shape[0]
    print(f"prediction {int(logits[0].argmax())}")
    print(f"logits (integer, summed over T = {steps}) {logits[0].tolist()}")
    print(
        f"latency {statistics.median(times) * 1e3:.3f} ms (median of {args.repeat}, batch 1, "
        f"{args.threads} thread{'s' if args.threads > 1 else ''})"
    )
    print(
        f"memory: runtime holds {sum(held.values()):,} B (weights {held['weights']:,}, "
        f"membranes {held['membranes']:,}, spikes {held['spikes']:,}, scratch "
        f"{held['scratch']:,}); process peak RSS {peak_kib / 1024:.1f} MiB (this Python CLI "
        "process includes PyTorch)"
    )
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "run", help="run an integer program (.sqrt) on one input", description=__doc__
    )
    p.add_argument("program", help="program file written by spikequant deploy")
    p.add_argument("input", help=".npy array or image file")
    p.add_argument("--repeat", type=int, default=20, help="timed runs (default 20)")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=run)
