"""Trained networks exported with each ``--target`` preset and run by that library's own NIR
importer on the test split: accuracy and agreement with spikequant.

    python -m benchmarks.export_targets [--epochs 3] [--out docs/results]

Trains ``cnn_digits`` (8x8 input, T = 4) on the bundled 8x8 digits with IF (hard reset), LIF and
ATIF-u neurons into a temporary folder, exports each for snnTorch, Norse and SpikingJelly (ATIF-u
with ``--soft-reset metadata``: the readers run a hard reset), and writes
``export_targets.json`` / ``.md``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import torch

READERS = ("snntorch", "norse", "spikingjelly")


def reader_network(target: str, graph):
    from spikequant.export.targets import TARGETS

    if target == "snntorch":
        from snntorch.import_nir import import_from_nir

        return import_from_nir(graph)
    if target == "norse":
        import norse.torch

        return norse.torch.from_nir(graph, dt=TARGETS["norse"].dt, ignore_warnings=True)
    from spikingjelly.activation_based.nir_exchange import import_from_nir

    return import_from_nir(graph, dt=TARGETS["spikingjelly"].dt)


def run_reader(network, x: torch.Tensor, steps: int) -> torch.Tensor:
    state, outputs = None, []
    with torch.no_grad():
        for _ in range(steps):
            out, state = network(x, state)
            outputs.append(out)
    return torch.stack(outputs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default=None, help="results folder (default docs/results)")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)

    import spikequant as sq
    from spikequant.data import load_arrays
    from spikequant.export import read_nir, write_nir
    from spikequant.export.targets import to_nir_for
    from spikequant.io import results_dir, write_json, write_text
    from spikequant.pipeline import load_run_model
    from spikequant.pipeline import run as run_recipe

    x, y = load_arrays("digits8x8", "test")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for neuron in ("if_hard", "lif", "atif_u"):
            recipe = {
                "name": f"export-{neuron}",
                "seed": 0,
                "data": {"name": "digits8x8", "batch_size": 32},
                "model": {
                    "name": "cnn_digits",
                    "timesteps": 4,
                    "neuron": neuron,
                    "kwargs": {"input_size": 8},
                },
                "optim": {"name": "adam", "lr": 0.005},
                "train": {"epochs": args.epochs},
            }
            folder = Path(tmp) / neuron
            run_recipe(recipe, out_dir=folder, progress=False)
            model, _ = load_run_model(folder)
            model.eval()
            sq.reset_state(model)
            with torch.no_grad():
                expected = model(x)
            sq.reset_state(model)
            predicted = expected.mean(0).argmax(1)
            soft = "metadata" if neuron == "atif_u" else "error"
            for target in READERS:
                graph = to_nir_for(model, x[:1], target, soft_reset=soft)
                path = write_nir(Path(tmp) / f"{neuron}-{target}.nir", graph)
                got = run_reader(reader_network(target, read_nir(path)), x, 4)
                theirs = got.mean(0).argmax(1)
                rows.append(
                    {
                        "neuron": neuron,
                        "target": target,
                        "samples": len(y),
                        "accuracy_spikequant": float((predicted == y).float().mean()),
                        "accuracy_library": float((theirs == y).float().mean()),
                        "prediction_agreement": float((theirs == predicted).float().mean()),
                        "max_abs_output_difference": float((got - expected).abs().max()),
                    }
                )
                print(rows[-1], flush=True)
    folder = results_dir(args.out, "docs/results")
    command = "python -m benchmarks.export_targets" + (
        f" --epochs {args.epochs}" if args.epochs != 3 else ""
    )
    write_json(folder / "export_targets.json", {"command": command, "rows": rows})
    lines = [
        "# NIR export presets read by other libraries",
        "",
        f"Written by `{command}`: cnn_digits (8x8, T = 4) trained {args.epochs} epochs on the "
        "bundled 8x8 digits, exported with `--target`, imported by each library's own NIR "
        "reader and run on the 360 test digits. ATIF-u is exported with `--soft-reset "
        "metadata`: the libraries ignore the annotation and run a hard reset.",
        "",
        "| neuron | target | accuracy spikequant | accuracy library | predictions agreeing "
        "| max abs output difference |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['neuron']} | {r['target']} | {100 * r['accuracy_spikequant']:.2f} % | "
        f"{100 * r['accuracy_library']:.2f} % | {100 * r['prediction_agreement']:.2f} % | "
        f"{r['max_abs_output_difference']:.3g} |"
        for r in rows
    ]
    write_text(folder / "export_targets.md", "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
