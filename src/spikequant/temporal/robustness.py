"""Robustness of a trained TTFS network without retraining (paper section 4.2).

* weight bits: post-training uniform symmetric quantization per layer,
  ``delta = max|w| / (2^(b-1) - 1)`` (weights and bias input together);
* weight noise: ``w + N(0, s^2)`` with ``s = rms(w) * 10^(-SNR/20)`` per layer, averaged over seeds;
* timing jitter: every input spike time is scaled by ``1 +- r`` (random sign), so the input
  relative jitter ``|t' - t| / t`` is exactly ``r`` for every ``t > 0``; the output relative
  jitter is the mean of ``|t_out' - t_out| / t_out`` over output neurons that fire in both runs.

The checkpoint's own QAT history (accuracy after each retraining stage) is reported alongside.
"""

from __future__ import annotations

import copy
import math

import torch

from ..devices import model_device
from ..errors import ConfigError
from .evaluate import evaluate
from .layers import FULL_PRECISION_BITS, quantize_symmetric, set_weight_bits, ttfs_weighted_layers
from .models import TTFSNet

DEFAULT_BITS = (32, 16, 8, 6, 4, 3, 2)
DEFAULT_SNR_DB = (10, 15, 20, 25, 30, 35, 40, 50)
DEFAULT_JITTER = (0.01, 0.03, 0.05, 0.07, 0.09)


def _full_precision_copy(model: TTFSNet) -> TTFSNet:
    clone = copy.deepcopy(model)
    set_weight_bits(clone, FULL_PRECISION_BITS)
    return clone


@torch.no_grad()
def accuracy_vs_bits(
    model: TTFSNet, X, y, bits=DEFAULT_BITS, batch_size: int = 250, range_quantile: float = 1.0
) -> list[dict]:
    rows = []
    for b in bits:
        # one delta per layer over weights and bias input together, as in QAT
        clone = _quantize_jointly(_full_precision_copy(model), b, range_quantile)
        report = evaluate(clone, X, y, batch_size)
        rows.append(
            {
                "bits": int(b),
                "accuracy": report["accuracy"],
                "fraction_spiking": report["fraction_spiking"],
                "quantization_snr_db": _snr_db(model, clone),
            }
        )
    return rows


def _quantize_jointly(model: TTFSNet, bits: int, range_quantile: float = 1.0) -> TTFSNet:
    for layer in ttfs_weighted_layers(model):
        full = torch.cat([layer.weight.reshape(layer.weight.shape[0], -1), layer.bias[:, None]], 1)
        q = quantize_symmetric(full, bits, range_quantile)
        layer.weight.copy_(q[:, :-1].reshape_as(layer.weight))
        layer.bias.copy_(q[:, -1])
    return model


def _snr_db(reference: TTFSNet, perturbed: TTFSNet) -> float:
    """``10 log10(sum w^2 / sum (w - w')^2)`` over all TTFS weights."""
    signal = noise = 0.0
    for a, b in zip(ttfs_weighted_layers(reference), ttfs_weighted_layers(perturbed), strict=False):
        for pa, pb in ((a.weight, b.weight), (a.bias, b.bias)):
            signal += float((pa.double() ** 2).sum())
            noise += float(((pa.double() - pb.double()) ** 2).sum())
    return math.inf if noise == 0 else 10 * math.log10(signal / noise)


@torch.no_grad()
def accuracy_vs_noise(
    model: TTFSNet, X, y, snrs=DEFAULT_SNR_DB, seeds: int = 3, batch_size: int = 250
) -> list[dict]:
    rows = []
    for snr in snrs:
        accs = []
        for seed in range(seeds):
            gen = torch.Generator().manual_seed(10_000 + seed)
            clone = _full_precision_copy(model)
            for layer in ttfs_weighted_layers(clone):
                full = torch.cat(
                    [layer.weight.reshape(layer.weight.shape[0], -1), layer.bias[:, None]], 1
                )
                sigma = float(full.pow(2).mean().sqrt()) * 10 ** (-snr / 20)
                # drawn on the CPU so every device sees the same noise for a seed
                noise_w = torch.randn(layer.weight.shape, generator=gen)
                noise_b = torch.randn(layer.bias.shape, generator=gen)
                layer.weight.add_(sigma * noise_w.to(layer.weight.device))
                layer.bias.add_(sigma * noise_b.to(layer.bias.device))
            accs.append(evaluate(clone, X, y, batch_size)["accuracy"])
        mean = sum(accs) / len(accs)
        std = math.sqrt(sum((a - mean) ** 2 for a in accs) / len(accs))
        rows.append({"snr_db": float(snr), "accuracy": mean, "accuracy_std": std, "seeds": seeds})
    return rows


