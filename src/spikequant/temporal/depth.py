"""Per-layer statistics of a TTFS network at initialisation: how spike times, silence, the number
of independent signals and the gradient change with depth.

    python -m spikequant.temporal.depth ttfs_vgg16 --kwargs '{input_shape: [1, 28, 28]}'
        [--data mnist5k] [--samples 50] [--init paper signed] [--init-row-sum 4]
        [--out docs/results]

For every dense/conv layer (in the order they run) and every ``--init``: the mean weight-row sum
``W`` (bias included), the mean and range of the output spike times ``t = ln z`` of the spiking
neurons, the fraction of silent neurons, the participation ratio ``(sum s^2)^2 / sum s^4`` of the
singular values ``s`` of ``t`` centred over the samples (the effective number of independent
signals the layer carries; 1 = every neuron carries the same signal) and the mean per-sample norm of
``dL/dz`` at the layer's output for the cross-entropy on ``-z``. Writes ``<out>/<name>.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from .solver import DEFAULT_Z_MAX


def participation_ratio(z: torch.Tensor, z_max: float = DEFAULT_Z_MAX) -> float:
    """``(sum s^2)^2 / sum s^4`` of the singular values of ``ln z`` (silent at ``ln z_max``)
    centred over the samples (dim 0)."""
    t = torch.log(z.clamp(max=z_max)).flatten(1)
    s = torch.linalg.svdvals(t - t.mean(0))
    return float((s**2).sum() ** 2 / (s**4).sum())


def layer_statistics(model, pixels: torch.Tensor, labels: torch.Tensor) -> list[dict]:
    """One dict per dense/conv layer of ``model`` (a :class:`~spikequant.temporal.TTFSNet`)."""
    from .layers import ttfs_weighted_layers

    layers = ttfs_weighted_layers(model)
    outputs: list[torch.Tensor] = []

    def keep(_module, _inputs, out):
        out.retain_grad()
        outputs.append(out)

    handles = [layer.register_forward_hook(keep) for layer in layers]
    try:
        z_out = model(pixels)
        F.cross_entropy(-z_out, labels).backward()
    finally:
        for handle in handles:
            handle.remove()
    rows = []
    for layer, z in zip(layers, outputs, strict=True):
        grad, z = z.grad, z.detach()
        spiking = z < model.z_max
        t = torch.log(z[spiking])
        rows.append(
            {
                "kind": type(layer).__name__.removeprefix("TTFS"),
                "neurons": z[0].numel(),
                "row_sum": float(layer.weight_sums().detach().mean()),
                "t_mean": float(t.mean()) if t.numel() else float("nan"),
                "t_min": float(t.min()) if t.numel() else float("nan"),
                "t_max": float(t.max()) if t.numel() else float("nan"),
                "silent": float((~spiking).float().mean()),
                "participation_ratio": participation_ratio(z, model.z_max),
                "grad_norm": float(grad.flatten(1).norm(dim=1).mean()),
            }
        )
    return rows


def markdown(command: str, model_name: str, kwargs: dict, tables: dict, extra: dict) -> str:
    lines = [f"Command: `{command}`", "", f"# TTFS layer statistics at init: {model_name}", ""]
    lines.append(f"Model `{model_name}` {kwargs}; {extra['samples']} samples of `{extra['data']}`.")
    lines.append("")
    for init, rows in tables.items():
        head = extra["heads"][init]
        lines += [f"## init `{init}`", "", head, ""]
        lines += [
            "| layer | kind | neurons | row sum | t mean | t min | t max | silent | "
            "participation ratio | mean abs dL/dz |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for i, r in enumerate(rows):
            lines.append(
                f"| {i} | {r['kind']} | {r['neurons']} | {r['row_sum']:.2f} | {r['t_mean']:.2f} "
                f"| {r['t_min']:.2f} | {r['t_max']:.2f} | {r['silent']:.2f} "
                f"| {r['participation_ratio']:.2f} | {r['grad_norm']:.2e} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import yaml

    import spikequant as sq

    from ..data.registry import load_arrays
    from ..errors import SpikequantError
    from ..io import command_line, results_dir, write_text

    parser = argparse.ArgumentParser(prog="python -m spikequant.temporal.depth")
    parser.add_argument("model")
    parser.add_argument("--kwargs", default="{}", help="model kwargs as YAML/JSON")
    parser.add_argument("--data", default="mnist5k")
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--init", nargs="+", default=["paper", "signed"])
    parser.add_argument("--init-row-sum", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default=None, help="report stem (default ttfs_depth_<model>)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    command = command_line(argv, "spikequant.temporal.depth")
    try:
        kwargs = yaml.safe_load(args.kwargs) or {}
        if not isinstance(kwargs, dict):
            print("error: --kwargs must be a mapping", file=sys.stderr)
            return 2
        pixels, labels = load_arrays(args.data, "train")
        pixels, labels = pixels[: args.samples].float(), labels[: args.samples].long()
        tables, heads = {}, {}
        for init in args.init:
            torch.manual_seed(args.seed)
            model = sq.create_model(args.model, **kwargs, init=init, init_row_sum=args.init_row_sum)
            tables[init] = layer_statistics(model, pixels, labels)
            z = model(pixels).detach()
            spread = (z.max(1).values - z.min(1).values).median()
            heads[init] = (
                f"Output: median z {float(z.median()):.1f}, median spread of z over the classes "
                f"{float(spread):.1f} (the logits of the softmax on -z)."
            )
    except SpikequantError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = results_dir(args.out, "spikequant-reports")
    stem = args.name or f"ttfs_depth_{args.model.removeprefix('ttfs_')}"
    extra = {"samples": args.samples, "data": args.data, "heads": heads}
    write_text(out / f"{stem}.md", markdown(command, args.model, kwargs, tables, extra))
    print(f"wrote {out / stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
