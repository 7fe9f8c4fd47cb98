r"""How exact is the Ca-LIF conversion of a QAT MLP in floating point? (``python -m`` report)

Trains the QAT MLP of tests/convert/test_qat_calif.py (or reads ``--run-dir``), converts it to
Ca-LIF and measures, against exact rational arithmetic (``fractions.Fraction``) on the model's own
float32 fake-quantized weights, biases and steps:

* code mismatches of the SNN against the float64 reference (``compare_codes``) at each T;
* weights whose integer ``wQ`` differs when quantized in float64 instead of float32;
* per hidden layer, the distance of the exact ``z / Sy`` from the nearest half-integer (how far
  the closest rounding decision is from a tie), and how many of the SNN's read-outs
  ``c Vth + V`` differ from the exact rational logits: zero when the float64 sums are exact.

Both with the learned (arbitrary) LSQ steps and with the same weights and the steps rounded to
powers of two (``QuantReLU.power_of_two``), which makes every float64 sum of the SNN exact.
Last, a one-neuron counterexample to exactness in float64: a bias far below the weights' grid.
"""

from __future__ import annotations

import argparse
import copy
import math
from fractions import Fraction
from pathlib import Path

import torch

from ..io import DEFAULT_REPORTS, command_line, results_dir, write_json, write_text
from ..quant.qat import QuantInput, QuantLinear, QuantReLU, fake_quant_weight, quantize_weight
from .calif import pixels_from_unit
from .methods import convert
from .network import compare_codes

RECIPE = {
    "name": "calif-margin-mlp",
    "seed": 0,
    "model": {"name": "ann_mlp", "kwargs": {"qat": True, "bits": 8, "hidden": [64, 32]}},
    "data": {"name": "mnist5k", "batch_size": 64},
    "optim": {"name": "sgd", "lr": 0.05},
    "train": {"epochs": 2},
    "method": {"name": "qat"},
}


