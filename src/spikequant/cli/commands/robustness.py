"""``spikequant robustness CHECKPOINT``: a trained TTFS network under weight quantization, weight
noise and input timing jitter, without retraining (JSON + Markdown + PNG in the run's reports/
folder, or --out)."""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "robustness",
        help="TTFS robustness: accuracy vs weight bits / weight-noise SNR, input vs output jitter",
        description="Loads a TTFS checkpoint (`spikequant train recipes/ttfs-*.yaml`), evaluates "
        "it on the test split of its dataset. No retraining.",
    )
    p.add_argument(
        "checkpoint", type=Path, help="checkpoint folder (model.safetensors + meta.json)"
    )
    p.add_argument(
        "--bits", type=int, nargs="+", default=None, help="weight bits (default 32 16 8 6 4 3 2)"
    )
    p.add_argument(
        "--snr",
        type=float,
        nargs="+",
        default=None,
        help="weight-noise SNR in dB (default 10 15 20 25 30 35 40 50)",
    )
    p.add_argument(
        "--jitter",
        type=float,
        nargs="+",
        default=None,
        help="relative input jitter (default 0.01 0.03 0.05 0.07 0.09)",
    )
    p.add_argument("--seeds", type=int, default=3, help="noise draws per SNR (default 3)")
    p.add_argument(
        "--range-quantile",
        type=float,
        default=1.0,
        help="quantizer range: this quantile of |w| (default 1 = max|w|, the spec)",
    )
    p.add_argument(
        "--dataset", default=None, help="dataset (default: the one named in the checkpoint)"
    )
    p.add_argument(
        "--test-limit", type=int, default=None, help="evaluate on the first N test samples"
    )
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument(
        "--name", default=None, help="file stem (default ttfs_robustness_<checkpoint folder>)"
    )
    p.add_argument(
        "--out", type=Path, default=None, help="output folder (default the run's reports/)"
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from ...data import load_arrays
    from ...errors import CheckpointError, ConfigError
    from ...io import results_dir, run_reports_dir
    from ...pipeline import load_run_model, run_data_root
    from ...temporal import TTFSNet
    from ...temporal.robustness import (
        DEFAULT_BITS,
        DEFAULT_JITTER,
        DEFAULT_SNR_DB,
        robustness_study,
        write_report,
    )
    from ...train.distributed import resolve_device

    check_study_values(args)
    if args.out is not None:
        from ...io import check_output_dir

        check_output_dir(args.out)
    device = resolve_device(args.device)
    model, meta = load_run_model(args.checkpoint)
    if not isinstance(model, TTFSNet):
        raise CheckpointError(
            f"{args.checkpoint} holds a {meta['model']['name']!r} model, not a TTFS network"
        )
    if args.batch_size < 1 or (args.test_limit is not None and args.test_limit < 1):
        raise ConfigError("--batch-size and --test-limit must be >= 1")
    model.to(device)
    dataset = args.dataset or meta.get("dataset", "mnist5k")
    X, y = load_arrays(dataset, "test", run_data_root(meta), limit=args.test_limit)
    result = robustness_study(
        model,
        X.float(),
        y.long(),
        bits=args.bits or DEFAULT_BITS,
        snrs=args.snr or DEFAULT_SNR_DB,
        jitters=args.jitter or DEFAULT_JITTER,
        seeds=args.seeds,
        batch_size=args.batch_size,
        meta=meta,
        range_quantile=args.range_quantile,
    )
    result = {
        "checkpoint": str(args.checkpoint),
        "dataset": dataset,
        "model": meta["model"],
        **result,
    }
    stem = args.name or f"ttfs_robustness_{Path(args.checkpoint).resolve().name}"
    paths = write_report(result, results_dir(args.out, run_reports_dir(args.checkpoint)), stem)
    base = result["baseline"]
    print(
        f"baseline accuracy {base['accuracy']:.4f}, spiking {base['fraction_spiking']:.3f}, "
        f"energy {base['energy_nJ']:.1f} nJ"
    )
    for r in result["accuracy_vs_bits"]:
        print(f"  {r['bits']:>2} bits: {r['accuracy']:.4f}")
    for r in result["accuracy_vs_snr"]:
        print(f"  {r['snr_db']:>4g} dB: {r['accuracy']:.4f} +- {r['accuracy_std']:.4f}")
    for r in result["jitter"]:
        print(f"  jitter in {100 * r['input_jitter']:.1f}% -> out {100 * r['output_jitter']:.3f}%")
    print(f"wrote {paths['json']}, {paths['md']}, {paths['png']}")
    return 0


def check_study_values(args) -> None:
    """Refuse non-finite or out-of-range study values before any work."""
    import math

    from ...errors import ConfigError

    for value in args.snr or []:
        if not math.isfinite(value):
            raise ConfigError(f"--snr takes finite dB values, got {value}")
    for value in args.jitter or []:
        if not (math.isfinite(value) and 0 <= value < 1):
            raise ConfigError(f"--jitter takes relative jitters in [0, 1), got {value}")
    if not (math.isfinite(args.range_quantile) and 0 < args.range_quantile <= 1):
        raise ConfigError(f"--range-quantile must be in (0, 1], got {args.range_quantile}")
    if args.seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {args.seeds}")
