"""Detection study on ``digits_canvas``: FP-SNN, Quant-SNN and SpQuant-SNN detectors.

    python -m spikequant.detection.report --out docs/results

trains ``spiking_yolo_tiny`` three times with the same data, seed and budget, and writes
``DIR/detection_digits.md`` and ``.json`` (headed by the command) with, per variant, COCO mAP@0.5
and mAP@[.5:.95] on held-out scenes of test digits, SynOps per image (spike-driven accumulates,
:func:`spikequant.metrics.synaptic_ops`; ``effective`` skips the outputs spatial pruning removed),
the first layer's MACs, the mean firing rate, and memory (weights, membrane, total;
:func:`spikequant.cost.model_cost`). The variants, after SpQuant-SNN's Table 9 (YOLOv2 on
Prophesee Gen1: ternary membrane, 4-bit weights):

* ``fp_snn``: LIF neurons (decay 0.5, hard reset), float weights and membranes;
* ``quant_snn``: QLIF with a ternary membrane {-1, 0, 1} and a learnable per-layer threshold,
  4-bit power-of-two weights (standardised and rescaled, ``quantize_weights(..., rescale=True)``)
  on every conv layer including the head;
* ``spquant_snn``: ``quant_snn`` + 35 % membrane-guided spatial pruning (the channel gates of
  SpQuant-SNN are not used here).

Each variant trains from scratch (no fine-tuning chain), so the comparison is at equal budget.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from ..errors import ConfigError, SpikequantError

VARIANTS = {
    "fp_snn": {"neuron": "lif", "weight_bits": 32, "spatial_prune": 0.0},
    "quant_snn": {"neuron": "qlif", "weight_bits": 4, "spatial_prune": 0.0},
    "spquant_snn": {"neuron": "qlif", "weight_bits": 4, "spatial_prune": 0.35},
}
OUTPUT_NAME = "detection_digits"


def build_detector(variant: str, *, timesteps: int, widths, in_channels: int = 1):
    """The ``spiking_yolo_tiny`` of one variant (see the module docstring)."""
    from ..registry import create_model
    from ..spquant.pruning import configure_pruning
    from ..spquant.weights import quantize_weights

    spec = VARIANTS[variant]
    neuron_kwargs = (
        {"membrane": "ternary", "learn_threshold": True} if spec["neuron"] == "qlif" else {}
    )
    model = create_model(
        "spiking_yolo_tiny",
        neuron=spec["neuron"],
        neuron_kwargs=neuron_kwargs,
        timesteps=timesteps,
        widths=tuple(widths),
        in_channels=in_channels,
    )
    if spec["weight_bits"] < 32:
        quantize_weights(model, spec["weight_bits"], alpha=4.0, weight_std=4.0, rescale=True)
    if spec["spatial_prune"]:
        configure_pruning(model, spatial=spec["spatial_prune"])
    return model


def scenes(dataset: str, split: str, count: int, seed: int, timesteps: int):
    """All ``count`` scenes of a split as one input tensor and the list of targets."""
    from ..data import get_dataset
    from ..data.canvas import detection_collate

    kwargs = {"length": count, "seed": seed}
    if dataset == "digits_canvas_events":
        kwargs["timesteps"] = timesteps
    data = get_dataset(dataset, split, **kwargs)
    return detection_collate([data[i] for i in range(len(data))])


def _batch_dim(x: torch.Tensor) -> int:
    return 1 if x.ndim == 5 else 0


def train_detector(
    model, x, targets, *, epochs: int, batch_size: int, lr: float, seed: int, device, log=None
) -> list[float]:
    """Adam + cosine schedule on the detection loss; returns the mean loss of each epoch."""
    from ..neurons import reset_state
    from .loss import detection_loss

    dim = _batch_dim(x)
    count = x.shape[dim]
    steps_per_epoch = max(1, (count + batch_size - 1) // batch_size)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(seed)
    model.to(device).train()
    history = []
    for epoch in range(epochs):
        order = torch.randperm(count, generator=generator)
        total = 0.0
        for start in range(0, count, batch_size):
            idx = order[start : start + batch_size]
            xb = x.index_select(dim, idx).to(device)
            tb = [targets[i] for i in idx.tolist()]
            reset_state(model)
            parts = detection_loss(model, model(xb), tb)
            opt.zero_grad()
            parts["loss"].backward()
            opt.step()
            sched.step()
            total += parts["loss"].item() * len(idx)
        history.append(total / count)
        if log:
            log(f"  epoch {epoch + 1}/{epochs}: loss {history[-1]:.3f}")
    return history


@torch.no_grad()
def evaluate_detector(model, x, targets, *, batch_size: int, device) -> dict:
    """mAP, SynOps, firing rate and memory of a trained detector on ``(x, targets)``."""
    from ..cost import measure_activity, model_cost
    from ..metrics import SpikeMonitor
    from ..neurons import reset_state
    from .evaluate import mean_average_precision

    dim = _batch_dim(x)
    count = x.shape[dim]
    model.to(device).eval()
    predictions = []
    with SpikeMonitor(model) as monitor:
        for start in range(0, count, batch_size):
            xb = x.narrow(dim, start, min(batch_size, count - start)).to(device)
            reset_state(model)
            predictions += [{k: v.cpu() for k, v in p.items()} for p in model.decode(model(xb))]
    spikes = monitor.report()
    scores = mean_average_precision(predictions, targets)
    activity = measure_activity(model, x.to(device), max_samples=count)
    example = x.narrow(dim, 0, 1).to(device)
    cost = model_cost(model, example, sparsity=activity)
    return {
        "map_50": scores["map_50"],
        "map": scores["map"],
        "detections_per_image": sum(len(p["labels"]) for p in predictions) / count,
        "synops": activity["spike_synops"],
        "synops_monitor": spikes["synops"],
        "effective_synops": activity["effective_synops"],
        "first_layer_macs": activity["first_layer_macs"],
        "firing_rate": spikes["theta"],
        "spatial_sparsity": activity["spatial_sparsity"],
        "memory_mb": cost["memory_mb"],
        "weights": cost["weights"],
        "neurons": cost["neurons"],
    }


def _markdown(results: dict, settings: dict, header: str) -> str:
    lines = [
        header.rstrip(),
        "",
        f"# Spiking detectors on {settings['dataset']} (real mnist5k digits)",
        "",
        f"`spiking_yolo_tiny`, widths {settings['widths']}, T = {settings['timesteps']}, "
        f"{settings['train_scenes']} training scenes, {settings['epochs']} epochs (batch "
        f"{settings['batch_size']}, Adam lr {settings['lr']}, seed {settings['seed']}); "
        f"evaluated on {settings['test_scenes']} scenes of test digits ({settings['dataset']}).",
        "SynOps and MACs per image; memory in MB (bits / 8e6).",
        "",
        "| variant | mAP@0.5 | mAP@[.5:.95] | SynOps | effective SynOps | first-layer MACs "
        "| firing rate | weight MB | membrane MB | total MB | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        m = r["memory_mb"]
        lines.append(
            f"| {name} | {r['map_50']:.3f} | {r['map']:.3f} | {r['synops']:.3g} | "
            f"{r['effective_synops']:.3g} | {r['first_layer_macs']:.3g} | "
            f"{r['firing_rate']:.3f} | {m['weights']:.4f} | {m['membrane']:.4f} | "
            f"{m['total']:.4f} | {r['train_seconds']:.0f} |"
        )
    lines += [
        "",
        "fp_snn: LIF, float weights and membrane. quant_snn: QLIF ternary membrane (2 bits), "
        "learnable threshold, 4-bit power-of-two weights. spquant_snn: quant_snn + 35 % spatial "
        "pruning (no channel gates). Each trained from scratch with the same budget.",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m spikequant.detection.report",
        description="Train FP-SNN, Quant-SNN and SpQuant-SNN spiking_yolo_tiny detectors on "
        "digits_canvas and write mAP@0.5, SynOps and memory to DIR/detection_digits.{md,json} "
        "(detection_digits_events.{md,json} with --dataset digits_canvas_events)",
    )
    p.add_argument("--out", required=True, help="results folder")
    p.add_argument(
        "--dataset", default="digits_canvas", choices=["digits_canvas", "digits_canvas_events"]
    )
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--train-scenes", type=int, default=1000)
    p.add_argument("--test-scenes", type=int, default=300)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--timesteps", type=int, default=3)
    p.add_argument("--widths", type=int, nargs=5, default=[8, 16, 32, 48, 48])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    from ..io import check_output_dir, command_header, command_line, write_json, write_text

    for name in ("train_scenes", "test_scenes", "epochs", "batch_size", "timesteps"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    out = check_output_dir(args.out)
    header = command_header()
    device = torch.device(args.device)
    settings = {
        "dataset": args.dataset,
        "train_scenes": args.train_scenes,
        "test_scenes": args.test_scenes,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "timesteps": args.timesteps,
        "widths": list(args.widths),
        "seed": args.seed,
    }
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    x_train, t_train = scenes(args.dataset, "train", args.train_scenes, args.seed, args.timesteps)
    x_test, t_test = scenes(args.dataset, "test", args.test_scenes, args.seed, args.timesteps)
    in_channels = x_train.shape[-3]
    results = {}
    for variant in args.variants:
        log(f"{variant}:")
        torch.manual_seed(args.seed)
        model = build_detector(
            variant, timesteps=args.timesteps, widths=args.widths, in_channels=in_channels
        )
        start = time.perf_counter()
        history = train_detector(
            model,
            x_train,
            t_train,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            device=device,
            log=log,
        )
        seconds = time.perf_counter() - start
        result = evaluate_detector(model, x_test, t_test, batch_size=100, device=device)
        result.update(train_seconds=seconds, loss_history=history, **VARIANTS[variant])
        log(f"  mAP@0.5 {result['map_50']:.3f}, SynOps {result['synops']:.3g}")
        results[variant] = result
    document = {"command": command_line(), "settings": settings, "results": results}
    name = OUTPUT_NAME if args.dataset == "digits_canvas" else f"{OUTPUT_NAME}_events"
    write_json(out / f"{name}.json", document)
    write_text(out / f"{name}.md", _markdown(results, settings, header))
    return document


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except SpikequantError as exc:
        print(f"python -m spikequant.detection.report: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
