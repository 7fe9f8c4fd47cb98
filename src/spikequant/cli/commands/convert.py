"""``spikequant convert CHECKPOINT --method rate|msat|calif --timesteps 1,2,4,...,256``.

Converts a trained ANN checkpoint into an SNN, sweeps the number of timesteps on the test split and
prints/saves accuracy vs T, spikes per neuron and the gap to the ANN (Markdown + JSON + PNG in the
run folder's reports/, or --out). Several methods separated by commas are compared in one table.
The method options (--calibration, --per-channel, --preset, --no-confidence, ...) are the fields of
each registered method's options dataclass; an option applies to every chosen method that has it.
With one method and one T, --save-run OUT also saves the converted network as a run folder that
`spikequant eval` and `spikequant export` take like any other run.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from ...errors import ConfigError

#: option fields the command fills itself (from the checkpoint and --seed)
AUTOMATIC_FIELDS = ("architecture", "seed")


MAX_CONVERT_TIMESTEPS = 4096  # the bound of method.convert.timesteps in QAT recipes


def parse_timesteps(text: str) -> list[int]:
    """``"1,2,4,...,256"`` -> 1, 2, ..., 256. The ellipsis continues the integer ratio of the last
    two values (``8,16,...,128``) unless three values before it are evenly spaced
    (``10,20,30,...,60``) or the ratio is not an integer, then it continues their difference."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    values: list[int] = []
    try:
        for i, part in enumerate(parts):
            if part in ("...", "…"):
                if len(values) < 2 or i + 1 >= len(parts):
                    raise ConfigError("'...' needs two values before it and one after it")
                end = int(parts[i + 1])
                a, b = values[-2], values[-1]
                arithmetic = len(values) >= 3 and b - a == a - values[-3]
                geometric = not arithmetic and b % a == 0 and b // a > 1
                ratio, stride = (b // a, 0) if geometric else (1, b - a)
                v = b * ratio + stride
                while v < end and b > a:
                    values.append(v)
                    v = v * ratio + stride
            else:
                values.append(int(part))
    except ValueError:
        raise ConfigError(
            f"--timesteps must be integers separated by commas, got {text!r}"
        ) from None
    if not values or min(values) < 1 or max(values) > MAX_CONVERT_TIMESTEPS:
        raise ConfigError(
            f"--timesteps must be integers in 1..{MAX_CONVERT_TIMESTEPS}, got {text!r}"
        )
    return sorted(set(values))


def register(sub) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a trained ANN checkpoint to an SNN and sweep accuracy vs timesteps",
        description=__doc__,
    )
    p.add_argument("checkpoint", help="checkpoint folder (from `spikequant train` with kind: qat)")
    p.add_argument(
        "--method",
        default="rate",
        help="rate, msat or calif; a comma list compares several (default rate)",
    )
    p.add_argument("--timesteps", default="1,2,4,...,256", help="e.g. 1,2,4,...,256 or 8,16,32")
    add_method_options(p)
    p.add_argument("--calibration-samples", type=int, default=512)
    p.add_argument(
        "--test-samples", type=int, default=None, help="evaluate on the first N test images"
    )
    p.add_argument(
        "--check-exact",
        action="store_true",
        help="calif: include T = 2^bits in the sweep (every layer's integer activations are "
        "always compared with the quantized ANN at the sweep's largest T)",
    )
    p.add_argument(
        "--name", default=None, help="report file stem (default convert-<checkpoint>-<methods>)"
    )
    p.add_argument("--out", default=None, help="report folder (default: the run folder's reports/)")
    p.add_argument(
        "--save-run",
        default=None,
        metavar="OUT",
        help="save the converted network as a run folder OUT (needs exactly one --method and "
        "one --timesteps value, the T its forward runs)",
    )
    p.add_argument(
        "--device",
        default="auto",
        help="auto | cpu | cuda | cuda:N: where the conversion and the sweep run (default auto)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def method_option_fields() -> dict[str, tuple[dataclasses.Field, list[str]]]:
    """CLI flag -> (options field, methods having it), over every registered method."""
    from ...convert import list_methods, method_class

    flags: dict[str, tuple[dataclasses.Field, list[str]]] = {}
    for method in list_methods():
        for f in dataclasses.fields(method_class(method).Options):
            if f.name in AUTOMATIC_FIELDS:
                continue
            flag = f.metadata.get("flag", "--" + f.name.replace("_", "-"))
            flags.setdefault(flag, (f, []))[1].append(method)
    return flags


def add_method_options(p) -> None:
    for flag, (f, methods) in method_option_fields().items():
        help_text = f"{f.metadata.get('help', f.name)} ({', '.join(methods)}; default {f.default})"
        dest = f"option_{f.name}"
        if isinstance(f.default, bool):
            p.add_argument(
                flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
            continue
        choices = [c for c in f.metadata.get("choices", ()) if c is not None] or None
        kind = type(f.default) if f.default is not None else str
        p.add_argument(flag, dest=dest, type=kind, choices=choices, default=None, help=help_text)


def method_options(args, methods: list[str], architecture: str) -> dict[str, dict]:
    """Per method, the options given on the command line (plus architecture and seed)."""
    from ...convert import method_class

    options = {}
    for method in methods:
        own = {}
        for f in dataclasses.fields(method_class(method).Options):
            if f.name == "architecture":
                own[f.name] = architecture
            elif f.name == "seed":
                own[f.name] = args.seed
            elif getattr(args, f"option_{f.name}", None) is not None:
                own[f.name] = getattr(args, f"option_{f.name}")
        options[method] = own
    return options


def run(args) -> int:
    import torch

    from ..._optional import require
    from ...convert import list_methods
    from ...convert.evaluate import compare_methods, write_report
    from ...data import load_arrays
    from ...pipeline import load_run_model, require_ann, run_data_root

    require("matplotlib", "the conversion report's plot")  # before the sweep, not after it
    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    unknown = [m for m in methods if m not in list_methods()]
    if not methods or unknown:
        raise ConfigError(
            f"--method must be among {', '.join(list_methods())}, got {args.method!r}"
        )
    timesteps = parse_timesteps(args.timesteps)
    if args.test_samples is not None and args.test_samples < 1:
        raise ConfigError("--test-samples must be >= 1")
    if args.calibration_samples < 1:
        raise ConfigError("--calibration-samples must be >= 1")
    if args.save_run is not None and (len(methods) != 1 or len(timesteps) != 1):
        raise ConfigError(
            "--save-run saves one network: give exactly one --method and one --timesteps value "
            f"(got --method {args.method} --timesteps {args.timesteps})"
        )
    saved_timesteps = timesteps[0]  # --check-exact may add T = 2^bits to the sweep below
    from ...io import check_output_dir, run_reports_dir
    from ...train.distributed import resolve_device

    device = resolve_device(args.device)
    if args.out is not None:
        check_output_dir(args.out)
    if args.save_run is not None:
        check_save_run(Path(args.save_run))
    torch.manual_seed(args.seed)
    model, meta = load_run_model(args.checkpoint)
    require_ann(meta, args.checkpoint)
    model.eval().to(device)
    # the run's reports/ folder by default: a report never lands in the current directory
    out = args.out if args.out is not None else check_output_dir(run_reports_dir(args.checkpoint))
    dataset, root = meta.get("dataset", "mnist5k"), run_data_root(meta)
    # only the images used are decoded (a file dataset's spread evenly over its classes)
    x_train, _ = load_arrays(dataset, "train", root, limit=args.calibration_samples)
    x_test, y_test = load_arrays(dataset, "test", root, limit=args.test_samples)
    # the whole sweep runs on the device: the data moves there once
    x_train = x_train.to(device)
    x_test, y_test = x_test.to(device), y_test.to(device)
    if args.check_exact and "calif" in methods:
        bits = int(meta["model"].get("kwargs", {}).get("bits", 8))
        timesteps = sorted({*timesteps, 2**bits})
    arch = meta["model"]["name"]
    if arch == "ann_cnn" and meta["model"].get("kwargs", {}).get("residual"):
        arch = "ann_cnn_residual"
    options = method_options(args, methods, arch)
    report = compare_methods(
        model,
        methods,
        x_train,
        x_test,
        y_test,
        timesteps,
        options=options,
        calibration_size=args.calibration_samples,
    )
    report.update(
        {
            "checkpoint": str(args.checkpoint),
            "model": meta["model"],
            "dataset": dataset,
            "options": options,
        }
    )
    stem = args.name or f"convert-{Path(args.checkpoint).name}-{'-'.join(methods)}"
    paths = write_report(
        report, stem, out, title=f"{Path(args.checkpoint).name}: {', '.join(methods)}"
    )
    print_report(report)
    print(f"saved: {paths['markdown']}, {paths['json']}, {paths['png']}")
    if args.save_run is not None:
        save_run(args, model, meta, methods[0], saved_timesteps, x_train, options[methods[0]])
    return 0


def check_save_run(folder: Path) -> None:
    """--save-run: writable and holding no run, before any work."""
    from ...errors import RunFolderError
    from ...runfolder import check_writable, holds_run

    if holds_run(folder):
        raise RunFolderError(f"--save-run {folder} already holds a run; choose another folder")
    check_writable(folder)


def save_run(args, model, meta: dict, method: str, timesteps: int, calibration, opts) -> None:
    """Convert again with the sweep's method, options and calibration images (the conversion is
    deterministic: the same network the sweep measured) and save it as a run folder."""
    from ...convert import convert, save_converted

    net = convert(model, method, calibration, timesteps=timesteps, **opts)
    folder = save_converted(net, args.save_run, source_model=model, source_meta=meta)
    print(
        f"saved the {method} network at T = {timesteps} as a run: {args.save_run} ({folder.name})"
    )


def print_report(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ANN accuracy {100 * report['ann_accuracy']:.2f} %")
    table.add_column("T", justify="right")
    for m in report["methods"]:
        table.add_column(f"{m} acc %", justify="right")
        table.add_column(f"{m} gap (points)", justify="right")
        table.add_column(f"{m} spikes/neuron", justify="right")
    for i, t in enumerate(report["timesteps"]):
        cells = []
        for entry in report["methods"].values():
            row = entry["rows"][i]
            cells += [
                f"{100 * row['accuracy']:.2f}",
                f"{100 * row['gap_to_ann']:+.2f}",
                f"{row['spikes_per_neuron']:.3f}",
            ]
        table.add_row(str(t), *cells)
    console = Console()
    console.print(table)
    for m, entry in report["methods"].items():
        console.print(
            f"{m}: within 1 point of the ANN first at T = {entry['within_1_point_at_T']}, "
            f"and from T = {entry.get('settled_within_1_point_at_T')} on"
        )
    if "calif_exactness" in report:
        ex = report["calif_exactness"]
        bad = sum(v["mismatch_vs_decoded_input"] for v in ex["layers"].values())
        console.print(
            f"calif at T = {ex['T']}: {bad} integer activations differ from the quantized ANN "
            f"over {len(ex['layers'])} layers"
        )
