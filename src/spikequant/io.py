"""Small file helpers: atomic writes (saved work is never left half-written) and result paths."""

from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            # mkstemp makes 0600 files; give the result the mode open() would (the user's umask)
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(fh.fileno(), 0o666 & ~umask)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON (with a trailing newline)."""
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def results_dir(override: str | os.PathLike | None, default: str | os.PathLike) -> Path:
    """Where a command writes its report: ``--out`` if given, else the command's own default (a
    run's ``reports/`` folder, or ``spikequant-reports/`` for commands without a run), never the
    current directory's ``docs/``. Created if missing."""
    path = Path(override if override is not None else default)
    path.mkdir(parents=True, exist_ok=True)
    return path


#: the report folder of commands that do not read a run (sqnr, data report, seqdigits, ...)
DEFAULT_REPORTS = Path("spikequant-reports")


def run_reports_dir(checkpoint: str | os.PathLike) -> Path:
    """``RUN/reports`` for a run folder or one of its ``RUN/checkpoints/epoch_NNNN`` folders; a
    standalone checkpoint folder gets its own ``reports/``."""
    folder = Path(checkpoint)
    if folder.parent.name == "checkpoints":
        folder = folder.parent.parent
    return folder / "reports"


def command_line(argv: list[str] | None = None, module: str | None = None) -> str:
    """The command this process was started with, as a user would type it (``spikequant ...``
    or ``python -m module ...``): the header every results file carries. A ``main(argv)`` called
    from Python passes its ``argv`` and ``module``: ``python -m module <argv, shell-quoted>``."""
    if argv is not None and module is not None:
        return f"python -m {module} " + shlex.join(argv)
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    name = getattr(spec, "name", None)
    if name in ("spikequant.cli.__main__", "spikequant.__main__") or name is None:
        prog = "spikequant" if Path(sys.argv[0]).name in ("spikequant", "__main__.py") else None
        if prog is None:
            prog = "python " + Path(sys.argv[0]).name
    else:
        prog = f"python -m {name.removesuffix('.__main__')}"
    return " ".join([prog, *map(shlex.quote, sys.argv[1:])])


def command_header() -> str:
    """First lines of a markdown results file: the exact command that wrote it."""
    return f"Command: `{command_line()}`\n\n"


def check_output_file(path: str | os.PathLike, option: str = "--out") -> Path:
    """Prove before any work that a file can be written at ``path`` (its folder is created):
    not a folder, not below a file, not in a read-only or looping location."""
    from .errors import ConfigError

    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{option} {path} is a folder; give a file name")
    if path.is_symlink() and not path.exists():
        raise ConfigError(f"{option} {path} is a broken or looping symbolic link")
    check_output_dir(path.parent, option)
    return path


def check_output_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """Create the folder ``path`` and prove it writable now, before any work starts."""
    from .errors import ConfigError

    path = Path(path)
    try:
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{option} {path} exists and is not a folder")
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"{option} {path} is not writable ({exc.strerror or exc})") from None
    return path


def log_to_stderr(msg: str) -> None:
    """A progress line on stderr, so that ``--json`` output on stdout stays parseable."""
    print(msg, file=sys.stderr, flush=True)
