"""``spikequant export CHECKPOINT --out model.nir``: write a trained network as a NIR graph."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export a checkpoint to NIR (neuromorphic intermediate representation, HDF5)",
        description=(
            "CHECKPOINT is a checkpoint folder or a run folder (its latest epoch). Sequential "
            "networks of conv/linear/BN/avg-pool/flatten layers and IF, LIF or ATIF-u neurons are "
            "supported; anything NIR cannot express exits with code 2 and names the module."
        ),
    )
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--out", type=Path, required=True, help="NIR file to write (e.g. model.nir)")
    p.add_argument(
        "--input-size",
        default=None,
        metavar="C,H,W",
        help="per-step input shape (default: the model's in_channels and input_size)",
    )
    p.add_argument(
        "--dt",
        type=float,
        default=1.0,
        help="simulation step the NIR time constants refer to (tau_NIR = dt * tau)",
    )
    p.add_argument(
        "--soft-reset",
        choices=("error", "metadata"),
        default="error",
        help="soft-reset neurons (IF default, ATIF-u): refuse (default) or export with a "
        "'spikequant_reset: subtract' metadata annotation",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def parse_input_size(text: str) -> tuple[int, ...]:
    from ...errors import ConfigError

    try:
        dims = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(
            f"--input-size must be comma-separated integers like 1,28,28, got {text!r}"
        ) from None
    if not dims or any(d < 1 for d in dims):
        raise ConfigError(f"--input-size needs positive sizes, got {text!r}")
    return dims


def default_input_size(model) -> tuple[int, ...]:
    from ...errors import ConfigError
    from ...models.common import SpikingModel, pair

    if not isinstance(model, SpikingModel):
        raise ConfigError("the model does not record its input shape; pass --input-size C,H,W")
    return (int(model.in_channels), *pair(model.input_size))


def run(args) -> int:
    import torch

    from ...checkpoint import load_model
    from ...export import to_nir, write_nir
    from ...models.common import SpikingModel
    from ...train.trainer import resolve_checkpoint

    folder = resolve_checkpoint(args.checkpoint)
    model, meta = load_model(folder)
    size = parse_input_size(args.input_size) if args.input_size else default_input_size(model)
    if isinstance(model, SpikingModel) and len(size) == model.static_ndim - 1:
        sample = torch.zeros(1, *size)  # a static sample: the model repeats it over its T steps
    else:
        sample = torch.zeros(1, 1, *size)  # one step of one sample, time-first
    graph = to_nir(model, sample, dt=args.dt, soft_reset=args.soft_reset)
    path = write_nir(args.out, graph)
    kinds = Counter(type(node).__name__ for node in graph.nodes.values())
    result = {
        "checkpoint": str(folder),
        "model": (meta.get("model") or {}).get("name"),
        "out": str(path),
        "bytes": path.stat().st_size,
        "input_shape": [int(v) for v in graph.nodes["input"].input_type["input"]],
        "output_shape": [int(v) for v in graph.nodes["output"].output_type["output"]],
        "dt": args.dt,
        "nodes": dict(sorted(kinds.items())),
    }
    if args.json:
        print(json.dumps(result))
    else:
        counts = ", ".join(f"{n} {k}" for k, n in result["nodes"].items())
        print(
            f"wrote {path} ({result['bytes']} bytes): {counts}; input {result['input_shape']}, "
            f"output {result['output_shape']}, dt = {args.dt}"
        )
    return 0