@torch.no_grad()
def output_jitter(
    model: TTFSNet, X, y, jitters=DEFAULT_JITTER, seed: int = 0, batch_size: int = 250
) -> list[dict]:
    model = _full_precision_copy(model).eval()
    device = model_device(model)
    X, y = X.to(device), y.to(device)
    times = model.encoder.times(model._check_input(X))
    clean = torch.cat(
        [
            model.forward_z(torch.exp(times[i : i + batch_size]))
            for i in range(0, len(X), batch_size)
        ]
    )
    rows = []
    for r in jitters:
        gen = torch.Generator().manual_seed(seed)
        sign = torch.where(torch.rand(times.shape, generator=gen) < 0.5, -1.0, 1.0).to(device)
        jittered = times * (1 + r * sign)
        z_in = torch.exp(jittered)
        out = torch.cat(
            [model.forward_z(z_in[i : i + batch_size]) for i in range(0, len(X), batch_size)]
        )
        both = (clean < model.z_max) & (out < model.z_max)
        t_clean, t_out = torch.log(clean[both]), torch.log(out[both])
        rel = ((t_out - t_clean).abs() / t_clean).mean().item() if both.any() else float("nan")
        moved = times > 0
        in_rel = ((jittered - times).abs()[moved] / times[moved]).mean().item()
        accuracy = (TTFSNet.predict(out) == y).float().mean().item()
        rows.append(
            {
                "input_jitter": in_rel,
                "output_jitter": rel,
                "ratio": rel / in_rel if in_rel > 0 else float("nan"),
                "accuracy": accuracy,
            }
        )
    return rows


def qat_history(meta: dict) -> list[dict]:
    """Accuracy after the last epoch of each weight-bit stage recorded in a checkpoint."""
    last: dict[int, float] = {}
    for row in meta.get("history", []):
        last[int(row["bits"])] = float(row["test_accuracy"])
    return [{"bits": b, "accuracy": a} for b, a in last.items()]


def robustness_study(
    model: TTFSNet,
    X,
    y,
    *,
    bits=DEFAULT_BITS,
    snrs=DEFAULT_SNR_DB,
    jitters=DEFAULT_JITTER,
    seeds: int = 3,
    batch_size: int = 250,
    meta: dict | None = None,
    range_quantile: float = 1.0,
) -> dict:
    if not isinstance(model, TTFSNet):
        raise ConfigError(f"the robustness study needs a TTFS network, got {type(model).__name__}")
    if any(int(b) < 2 for b in bits):
        raise ConfigError(f"weight bits must be >= 2, got {list(bits)}")
    if seeds < 1:
        raise ConfigError("seeds must be >= 1")
    baseline = evaluate(model, X, y, batch_size)
    return {
        "baseline": baseline,
        "checkpoint_weight_bits": int(ttfs_weighted_layers(model)[0].weight_bits),
        "range_quantile": range_quantile,
        "accuracy_vs_bits": accuracy_vs_bits(model, X, y, bits, batch_size, range_quantile),
        "accuracy_vs_snr": accuracy_vs_noise(model, X, y, snrs, seeds, batch_size),
        "jitter": output_jitter(model, X, y, jitters, batch_size=batch_size),
        "qat_history": qat_history(meta or {}),
    }


