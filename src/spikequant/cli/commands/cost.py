"""``spikequant cost MODEL|CHECKPOINT``: memory, operations and energy of a spiking network.

A registered model name is built with ``--input-size C,H,W``, ``--timesteps`` and ``--neuron``
(default ``qlif``); ``--weight-bits``/``--membrane-bits`` set the precisions counted (defaults:
32 for a model name, what the checkpoint carries otherwise). A checkpoint folder is loaded and its
spatial/channel sparsity and SynOps are measured on ``--samples`` test samples of its dataset.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ...errors import ConfigError


def _parse_size(text: str) -> tuple[int, int, int]:
    try:
        parts = tuple(int(p) for p in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) < 1:
        raise ConfigError(f"--input-size must look like C,H,W (e.g. 2,48,48), got {text!r}")
    return parts


def available_memory_bytes() -> int:
    """MemAvailable of this machine (Linux), else its physical memory."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    import os

    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_bounds(model: str, c: int, h: int, w: int, timesteps: int) -> None:
    """Refuse sizes that cannot be profiled, before building anything: T in 1..MAX_TIMESTEPS
    (the recipe bound), and a memory estimate within this machine's available memory.

    The estimate is a lower bound: the probe holds the input of T steps and the first spiking
    layer's membrane and spikes (at least as many values as the input), float32 each.
    """
    from ...train.recipe import MAX_TIMESTEPS

    if not 1 <= timesteps <= MAX_TIMESTEPS:
        raise ConfigError(f"--timesteps must be in 1..{MAX_TIMESTEPS}, got {timesteps}")
    need = 3 * 4 * timesteps * c * h * w
    have = available_memory_bytes()
    if need > have:
        raise ConfigError(
            f"model {model} at input {c}x{h}x{w}, T = {timesteps} needs at least "
            f"{need / 2**30:.1f} GiB for its activations, more than the {have / 2**30:.1f} GiB "
            "available; use a smaller --input-size or --timesteps"
        )


def run(args) -> int:
    from ...cost import measure_activity, model_cost
    from ...registry import create_model
    from ...train.distributed import resolve_device

    device = resolve_device(args.device)  # a bad or absent device: one line before any work

    if args.out:
        from ...io import check_output_file

        check_output_file(args.out)
    target = Path(args.model)
    sparsity = None
    if target.exists():
        from ...pipeline import load_run_model

        model, meta = load_run_model(target)
        model.to(device)
        if meta.get("method") == "conversion":
            return _converted_cost(model, meta, args, str(target))
        kwargs = meta["model"]["kwargs"]
        size = kwargs.get("input_size", 28)
        h, w = (size, size) if isinstance(size, int) else size
        example = torch.zeros(1, kwargs.get("in_channels", 1), h, w)
        if args.input_size:
            example = torch.zeros(1, *_parse_size(args.input_size))
        dataset = meta.get("dataset")
        if dataset and args.samples > 0:
            from ...data import get_dataset, limit_dataset
            from ...pipeline import run_data_root

            test = limit_dataset(get_dataset(dataset, "test", run_data_root(meta)), args.samples)
            sparsity = measure_activity(model, test, batch_size=min(args.samples, 256))
        label = str(target)
    else:
        if not args.input_size:
            raise ConfigError("--input-size C,H,W is required for a model name")
        c, h, w = _parse_size(args.input_size)
        check_bounds(args.model, c, h, w, args.timesteps)
        try:
            model = create_model(
                args.model,
                in_channels=c,
                input_size=[h, w] if h != w else h,
                timesteps=args.timesteps,
                neuron=args.neuron,
                num_classes=args.num_classes,
            )
        except TypeError as exc:
            raise ConfigError(f"model {args.model!r}: {exc}") from None
        model.to(device)
        example = torch.zeros(1, c, h, w)
        label = args.model
    if args.spatial_sparsity is not None or args.channel_sparsity is not None:
        for name, value in (("spatial", args.spatial_sparsity), ("channel", args.channel_sparsity)):
            if value is not None and not 0 <= value < 1:
                raise ConfigError(f"--{name}-sparsity must be in [0, 1), got {value}")
        sparsity = {
            "spatial": args.spatial_sparsity or 0.0,
            "channel": args.channel_sparsity or 0.0,
        }
    weight_bits = args.weight_bits
    membrane_bits = args.membrane_bits
    if not target.exists():
        weight_bits = 32 if weight_bits is None else weight_bits
        membrane_bits = 32 if membrane_bits is None else membrane_bits
    for name, value in (("weight", weight_bits), ("membrane", membrane_bits)):
        if value is not None and not 1 <= value <= 32:
            raise ConfigError(f"--{name}-bits must be in 1..32, got {value}")
    cost = model_cost(
        model, example, weight_bits=weight_bits, membrane_bits=membrane_bits, sparsity=sparsity
    )
    cost["model"] = label
    if sparsity is not None:
        cost["measured"] = {k: v for k, v in sparsity.items() if k != "layers"}
    if args.json:
        print(json.dumps(cost, indent=2))
    else:
        _print(cost)
    if args.out:
        from ...io import command_line, write_json

        write_json(args.out, {"command": command_line(), **cost})
    return 0