def _exact_layers(model: torch.nn.Module, x: torch.Tensor, budget: int):
    """Exact pre-activations ``z`` of every weight layer of a QAT MLP, sample by sample.

    The input is the ISI-decoded image ``floor(K pix / 255) / K``; every QuantReLU's codes are
    computed exactly from ``z`` and feed the next layer."""
    layers = [m for m in model.modules() if isinstance(m, (QuantLinear, QuantReLU))]
    weights = {
        id(m): [[Fraction(v) for v in row] for row in fake_quant_weight(m.weight, m.bits).tolist()]
        for m in layers
        if isinstance(m, QuantLinear)
    }
    per_sample = []
    for row in pixels_from_unit(x.double()).flatten(1).tolist():
        x = [Fraction(budget * int(p) // 255, budget) for p in row]
        zs, codes = [], []
        z: list[Fraction] = []
        for m in layers:
            if isinstance(m, QuantLinear):
                z = [
                    sum((w * xi for w, xi in zip(wr, x, strict=True) if xi), Fraction(0))
                    + Fraction(b)
                    for wr, b in zip(weights[id(m)], m.bias.tolist(), strict=True)
                ]
                zs.append(z)
            else:
                sy = Fraction(float(m.step_size))
                q = [min(max(math.floor(zi / sy + Fraction(1, 2)), 0), m.qmax) for zi in z]
                codes.append(q)
                x = [sy * qi for qi in q]
        per_sample.append((zs, codes))
    return per_sample


def measure(model: torch.nn.Module, x: torch.Tensor, timesteps: int) -> dict:
    snn = convert(model, "calif")
    logits = snn.simulate(x, [timesteps])[timesteps]["logits"]
    agreement = compare_codes(model, snn, x, timesteps)
    budget = agreement["input_spike_budget"]
    exact = _exact_layers(model, x, budget)
    relus = [m for m in model.modules() if isinstance(m, QuantReLU)]
    held = [pre for pre, _ in snn.codes().values()]
    margins = [1.0] * len(relus)
    differ, worst, vs_exact = 0, 0.0, 0
    for b, (zs, codes) in enumerate(exact):
        vs_exact += sum(
            int((h[b] != torch.tensor(c, dtype=h.dtype)).sum())
            for h, c in zip(held, codes, strict=True)
        )
        for i, relu in enumerate(relus):
            sy = Fraction(float(relu.step_size))
            for zi in zs[i]:
                q = zi / sy
                margins[i] = min(margins[i], abs(float(q - math.floor(q)) - 0.5))
        for v, zi in zip(logits[b].tolist(), zs[-1], strict=True):
            if Fraction(v) != zi:
                differ += 1
                worst = max(worst, abs(float(Fraction(v) - zi)) / max(abs(float(zi)), 1e-300))
    return {
        "T": timesteps,
        "input_spike_budget": budget,
        "steps": [float(m.step_size) for m in relus],
        "code_mismatches_vs_float64_reference": {
            k: v["mismatch_vs_decoded_input"] for k, v in agreement["layers"].items()
        },
        "code_mismatches_vs_exact": vs_exact,
        "min_distance_of_z_over_Sy_from_half_integer": margins,
        "readouts_differing_from_exact": differ,
        "readouts": int(logits.numel()),
        "max_relative_readout_error": worst,
    }


def weight_ties(model: torch.nn.Module) -> int:
    """Weights whose integer ``wQ`` changes when quantized in float64 instead of float32."""
    return sum(
        int(
            (
                quantize_weight(m.weight, m.bits)[0].double()
                != quantize_weight(m.weight.double(), m.bits)[0]
            ).sum()
        )
        for m in model.modules()
        if isinstance(m, QuantLinear)
    )


def tiny_bias_case() -> dict:
    """``z = (w . n) / 255 + b`` within 1e-16 of a half step, ``b = 2^-34`` next to weights of
    ``0.16``: ``K z`` needs more than 53 bits, so the SNN's float64 membrane rounds."""
    w = [float.fromhex("0x1.4a7a6p-3"), float.fromhex("-0x1.2bca7p-1")]
    n, step, bias = [248, 58], float.fromhex("0x1.b13e4ep-12"), float.fromhex("0x1.a0606p-34")
    layer = QuantLinear(2, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([w]))
        layer.bias.fill_(bias)
    model = torch.nn.Sequential(QuantInput(), layer, QuantReLU(8, init_step=step)).eval()
    w = fake_quant_weight(layer.weight, 8)[0].tolist()
    z = sum((Fraction(wi) * ni for wi, ni in zip(w, n, strict=True)), Fraction(0)) / 255
    z += Fraction(bias)
    snn = convert(model, "calif")
    snn.simulate(torch.tensor([n], dtype=torch.float32) / 255, [256])
    return {
        "weights": w,
        "pixels": n,
        "bias": bias,
        "step": step,
        "exact_z_over_Sy_minus_half_integer": float(
            z / Fraction(step) - math.floor(z / Fraction(step)) - Fraction(1, 2)
        ),
        "exact_code": math.floor(z / Fraction(step) + Fraction(1, 2)),
        "snn_code": int(snn.codes()["2"][0].item()),
    }


def _table(rows: list[dict]) -> list[str]:
    lines = [
        "| steps | T | code mismatches SNN vs reference / vs exact | min dist. of z/Sy from k+1/2 "
        "(per hidden layer) | read-outs != exact | max rel. read-out error |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        margins = ", ".join(f"{m:.3g}" for m in r["min_distance_of_z_over_Sy_from_half_integer"])
        lines.append(
            f"| {r['kind']} | {r['T']} "
            f"| {sum(r['code_mismatches_vs_float64_reference'].values())} "
            f"/ {r['code_mismatches_vs_exact']} "
            f"| {margins} | {r['readouts_differing_from_exact']} / {r['readouts']} "
            f"| {r['max_relative_readout_error']:.2g} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spikequant.convert.calif_margin")
    parser.add_argument("--run-dir", default="runs/calif-margin-mlp")
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (training order)")
    parser.add_argument("--out", default=None, help="results folder (default spikequant-reports)")
    args = parser.parse_args(argv)
    from ..config import run_recipe
    from ..data import load_arrays
    from ..pipeline import load_run_model

    torch.set_num_threads(args.threads)
    run_dir = Path(args.run_dir)
    if not (run_dir / "run.json").exists():
        run_recipe(RECIPE, out_dir=run_dir, progress=False, overwrite=True)
    model, _ = load_run_model(run_dir)
    model.eval()
    x, _ = load_arrays("mnist5k", "test")
    x = x[: args.samples]
    pow2 = copy.deepcopy(model)
    for m in pow2.modules():
        if isinstance(m, QuantReLU):
            m.power_of_two = True
    rows = []
    for kind, net in (("learned (LSQ)", model), ("rounded to 2^k", pow2)):
        for t in (16, 256):
            rows.append({"kind": kind, **measure(net, x, t)})
    report = {
        "command": command_line(),
        "samples": len(x),
        "weights_with_float32_float64_quantization_tie": weight_ties(model),
        "rows": rows,
        "tiny_bias_case": tiny_bias_case(),
    }
    out = results_dir(args.out, DEFAULT_REPORTS) / "calif-margin"
    write_json(out.with_suffix(".json"), report)
    lines = [
        f"Command: `{report['command']}`. QAT MLP 784-64-32-10 (8 bit, recipe in the module), "
        f"first {len(x)} test digits of mnist5k; exact values in rationals from the float32 "
        "model's fake-quantized weights, biases and steps.",
        "",
        f"Weights whose integer value differs when quantized in float64 instead of float32: "
        f"{report['weights_with_float32_float64_quantization_tie']}.",
        "",
        *_table(rows),
        "",
        "Counterexample (one neuron, T = 256): bias {bias:.3g} next to weights {weights}, pixels "
        "{pixels}, Sy = {step:.6g}: exact z/Sy = k + 1/2 "
        "{exact_z_over_Sy_minus_half_integer:+.2g}, exact code {exact_code}, "
        "SNN code {snn_code}.".format(**report["tiny_bias_case"]),
        "",
    ]
    write_text(out.with_suffix(".md"), "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
