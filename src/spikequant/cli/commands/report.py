"""``spikequant report RUN [RUN ...]``: one self-contained HTML page comparing training runs."""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "report",
        help="HTML page comparing runs: loss/accuracy curves, accuracy vs T, firing rates, "
        "thresholds, SynOps",
        description=(
            "Reads each RUN folder's metrics.json (or metrics.jsonl while it trains) and writes "
            "one HTML file with the plots embedded (matplotlib, base64 PNG): no other file is "
            "needed to view it."
        ),
    )
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run folders")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="FILE.html",
        help="where to write the page (default: the first run's folder, RUN/report.html)",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from ...analysis.run_report import write_report

    path, shown = write_report(args.runs, args.out)
    print(f"wrote {path}: {len(args.runs)} run(s); plots: {', '.join(shown) or 'none'}")
    return 0
