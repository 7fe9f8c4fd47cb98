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
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    from torch.utils.data import Subset, TensorDataset

    from ...checkpoint import load_model
    from ...data import get_dataset
    from ...errors import ConfigError
    from ...train.trainer import accept_frame_sequences, evaluate, resolve_checkpoint

    folder = resolve_checkpoint(args.checkpoint)
    model, meta = load_model(folder)
    dataset = args.dataset or meta.get("dataset")
    if dataset is None:
        raise ConfigError(f"{folder} does not record its dataset; pass --dataset")
    root = args.root or (meta.get("recipe", {}).get("data", {}) or {}).get("root")
    data = get_dataset(dataset, args.split, root=root)
    if args.subset is not None:
        if args.subset < 1:
            raise ConfigError(f"--subset must be positive, got {args.subset}")
        data = (
            TensorDataset(*(t[: args.subset] for t in data.tensors))
            if isinstance(data, TensorDataset)
            else Subset(data, range(min(args.subset, len(data))))
        )
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be positive, got {args.batch_size}")
    accept_frame_sequences(model, data)
    result = {
        "checkpoint": str(folder),
        "dataset": dataset,
        "split": args.split,
        **evaluate(model, data, batch_size=args.batch_size),
    }
    if args.json:
        print(json.dumps(result))
        return 0
    _print(result)
    return 0


def _print(r: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"checkpoint {r['checkpoint']}")
    title = f"{r['dataset']} {r['split']} split, {r['samples']} samples"
    table = Table(title=title, show_header=False)
    table.add_row("accuracy", f"{100 * r['accuracy']:.2f} %")
    table.add_row("latency T", str(r["timesteps"]))
    if r["theta"] is not None:
        table.add_row("theta (spikes / neuron / step)", f"{r['theta']:.4f}")
        table.add_row("spikes / neuron (window)", f"{r['spikes_per_neuron']:.4f}")
        table.add_row("spiking neurons", str(r["spiking_neurons"]))
        table.add_row("SynOps / sample", f"{r['synops']:.4g}")
    table.add_row("dense MACs / sample", f"{r['dense_macs']:.4g}")
    console.print(table)
    if r["firing_rates"]:
        layers = Table()
        layers.add_column("layer")
        layers.add_column("firing rate", justify="right")
        for name, rate in r["firing_rates"].items():
            layers.add_row(name, f"{rate:.4f}")
        console.print(layers)
