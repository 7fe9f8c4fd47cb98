"""``spikequant`` command line. Each sub-command lives in ``cli/commands/<name>.py`` and exposes
``register(subparsers)``; they are discovered automatically, so adding a command touches one file.

Every deliberate error (bad option, config, data or checkpoint) prints one line and exits with 2.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from ..errors import SpikequantError
from . import commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spikequant",
        description="Low-latency, low-precision spiking neural networks "
        "(ATIF, MSAT, Ca-LIF, TTFS, SpQuant).",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"%(prog)s {importlib.import_module('spikequant').__version__}",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if argv is None:
        # Our own process: keep freed tensor memory for reuse (see kernels.retain_freed_memory).
        from ..kernels import retain_freed_memory

        retain_freed_memory()
    try:
        result = args.func(args)
    except SpikequantError as exc:
        print(f"spikequant {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        print(f"spikequant {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"spikequant {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