def write_report(result: dict, out_dir, stem: str) -> dict:
    """``<stem>.json``, ``<stem>.md`` and ``<stem>.png`` under ``out_dir``; returns the paths."""
    from pathlib import Path

    from .._optional import pyplot
    from ..io import command_header, command_line, write_json, write_text

    plt = pyplot("the robustness report's plot")

    out_dir = Path(out_dir)
    paths = {
        "json": out_dir / f"{stem}.json",
        "md": out_dir / f"{stem}.md",
        "png": out_dir / f"{stem}.png",
    }
    write_json(paths["json"], {"command": command_line(), **result})

    base = result["baseline"]
    title = f"# TTFS robustness: {result.get('checkpoint', stem)}"
    lines = [command_header().rstrip(), "", title, ""]
    lines += [
        f"Test samples: {base['samples']}. Baseline accuracy {base['accuracy']:.4f}, fraction of "
        f"neurons spiking {base['fraction_spiking']:.3f} (paper's 'sparsity'), "
        f"{base['n_weights']} weights, energy {base['energy_nJ']:.1f} nJ per inference "
        f"(n_weights x fraction spiking x 10 pJ).",
        "",
    ]
    lines += [
        "## Accuracy vs weight bits (post-training quantization, no retraining)",
        "",
        "| bits | accuracy | loss vs baseline (points) | quantization SNR (dB) | spiking |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in result["accuracy_vs_bits"]:
        lines.append(
            f"| {r['bits']} | {r['accuracy']:.4f} "
            f"| {100 * (base['accuracy'] - r['accuracy']):+.2f} | "
            f"{r['quantization_snr_db']:.1f} | {r['fraction_spiking']:.3f} |"
        )
    if result["qat_history"]:
        lines += [
            "",
            "## Accuracy after QAT retraining (from the checkpoint's history)",
            "",
            "| bits | accuracy |",
            "|---:|---:|",
        ]
        lines += [f"| {r['bits']} | {r['accuracy']:.4f} |" for r in result["qat_history"]]
    lines += [
        "",
        "## Accuracy vs weight-noise SNR (no retraining)",
        "",
        "| SNR (dB) | accuracy (mean) | std | seeds |",
        "|---:|---:|---:|---:|",
    ]
    for r in result["accuracy_vs_snr"]:
        lines.append(
            f"| {r['snr_db']:g} | {r['accuracy']:.4f} | {r['accuracy_std']:.4f} | {r['seeds']} |"
        )
    lines += [
        "",
        "## Input vs output timing jitter (relative, |t' - t| / t)",
        "",
        "| input jitter (%) | output jitter (%) | ratio | accuracy |",
        "|---:|---:|---:|---:|",
    ]
    for r in result["jitter"]:
        lines.append(
            f"| {100 * r['input_jitter']:.2f} | {100 * r['output_jitter']:.3f} "
            f"| {r['ratio']:.3f} | "
            f"{r['accuracy']:.4f} |"
        )
    write_text(paths["md"], "\n".join(lines) + "\n")

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    bits_rows = result["accuracy_vs_bits"]
    axes[0].plot(
        [str(r["bits"]) for r in bits_rows], [r["accuracy"] for r in bits_rows], "o-", label="PTQ"
    )
    if result["qat_history"]:
        qat = {r["bits"]: r["accuracy"] for r in result["qat_history"]}
        xs = [str(r["bits"]) for r in bits_rows if r["bits"] in qat]
        axes[0].plot(xs, [qat[int(x)] for x in xs], "s--", label="QAT")
    axes[0].set(xlabel="weight bits", ylabel="test accuracy", title="weight quantization")
    axes[0].legend()
    snr_rows = result["accuracy_vs_snr"]
    axes[1].errorbar(
        [r["snr_db"] for r in snr_rows],
        [r["accuracy"] for r in snr_rows],
        yerr=[r["accuracy_std"] for r in snr_rows],
        fmt="o-",
    )
    axes[1].axhline(base["accuracy"], ls="--", c="gray")
    axes[1].set(xlabel="weight SNR (dB)", ylabel="test accuracy", title="weight noise")
    jit = result["jitter"]
    axes[2].plot(
        [100 * r["input_jitter"] for r in jit],
        [100 * r["output_jitter"] for r in jit],
        "o-",
        label="output",
    )
    axes[2].plot(
        [100 * r["input_jitter"] for r in jit],
        [100 * r["input_jitter"] for r in jit],
        "--",
        c="gray",
        label="output = input",
    )
    axes[2].set(xlabel="input jitter (%)", ylabel="output jitter (%)", title="timing jitter")
    axes[2].legend()
    fig.tight_layout()
    paths["png"].parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(paths["png"], dpi=110)
    plt.close(fig)
    return {k: str(v) for k, v in paths.items()}
