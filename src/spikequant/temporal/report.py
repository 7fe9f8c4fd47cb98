"""Train a TTFS recipe and write its report (JSON + Markdown) into the run folder or ``--out``.

    python -m spikequant.temporal.report ttfs-fc100 [--set train.epochs=6] [--run-dir runs/x]
        [--out docs/results]

Writes ``<out>/ttfs_<recipe name>.json`` (the run's metrics, the recipe, the command) and
``.md`` (per-epoch test accuracy, spiking fraction, energy). The checkpoint stays in the run
folder, ready for ``spikequant robustness``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def markdown(metrics: dict, cfg: dict, command: str) -> str:
    lines = [
        f"Command: `{command}`",
        "",
        f"# TTFS training report: {metrics['name']}",
        "",
        f"Dataset `{metrics['dataset']}`, model `{metrics['model']['name']}` "
        f"{metrics['model']['kwargs']}, batch {cfg['data']['batch_size']}.",
        "",
        f"Final ({metrics['weight_bits']}-bit weights): test accuracy "
        f"**{metrics['test_accuracy']:.4f}**, "
        f"fraction of neurons spiking {metrics['fraction_spiking']:.3f} (the paper's 'sparsity'), "
        f"{metrics['n_weights']} weights, energy {metrics['energy_nJ']:.1f} nJ per inference "
        "(n_weights x fraction spiking x 10 pJ).",
        "",
        "| epoch | weight bits | lr | train loss | test accuracy | fraction spiking | seconds |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for h in metrics["history"]:
        lines.append(
            f"| {h['epoch']} | {h['bits']} | {h['lr']:.2e} | {h['train_loss']:.4f} "
            f"| {h['test_accuracy']:.4f} | {h['fraction_spiking']:.3f} | {h['seconds']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from ..config import load_recipe, run_recipe
    from ..errors import SpikequantError
    from ..io import command_line, results_dir, write_json, write_text

    parser = argparse.ArgumentParser(prog="python -m spikequant.temporal.report")
    parser.add_argument("recipe")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--run-dir", type=Path, default=None, help="checkpoint folder (runs/<name>)"
    )
    parser.add_argument("--name", default=None, help="report stem (default ttfs_<recipe name>)")
    parser.add_argument(
        "--out", type=Path, default=None, help="report folder (default: the run folder)"
    )
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--overwrite", action="store_true", help="replace a run in --run-dir")
    args = parser.parse_args(argv)
    command = command_line(argv, "spikequant.temporal.report")
    try:
        cfg = load_recipe(args.recipe, args.overrides)
        run_dir = args.run_dir or Path("runs") / str(cfg["name"])
        metrics = run_recipe(
            cfg, out_dir=run_dir, resume=args.resume, overwrite=args.overwrite, progress=True
        )
    except SpikequantError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stem = args.name or f"ttfs_{str(cfg['name']).removeprefix('ttfs-').replace('-', '_')}"
    out = results_dir(args.out, run_dir)
    write_json(
        out / f"{stem}.json",
        {"command": command, "run_dir": str(run_dir), "recipe": cfg, **metrics},
    )
    write_text(out / f"{stem}.md", markdown(metrics, cfg, command))
    print(f"wrote {out / stem}.json and .md; checkpoint in {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
