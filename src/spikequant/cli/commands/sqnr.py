"""``spikequant sqnr``: the ATIF paper's single-neuron SQNR study (fixed vs ATIF-u vs ATIF-nu)."""

from __future__ import annotations

import json
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "sqnr",
        help="single-neuron SQNR study: fixed threshold vs ATIF-u vs ATIF-nu",
        description="Gaussian input held for T steps, target ReLU(x); thresholds trained by Adam.",
    )
    p.add_argument("--timesteps", "-T", type=int, default=4, help="timesteps T (default 4)")
    p.add_argument(
        "--sigma", type=float, default=0.1, help="input standard deviation (default 0.1)"
    )
    p.add_argument("--iterations", type=int, default=8000, help="Adam iterations (default 8000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--alpha", type=float, default=8.0, help="sigmoid surrogate slope (default 8)")
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--eval-samples", type=int, default=1_000_000)
    p.add_argument(
        "--out", type=Path, default=None, help="output folder (default spikequant-reports)"
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument(
        "--json", action="store_true", help="print one JSON object to stdout instead of a table"
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from ..._optional import require
    from ...analysis.sqnr import (
        SQNRConfig,
        plot_quantization_curves,
        plot_sqnr_study,
        run_sqnr_study,
    )
    from ...io import (
        DEFAULT_REPORTS,
        check_output_dir,
        command_header,
        command_line,
        results_dir,
        write_json,
        write_text,
    )
    from ...train.distributed import resolve_device

    require("matplotlib", "the SQNR study's plot")  # before the study, not after it
    out = results_dir(check_output_dir(args.out) if args.out is not None else None, DEFAULT_REPORTS)
    cfg = SQNRConfig(
        timesteps=args.timesteps,
        sigma=args.sigma,
        iterations=args.iterations,
        seed=args.seed,
        alpha=args.alpha,
        lr=args.lr,
        eval_samples=args.eval_samples,
        eval_every=max(1, args.iterations // 80),
    )
    result = run_sqnr_study(cfg, device=resolve_device(args.device))
    suffix = "" if (cfg.timesteps, cfg.sigma) == (4, 0.1) else f"_T{cfg.timesteps}_s{cfg.sigma:g}"
    write_json(out / f"sqnr{suffix}.json", {"command": command_line(), **result})
    plot_sqnr_study(result, out / f"sqnr{suffix}.png")
    plot_quantization_curves(result, out / f"sqnr{suffix}_quantization.png")
    write_text(out / f"sqnr{suffix}.md", command_header() + markdown_table(result, f"sqnr{suffix}"))
    if args.json:
        print(json.dumps(result))
        return 0
    _print_table(result, out / f"sqnr{suffix}.json")
    return 0


def markdown_table(r: dict, stem: str = "sqnr") -> str:
    """The study's result as a Markdown table (written next to the JSON)."""
    c = r["config"]
    lines = [
        f"# Single-neuron SQNR study (T = {c['timesteps']}, sigma = {c['sigma']}, "
        f"{c['iterations']} iterations, seed {c['seed']}, surrogate alpha {c['alpha']})",
        "",
        "Written by `spikequant sqnr`; evaluated on "
        f"{c['eval_samples']:,} fresh samples (measured input std {r['input_std']:.4f}).",
        "",
        "| neuron | SQNR [dB] | threshold |",
        "|---|---|---|",
        f"| fixed V_th = 1 | {r['fixed']['sqnr_db']:.2f} | 1 |",
        f"| best uniform V_th (grid) | {r['best_fixed_grid']['sqnr_db']:.2f} "
        f"| {r['best_fixed_grid']['vth']:.3f} |",
        f"| ATIF-u (trained) | {r['atif_u']['sqnr_db']:.2f} | {r['atif_u']['vth']:.3f} "
        f"({r['atif_u']['vth_over_sigma']:.2f} sigma) |",
        f"| ATIF-nu (trained) | {r['atif_nu']['sqnr_db']:.2f} | levels "
        + ", ".join(f"{v:.3f}" for v in r["atif_nu"]["levels"])
        + " |",
        "",
        f"- ATIF-u gain over V_th = 1: {r['atif_u']['sqnr_db'] - r['fixed']['sqnr_db']:.2f} dB; "
        f"gap to the best uniform threshold: {r['atif_u_gap_to_best_db']:.2f} dB.",
        f"- Timesteps a fixed V_th = 1 needs to match ATIF-u: {r['fixed_t_to_match']}.",
        f"- ATIF-nu gain over ATIF-u: {r['atif_nu']['gain_over_atif_u_db']:.2f} dB; "
        "learned transfer "
        f"curve {'monotone' if r['atif_nu']['transfer_monotone'] else 'NOT monotone'}.",
        "- Fixed V_th = 1 by T: "
        + ", ".join(f"T={t}: {v:.2f} dB" for t, v in r["fixed_sqnr_by_t"].items()),
        f"- ATIF-u's threshold went from {r['atif_u']['history'][0][2]:.3f} (iteration "
        f"{r['atif_u']['history'][0][0]}) to {r['atif_u']['vth']:.3f}.",
        f"- IF quantization at T = {r['quantization_curves']['timesteps']}, V_th = 1: granular "
        f"error at most {r['quantization_curves']['max_granular_error']:.4f} (V_th / T = "
        f"{1 / r['quantization_curves']['timesteps']:.4f}); overload error up to "
        f"{r['quantization_curves']['max_overload_error']:.3f} at x = "
        f"{r['quantization_curves']['input'][-1]:g}.",
        "",
        f"![SQNR and threshold during training]({stem}.png)",
        f"![Quantization curves and error]({stem}_quantization.png)",
        "",
    ]
    return "\n".join(lines)


def _print_table(r: dict, path: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    T = r["config"]["timesteps"]
    table = Table(title=f"Single-neuron SQNR, T = {T}, input std {r['input_std']:.4f}")
    table.add_column("neuron")
    table.add_column("SQNR [dB]", justify="right")
    table.add_column("threshold", justify="right")
    table.add_row("fixed V_th = 1", f"{r['fixed']['sqnr_db']:.2f}", "1.000")
    table.add_row(
        "best uniform V_th (grid)",
        f"{r['best_fixed_grid']['sqnr_db']:.2f}",
        f"{r['best_fixed_grid']['vth']:.3f}",
    )
    table.add_row(
        "ATIF-u (trained)",
        f"{r['atif_u']['sqnr_db']:.2f}",
        f"{r['atif_u']['vth']:.3f} ({r['atif_u']['vth_over_sigma']:.2f} sigma)",
    )
    levels = ", ".join(f"{v:.3f}" for v in r["atif_nu"]["levels"])
    table.add_row("ATIF-nu (trained)", f"{r['atif_nu']['sqnr_db']:.2f}", f"levels {levels}")
    console = Console()
    console.print(table)
    match = r["fixed_t_to_match"]
    console.print(
        f"ATIF-u gains {r['atif_u']['sqnr_db'] - r['fixed']['sqnr_db']:.2f} dB over V_th = 1; "
        f"a fixed V_th = 1 needs T = {match} to match it. ATIF-nu adds "
        f"{r['atif_nu']['gain_over_atif_u_db']:.2f} dB (transfer curve "
        f"{'monotone' if r['atif_nu']['transfer_monotone'] else 'NOT monotone'})."
    )
    plots = f"{path.with_suffix('.png')} and {path.with_name(path.stem + '_quantization.png')}"
    console.print(f"wrote {path}, {path.with_suffix('.md')}, {plots}")
