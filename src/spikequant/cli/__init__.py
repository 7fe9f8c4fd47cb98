"""``spikequant`` command line. Each sub-command lives in ``cli/commands/<name>.py`` and exposes
``register(subparsers)``; they are discovered automatically, so adding a command touches one file.

Every expected failure (bad option, config, data, checkpoint, I/O, memory bound) prints one line
and exits with 2; an unexpected one prints one line and exits with 1 (``--debug`` shows the
traceback instead).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from ..errors import SpikequantError
from . import commands


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad option is one line on stderr (exit 2) like every other bad input."""

    def error(self, message: str):
        text = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {text} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="spikequant",
        description="Low-latency, low-precision spiking neural networks "
        "(ATIF, MSAT, Ca-LIF, TTFS, SpQuant).",
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an unexpected error"
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"%(prog)s {importlib.import_module('spikequant').__version__}",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    raw = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in raw  # accepted anywhere on the line, not only before the command
    try:
        args = parser.parse_args([a for a in raw if a != "--debug"])
    except SystemExit as exc:  # --help (0) or a bad option (2, already said in one line)
        return exc.code if isinstance(exc.code, int) else 2
    args.debug = debug
    args.argv = None if argv is None else [a for a in raw if a != "--debug"]
    if argv is None:
        # Our own process: keep freed tensor memory for reuse (see kernels.retain_freed_memory).
        from ..kernels import retain_freed_memory

        retain_freed_memory()
    try:
        result = args.func(args)
    except SpikequantError as exc:
        return _fail(args, str(exc), 2)
    except OSError as exc:  # files and folders: missing, unreadable, read-only, loops, full disk
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        return _fail(args, f"{where}{exc.strerror or exc}", 2)
    except MemoryError:
        return _fail(args, "out of memory; use smaller sizes, batches or T", 2)
    except KeyboardInterrupt:
        print(f"spikequant {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        if isinstance(exc, RuntimeError) and _is_allocation_failure(exc):
            return _fail(args, "out of memory; use smaller sizes, batches or T", 2)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return _fail(
            args,
            f"internal error ({type(exc).__name__}: {first}); run with --debug for the traceback",
            1,
        )
    finally:
        from ..train.distributed import teardown

        teardown()
    return int(result or 0)


def _fail(args, message: str, code: int) -> int:
    if args.debug and code == 2:
        import traceback

        traceback.print_exc()
    text = " ".join(message.split())  # one line, whatever the message held
    print(f"spikequant {args.command}: error: {text}", file=sys.stderr)
    return code


def _is_allocation_failure(exc: RuntimeError) -> bool:
    text = str(exc)
    return "out of memory" in text or "can't allocate memory" in text


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
