"""``spikequant eval CHECKPOINT``: test accuracy, latency, sparsity, firing rates and SynOps."""

from __future__ import annotations

import json
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a checkpoint: accuracy, T, theta, spikes/neuron, firing rates, SynOps",
        description="CHECKPOINT is a checkpoint folder or a run folder (its latest epoch).",
    )
    p.add_argument("checkpoint", type=Path)
    p.add_argument(
        "--dataset", default=None, help="dataset name (default: the one it was trained on)"
    )
    p.add_argument("--root", default=None, help="dataset folder (for datasets read from disk)")
    p.add_argument("--split", default="test", choices=["test", "val", "train"])
    p.add_argument("--subset", type=int, default=None, help="evaluate on the first N samples only")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


# what a method's evaluation leaves out (TTFS networks report their own statistics)
NO_SPIKE_STATISTICS = {"timesteps": None, "theta": None, "firing_rates": {}, "dense_macs": None}


def run(args) -> int:
    from ...convert.saved import is_converted
    from ...data import get_dataset, limit_dataset
    from ...errors import ConfigError
    from ...methods import get_method
    from ...pipeline import (
        check_model_fits_data,
        load_run_model,
        run_data_root,
        run_method_name,
        run_scores,
    )
    from ...registry import model_family
    from ...train.distributed import resolve_device
    from ...train.trainer import accept_frame_sequences, resolve_checkpoint

    device = resolve_device(args.device)
    folder = resolve_checkpoint(args.checkpoint)
    model, meta = load_run_model(folder)
    model.to(device)
    dataset = args.dataset or meta.get("dataset")
    if dataset is None:
        raise ConfigError(f"{folder} does not record its dataset; pass --dataset")
    root = args.root or run_data_root(meta)
    data = get_dataset(dataset, args.split, root=root)
    if args.subset is not None and args.subset < 1:
        raise ConfigError(f"--subset must be positive, got {args.subset}")
    data = limit_dataset(data, args.subset)
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be positive, got {args.batch_size}")
    family = "conversion" if is_converted(meta) else model_family(meta["model"]["name"])
    if family == "snn":
        accept_frame_sequences(model, data)
    check_model_fits_data(model, run_scores(meta), data, meta["model"]["name"])
    if family == "conversion":
        metrics = _evaluate_converted(model, data, args.batch_size)
    else:  # as the run's method evaluated it during training
        method = get_method(run_method_name(meta))
        metrics = {**NO_SPIKE_STATISTICS, **method.evaluate_model(model, data, args.batch_size)}
    result = {"checkpoint": str(folder), "dataset": dataset, "split": args.split, **metrics}
    if args.json:
        print(json.dumps(result))
        return 0
    _print(result)
    return 0


def _evaluate_converted(model, data, batch_size: int) -> dict:
    """A converted network (``spikequant convert --save-run``): accuracy of its logits after its
    T steps, and its spikes (all spiking stages; hidden spikes, no input spikes)."""
    from ...devices import model_device
    from ...train.trainer import batches

    device = model_device(model)
    T = int(model.timesteps)
    correct, count, spikes, neurons = 0, 0, 0.0, 0
    for x, y in batches(data, batch_size, shuffle=False):  # a file dataset streams
        out = model.simulate(x.to(device), [T])[T]
        correct += int((out["logits"].argmax(1) == y.to(device)).sum())
        count += len(y)
        spikes += out["spikes"]
        neurons = out["neurons"]
    per_neuron = spikes / max(neurons * count, 1)
    return {
        "accuracy": correct / max(count, 1),
        "samples": count,
        "timesteps": T,
        "theta": per_neuron / T,
        "spikes_per_neuron": per_neuron,
        "spiking_neurons": neurons,
        "synops": None,
        "firing_rates": {},
        "dense_macs": None,
    }


def _print(r: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"checkpoint {r['checkpoint']}")
    title = f"{r['dataset']} {r['split']} split, {r['samples']} samples"
    table = Table(title=title, show_header=False)
    table.add_row("accuracy", f"{100 * r['accuracy']:.2f} %")
    if r["timesteps"] is not None:
        table.add_row("latency T", str(r["timesteps"]))
    if r["theta"] is not None:
        table.add_row("theta (spikes / neuron / step)", f"{r['theta']:.4f}")
        table.add_row("spikes / neuron (window)", f"{r['spikes_per_neuron']:.4f}")
        table.add_row("spiking neurons", str(r["spiking_neurons"]))
        if r.get("synops") is not None:
            table.add_row("SynOps / sample", f"{r['synops']:.4g}")
    if r.get("dense_macs") is not None:
        table.add_row("dense MACs / sample", f"{r['dense_macs']:.4g}")
    for key in ("fraction_spiking", "energy_nJ"):
        if key in r:
            table.add_row(key.replace("_", " "), f"{r[key]:.4g}")
    console.print(table)
    if r["firing_rates"]:
        layers = Table()
        layers.add_column("layer")
        layers.add_column("firing rate", justify="right")
        for name, rate in r["firing_rates"].items():
            layers.add_row(name, f"{rate:.4f}")
        console.print(layers)