def _converted_cost(model, meta: dict, args, label: str) -> int:
    """A rate/MSAT conversion: the MSAT paper's energy model (ANN vs SNN, 32-bit float MAC
    4.6 pJ, AC 0.9 pJ) measured from the spikes on the first ``--samples`` test images."""
    from ...convert.energy import measure_energy
    from ...data import load_arrays
    from ...pipeline import run_data_root

    conversion = meta.get("conversion") or {}
    if conversion.get("method") not in ("rate", "msat"):
        raise ConfigError(
            f"cost of a converted network applies the ANN-vs-SNN energy model of rate and msat "
            f"conversions; this is a {conversion.get('method')} conversion (its integer "
            "activations are counted against the quantized ANN by spikequant convert)"
        )
    if args.samples < 1:
        raise ConfigError(f"--samples must be >= 1 for a converted network, got {args.samples}")
    x, _ = load_arrays(
        meta.get("dataset", "mnist5k"), "test", run_data_root(meta), limit=args.samples
    )
    energy = measure_energy(model, x, int(conversion["timesteps"]))
    cost = {"model": label, "conversion": conversion.get("method"), "samples": len(x), **energy}
    if args.json:
        print(json.dumps(cost, indent=2))
    else:
        print(
            f"model {label}: {cost['conversion']} conversion, T = {cost['timesteps']}, "
            f"{cost['samples']} test samples\n"
            f"ANN  {cost['ann_macs']:,.0f} MACs -> {cost['ann_pj'] / 1e6:.4f} uJ per sample "
            "(4.6 pJ per 32-bit MAC)\n"
            f"SNN  first layer {cost['first_layer_macs']:,.0f} MACs x T, "
            f"{cost['synops']:,.0f} SynOps (0.9 pJ each) -> {cost['snn_pj'] / 1e6:.4f} uJ\n"
            f"SNN energy = {100 * cost['snn_fraction_of_ann']:.2f} % of the ANN's"
        )
    if args.out:
        from ...io import write_json

        write_json(args.out, cost)
    return 0


def _print(cost: dict) -> None:
    mb = cost["memory_mb"]
    lines = [
        f"model {cost['model']}: T = {cost['timesteps']}, {cost['neurons']:,} spiking neurons, "
        f"{cost['weights']:,} weights",
        f"memory  weights {mb['weights']:.4f} MB  membrane {mb['membrane']:.4f} MB  "
        f"spikes {mb['spikes']:.4f} MB  total {mb['total']:.4f} MB "
        f"({cost['memory_mib']['total']:.4f} MiB)",
        f"MACs per step  dense {cost['dense_macs_per_step']:,.0f}  "
        f"sparse {cost['sparse_macs_per_step']:,.0f}",
        f"FLOPs over T   dense {cost['dense_flops']:,.0f}  sparse {cost['sparse_flops']:,.0f}  "
        f"({cost['flops_reduction']:.2f}x fewer)",
    ]
    measured = cost.get("measured")
    if measured and "effective_synops" in measured:
        lines.append(
            f"measured       S_p {measured['spatial_sparsity']:.4f}  "
            f"S_c {measured['channel_sparsity']:.4f}  "
            f"SynOps {measured['effective_synops']:,.0f} "
            f"(spike fan-out {measured['spike_synops']:,.0f})"
        )
    lines.append(
        f"energy         {cost['energy_pj'] / 1e6:.4f} uJ per sample ({cost['energy_basis']}, 7 nm)"
    )
    print("\n".join(lines))


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "cost", help="memory, FLOPs/SynOps and energy of a model or checkpoint", description=__doc__
    )
    p.add_argument("model", help="registered model name (vgg9, resnet19, ...) or checkpoint folder")
    p.add_argument("--input-size", help="C,H,W of one input (required for a model name)")
    p.add_argument("--weight-bits", type=int, default=None)
    p.add_argument("--membrane-bits", type=int, default=None)
    p.add_argument("--timesteps", type=int, default=1, help="T (model name only; default 1)")
    p.add_argument("--neuron", default="qlif", help="neuron of a model name (default qlif)")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--spatial-sparsity", type=float, default=None, help="assumed S_p")
    p.add_argument("--channel-sparsity", type=float, default=None, help="assumed S_c")
    p.add_argument(
        "--samples", type=int, default=256, help="test samples to measure a checkpoint on"
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--json", action="store_true", help="print the full JSON report")
    p.add_argument("--out", help="also write the JSON report to this file")
    p.set_defaults(func=run)
