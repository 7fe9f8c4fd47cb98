"""How much disk a fresh install of spikequant takes: the core, and the core with every extra.

For each variant: a new virtual environment, ``pip install -c constraints.txt <repo>[extras]``,
then the size of its site-packages, split per installed distribution (the files in each one's
RECORD) and into torch with what torch requires versus everything else. Sizes are the files'
byte counts (not disk blocks). Writes ``docs/results/install_size.md`` (or ``--out``).

    python -m benchmarks.install_size [--venv-root /tmp] [--out docs/results/install_size.md]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shlex
import shutil
import subprocess
import sys
import tempfile

from spikequant.io import write_text

ROOT = pathlib.Path(__file__).resolve().parents[1]
VARIANTS = {"core": "", "all": "[all]"}  # name -> the extras installed

# Run by the venv's own interpreter: every distribution with its RECORD size and requirements.
_INVENTORY = r"""
import json, os, sys, sysconfig
from importlib import metadata
from pip._vendor.packaging.requirements import Requirement
from pip._vendor.packaging.utils import canonicalize_name

site = sysconfig.get_paths()["purelib"]
dists = {}
for dist in metadata.distributions(path=[site]):
    name = canonicalize_name(dist.metadata["Name"])
    size = 0
    for f in dist.files or []:
        path = f.locate()
        if os.path.isfile(path):
            size += os.path.getsize(path)
    requires = []
    for line in dist.requires or []:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            requires.append(canonicalize_name(req.name))
    dists[name] = {"version": dist.version, "bytes": size, "requires": requires}
total = 0
for folder, _, files in os.walk(site):
    total += sum(os.path.getsize(os.path.join(folder, f)) for f in files
                 if not os.path.islink(os.path.join(folder, f)))
print(json.dumps({"site_packages": site, "total": total, "dists": dists}))
"""


def closure(dists: dict, root: str) -> set[str]:
    """``root`` and every installed distribution it requires, transitively."""
    seen, todo = set(), [root]
    while todo:
        name = todo.pop()
        if name in seen or name not in dists:
            continue
        seen.add(name)
        todo.extend(dists[name]["requires"])
    return seen


def measure(venv: pathlib.Path, extras: str, constraints: pathlib.Path) -> dict:
    if venv.exists():
        shutil.rmtree(venv)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [
            str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
            "-c", str(constraints), f"{ROOT}{extras}",
        ],
        check=True,
    )  # fmt: skip
    inventory = json.loads(
        subprocess.run(
            [str(python), "-c", _INVENTORY], check=True, capture_output=True, text=True
        ).stdout
    )
    dists = inventory["dists"]
    torch_side = closure(dists, "torch")
    # a package spikequant needs for its own sake stays on spikequant's side
    own = closure(dists, "spikequant") - {"torch"}
    for name in list(torch_side):
        if name != "torch" and any(
            name in dists[o]["requires"] for o in own - torch_side if o != "spikequant"
        ):
            torch_side.discard(name)
    torch_bytes = sum(dists[n]["bytes"] for n in torch_side)
    return {
        "total": inventory["total"],
        "torch_only": dists["torch"]["bytes"],
        "torch_side": sorted(torch_side),
        "torch_side_bytes": torch_bytes,
        "without_torch": inventory["total"] - torch_bytes,
        "dists": dists,
    }


def mib(n: int) -> str:
    return f"{n / 2**20:,.1f}"


def report(command: str, results: dict[str, dict], pending: list[str]) -> str:
    lines = [
        f"`{command}`",
        "",
        "# Install size",
        "",
        "A fresh virtual environment per variant, `pip install -c constraints.txt <repo>[extras]` "
        "(torch: the CPU build), then the byte count of every file in its site-packages "
        "(pip and setuptools of the venv included).",
        "",
        "| variant | site-packages MiB | torch alone MiB | torch and what only it requires MiB "
        "| the rest (without torch) MiB |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for variant, r in results.items():
        lines.append(
            f"| {variant} (`{VARIANTS[variant] or '.'}`) | {mib(r['total'])} | "
            f"{mib(r['torch_only'])} | {mib(r['torch_side_bytes'])} | {mib(r['without_torch'])} |"
        )
    for variant in pending:
        lines.append(f"| {variant} | not measured (the run stopped before) | | | |")
    for variant, r in results.items():
        lines += [
            "",
            f"## {variant}: per distribution",
            "",
            f"torch's side: {', '.join(r['torch_side'])}.",
            "",
            "| distribution | version | MiB |",
            "| --- | --- | ---: |",
        ]
        for name, d in sorted(r["dists"].items(), key=lambda kv: -kv[1]["bytes"]):
            lines.append(f"| {name} | {d['version']} | {mib(d['bytes'])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv-root", type=pathlib.Path, default=None)
    parser.add_argument("--constraints", type=pathlib.Path, default=ROOT / "constraints.txt")
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "docs/results/install_size.md")
    parser.add_argument("--keep", action="store_true", help="keep the virtual environments")
    parser.add_argument(
        "--variants", default="core,all", help=f"comma-separated, among {', '.join(VARIANTS)}"
    )
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "benchmarks.install_size", *(argv or sys.argv[1:])])
    root = args.venv_root or pathlib.Path(tempfile.mkdtemp(prefix="spikequant-install-size-"))
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    results = {}
    # the report is rewritten after each variant, so a long install cut short keeps what it had
    write_text(args.out, report(command, results, variants))
    for k, variant in enumerate(variants):
        venv = root / f"venv-{variant}"
        results[variant] = measure(venv, VARIANTS[variant], args.constraints)
        write_text(args.out, report(command, results, variants[k + 1 :]))
        r = results[variant]
        print(
            f"{variant}: site-packages {mib(r['total'])} MiB, torch {mib(r['torch_only'])} MiB, "
            f"without torch's side {mib(r['without_torch'])} MiB",
            flush=True,
        )
        if not args.keep:
            shutil.rmtree(venv)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
