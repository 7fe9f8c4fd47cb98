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
        default=None,
        help="simulation step the NIR time constants refer to (tau_NIR = dt * tau; default 1, "
        "or the --target's)",
    )
    p.add_argument(
        "--target",
        choices=("snntorch", "norse", "spikingjelly", "lava"),
        default=None,
        help="write the graph for this reader: its dt, reset, threshold, pooling and Flatten "
        "conventions (docs/export.md, 'Export presets')",
    )
    p.add_argument(
        "--soft-reset",
        choices=("error", "metadata"),
        default="error",
        help="soft-reset neurons (IF default, ATIF-u): refuse (default) or export with a "
        "'spikequant_reset: subtract' metadata annotation",
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="read the file back, import it, and compare accuracy and spikes with the "
        "original on the checkpoint's test split",
    )
    p.add_argument(
        "--dataset", default=None, help="dataset for --verify (default: the trained one)"
    )
    p.add_argument("--root", default=None, help="dataset folder (for datasets read from disk)")
    p.add_argument("--subset", type=int, default=None, help="--verify on the first N samples")
    p.add_argument(
        "--report",
        default=None,
        metavar="NAME",
        help="also write the result to NAME.json and NAME.md in --report-dir",
    )
    p.add_argument(
        "--report-dir",
        type=Path,
        default=None,
        help="folder of the --report files (default: the run's reports/ folder)",
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


def converted_chain(model, meta: dict):
    """A converted run as a chain to_nir walks: rate conversions only (IF, soft reset); the other
    methods refuse in one line naming why."""
    from ...convert.chain import rate_chain
    from ...convert.saved import NIR_REFUSALS, refusal
    from ...errors import ConversionError

    if meta["conversion"]["method"] != "rate":
        raise ConversionError(refusal(meta, NIR_REFUSALS, "NIR export"))
    return rate_chain(model)


def converted_input_size(meta: dict) -> tuple[int, ...]:
    """The image shape of a converted run's source ANN (its model kwargs; 1 x 28 x 28 digits by
    default), for the NIR graph's input."""
    kwargs = (meta.get("model") or {}).get("kwargs") or {}
    if "in_shape" in kwargs:
        return tuple(int(d) for d in kwargs["in_shape"])
    size = kwargs.get("input_size", 28)
    h, w = (size, size) if isinstance(size, int) else size
    return (int(kwargs.get("in_channels", 1)), int(h), int(w))


def run(args) -> int:
    import torch

    from ...export import to_nir, write_nir
    from ...io import check_output_dir, check_output_file, results_dir, run_reports_dir
    from ...models.common import SpikingModel
    from ...pipeline import load_run_model
    from ...train.trainer import resolve_checkpoint

    check_output_file(args.out)
    if args.report_dir is not None:
        check_output_dir(args.report_dir, "--report-dir")
    folder = resolve_checkpoint(args.checkpoint)
    model, meta = load_run_model(folder)
    from ...convert.saved import is_converted

    converted = is_converted(meta)
    if converted:
        model = converted_chain(model, meta)
        size = parse_input_size(args.input_size) if args.input_size else converted_input_size(meta)
    else:
        size = parse_input_size(args.input_size) if args.input_size else default_input_size(model)
    if converted:
        sample = torch.zeros(1, *size)  # a static image: the chain repeats it over its T steps
    elif isinstance(model, SpikingModel) and len(size) == model.static_ndim - 1:
        sample = torch.zeros(1, *size)  # a static sample: the model repeats it over its T steps
    else:
        sample = torch.zeros(1, 1, *size)  # one step of one sample, time-first
    if args.target is not None:
        from ...errors import ConfigError
        from ...export.targets import TARGETS, adapt_graph

        preset = TARGETS[args.target]
        if args.dt is not None and args.dt != preset.dt:
            raise ConfigError(f"--target {args.target} writes dt = {preset.dt:g}; drop --dt")
        if args.verify:
            raise ConfigError(
                "--verify checks the plain NIR file with spikequant's reader; export without "
                "--target to verify (the presets are tested against each library)"
            )
        args.dt = preset.dt
    elif args.dt is None:
        args.dt = 1.0
    graph = to_nir(model, sample, dt=args.dt, soft_reset=args.soft_reset)
    if args.target is not None:
        graph = adapt_graph(graph, preset)
    path = write_nir(args.out, graph)
    kinds = Counter(type(node).__name__ for node in graph.nodes.values())
    result = {
        "checkpoint": str(folder),
        "model": (meta.get("model") or {}).get("name"),
        "recipe": (meta.get("recipe") or {}).get("name"),
        "out": str(path),
        "bytes": path.stat().st_size,
        "input_shape": [int(v) for v in graph.nodes["input"].input_type["input"]],
        "output_shape": [int(v) for v in graph.nodes["output"].output_type["output"]],
        "dt": args.dt,
        "target": args.target,
        "nodes": dict(sorted(kinds.items())),
    }
    if args.verify:
        result["verify"] = verify(args, model, meta, path)
    if args.report:
        write_report(args.report, result, results_dir(args.report_dir, run_reports_dir(folder)))
    if args.json:
        print(json.dumps(result))
    else:
        counts = ", ".join(f"{n} {k}" for k, n in result["nodes"].items())
        print(
            f"wrote {path} ({result['bytes']} bytes): {counts}; input {result['input_shape']}, "
            f"output {result['output_shape']}, dt = {args.dt}"
            + (f", for {args.target}" if args.target else "")
        )
        if args.verify:
            v = result["verify"]
            print(
                f"round trip on {v['samples']} {v['dataset']} samples: accuracy "
                f"{100 * v['accuracy_original']:.2f} % -> {100 * v['accuracy_imported']:.2f} %, "
                f"predictions agree {100 * v['prediction_agreement']:.2f} %, spike entries "
                f"differing {v['spike_entries_differing']} of {v['spike_entries']}, "
                f"max |logit difference| {v['max_abs_logit_difference']:.3g}; under NIR "
                f"semantics (other tools): accuracy {100 * v['nir_semantics']['accuracy']:.2f} %"
            )
    return 0


def verify(args, model, meta: dict, path: Path) -> dict:
    """Re-read ``path``, import it and compare it with ``model`` on real test data."""
    from ...data import load_arrays
    from ...errors import ConfigError
    from ...export import from_nir, read_nir
    from ...export.verify import compare_networks
    from ...pipeline import run_data_root

    dataset = args.dataset or meta.get("dataset")
    if dataset is None:
        raise ConfigError("the checkpoint does not record its dataset; pass --dataset for --verify")
    timesteps = getattr(model, "timesteps", None)
    if timesteps is None:
        raise ConfigError("--verify needs a registered model (it records its timesteps)")
    if args.subset is not None and args.subset < 1:
        raise ConfigError(f"--subset must be positive, got {args.subset}")
    root = args.root or run_data_root(meta)
    inputs, labels = load_arrays(dataset, "test", root=root, limit=args.subset)
    graph = read_nir(path)
    imported = from_nir(graph)
    report = compare_networks(
        model, imported, inputs, labels, timesteps=int(timesteps), graph=graph
    )
    return {"dataset": dataset, "split": "test", **report}


def write_report(name: str, result: dict, folder: Path) -> None:
    from ...io import command_header, command_line, write_json, write_text

    write_json(folder / f"{name}.json", {"command": command_line(), **result})
    nodes = ", ".join(f"{n} {k}" for k, n in result["nodes"].items())
    lines = [
        command_header().rstrip("\n"),
        "",
        f"# NIR export of `{result['checkpoint']}`",
        "",
        f"Model {result['model']} (recipe {result['recipe']}).",
        "",
        f"- file: {result['bytes']} bytes, dt = {result['dt']}, input {result['input_shape']}, "
        f"output {result['output_shape']}",
        f"- nodes: {nodes}",
    ]
    v = result.get("verify")
    if v:
        nir_view = v["nir_semantics"]
        lines += [
            f"- round trip (export -> nir.write -> nir.read -> import) on {v['samples']} "
            f"{v['dataset']} test samples, T = {v['timesteps']}:",
            "",
            "| quantity | value |",
            "|---|---|",
            f"| accuracy, original | {100 * v['accuracy_original']:.2f} % |",
            f"| accuracy, imported | {100 * v['accuracy_imported']:.2f} % |",
            f"| predictions that agree | {100 * v['prediction_agreement']:.2f} % |",
            f"| spike entries that differ | {v['spike_entries_differing']} of "
            f"{v['spike_entries']} |",
            f"| max abs logit difference | {v['max_abs_logit_difference']:.3g} |",
            "| accuracy under NIR semantics (reference simulator, metadata ignored) | "
            f"{100 * nir_view['accuracy']:.2f} % |",
            "| predictions agreeing under NIR semantics | "
            f"{100 * nir_view['prediction_agreement']:.2f} % |",
            "",
            "| layer | spikes (original) | spikes (imported) | entries differing |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {i} | {layer['spikes_original']} | {layer['spikes_imported']} | "
            f"{layer['differing']} |"
            for i, layer in enumerate(v["layers"])
        ]
    write_text(folder / f"{name}.md", "\n".join(lines) + "\n")
