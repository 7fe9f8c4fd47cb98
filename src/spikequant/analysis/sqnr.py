r"""Single-neuron SQNR study of the ATIF paper (spike quantization of a Gaussian input).

An input ``x ~ N(0, sigma^2)`` is held for T steps as the constant current of one neuron; the
rate-decoded output ``y_hat`` should reproduce the ANN activation ``y = ReLU(x)``. The quality is

    SQNR = 10 log10( E[y^2] / E[(y - y_hat)^2] )   [dB].

Three neurons are compared: IF with a fixed ``V_th = 1``, ATIF-u (threshold trained) and ATIF-nu
(T levels trained), both trained by Adam on ``RMS(ReLU(x) - y_hat)`` with fresh inputs every
iteration. A fixed-threshold IF neuron's SQNR has the closed form of its quantizer
``y_hat = V_th/T clamp(floor(T x / V_th), 0, T)``, used for the threshold grid and for the number
of timesteps it needs to match ATIF-u.

The result also holds the data of the paper's Figures 1-3, measured on a simulated IF neuron
(soft reset, constant input held for T = 8 steps): the quantization curve for three biases and
three thresholds (Fig. 1), the curve against ReLU and its error, granular for ``x <= V_th``
(``|e| <= V_th / T``) and overload beyond (``e = x - V_th``, unbounded) (Fig. 2), and the
trajectory of ATIF-u's threshold during training (Fig. 3B).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from ..errors import ConfigError
from ..metrics import sqnr_db
from ..neurons import ATIFnu, ATIFu, atif_nu_transfer, reset_state
from ..surrogate import Sigmoid


@dataclass(frozen=True)
class SQNRConfig:
    timesteps: int = 4
    sigma: float = 0.1
    iterations: int = 8000
    seed: int = 0
    alpha: float = 8.0  # surrogate slope: the spec measures that ~8 is needed to reach the optimum
    lr: float = 1e-2
    batch_size: int = 256
    eval_samples: int = 1_000_000
    eval_every: int = 100
    initial_threshold: float = 1.0

    def validate(self) -> SQNRConfig:
        checks = [
            (
                isinstance(self.timesteps, int) and 1 <= self.timesteps <= 1024,
                "timesteps must be in 1..1024",
            ),
            (math.isfinite(self.sigma) and self.sigma > 0, "sigma must be a positive number"),
            (isinstance(self.iterations, int) and self.iterations >= 1, "iterations must be >= 1"),
            (
                all(math.isfinite(v) and v > 0 for v in (self.alpha, self.lr)),
                "alpha and lr must be positive finite numbers",
            ),
            (
                self.batch_size >= 1 and self.eval_samples >= 1000,
                "batch >= 1 and eval_samples >= 1000",
            ),
            (
                math.isfinite(self.initial_threshold) and self.initial_threshold > 0,
                "initial threshold must be positive",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"sqnr: {message}")
        return self


def uniform_quantizer(x: torch.Tensor, threshold: float, timesteps: int) -> torch.Tensor:
    """Closed form of a soft-reset IF neuron over T steps (ATIF eq. 7): T + 1 uniform levels."""
    return threshold / timesteps * torch.clamp(torch.floor(timesteps * x / threshold), 0, timesteps)


def simulate(neuron, x: torch.Tensor, timesteps: int) -> torch.Tensor:
    """Rate-decoded output of ``neuron`` for the constant inputs ``x`` held for T steps."""
    reset_state(neuron)
    out = neuron(x.unsqueeze(0).expand(timesteps, *x.shape))
    reset_state(neuron)
    return out.mean(0)


def fixed_threshold_sqnr(x: torch.Tensor, threshold: float, timesteps: int) -> float:
    return sqnr_db(torch.relu(x), uniform_quantizer(x, threshold, timesteps))


def timesteps_to_match(
    x: torch.Tensor, target_db: float, threshold: float = 1.0, max_t: int = 256
) -> int | None:
    """Smallest T at which a fixed-threshold neuron reaches ``target_db``."""
    for t in range(1, max_t + 1):
        if fixed_threshold_sqnr(x, threshold, t) >= target_db:
            return t
    return None


def quantization_curves(timesteps: int = 8, points: int = 801) -> dict:
    """Figures 1 and 2 of the ATIF paper from a simulated soft-reset IF neuron (threshold 1
    unless stated): the decoded output ``y_hat(x + b)`` for biases 0.25, 0, -0.25, for thresholds
    0.75, 1, 1.25, and the error ``ReLU(x) - y_hat(x)`` split into granular (``x <= V_th``) and
    overload (``x > V_th``) parts."""
    x = torch.linspace(-0.5, 2.0, points)

    def decoded(threshold: float, bias: float = 0.0) -> torch.Tensor:
        with torch.no_grad():
            return simulate(ATIFu(threshold), x + bias, timesteps)

    error = torch.relu(x) - decoded(1.0)
    granular = x <= 1.0
    return {
        "timesteps": timesteps,
        "input": x.tolist(),
        "by_bias": {str(b): decoded(1.0, b).tolist() for b in (0.25, 0.0, -0.25)},
        "by_threshold": {str(v): decoded(v).tolist() for v in (0.75, 1.0, 1.25)},
        "error": error.tolist(),
        "max_granular_error": float(error[granular].abs().max()),
        "max_overload_error": float(error[~granular].abs().max()),
    }


def _train(neuron, cfg: SQNRConfig, eval_x: torch.Tensor, generator: torch.Generator):
    """Adam on ``RMS(ReLU(x) - y_hat)``; returns ``(iteration, SQNR dB, threshold)`` rows (the
    threshold is the first level for ATIF-nu)."""
    optimizer = torch.optim.Adam([p for p in neuron.parameters() if p.requires_grad], lr=cfg.lr)
    history = []

    def record(it: int) -> None:
        with torch.no_grad():
            db = sqnr_db(torch.relu(eval_x), simulate(neuron, eval_x, cfg.timesteps))
        threshold = neuron.levels[0] if hasattr(neuron, "levels") else neuron.threshold
        history.append((it, db, float(threshold.detach().reshape(-1)[0])))

    record(0)  # the initial threshold: where the trajectory of Fig. 3B starts
    for it in range(1, cfg.iterations + 1):
        x = torch.randn(cfg.batch_size, generator=generator).to(eval_x.device) * cfg.sigma
        y_hat = simulate(neuron, x, cfg.timesteps)
        loss = torch.sqrt(torch.mean((torch.relu(x) - y_hat) ** 2) + 1e-12)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if it % cfg.eval_every == 0 or it == cfg.iterations:
            record(it)
    return history


def run_sqnr_study(cfg: SQNRConfig | None = None, device: torch.device | str = "cpu") -> dict:
    """Run the study on ``device``; returns a JSON-able dict (see ``spikequant sqnr --json``).
    Inputs are drawn by CPU generators and moved, so every device sees the same samples."""
    cfg = (cfg or SQNRConfig()).validate()
    T = cfg.timesteps
    torch.manual_seed(cfg.seed)
    eval_gen = torch.Generator().manual_seed(cfg.seed + 1)
    eval_x = (torch.randn(cfg.eval_samples, generator=eval_gen) * cfg.sigma).to(device)
    monitor_x = eval_x[: min(cfg.eval_samples, 65536)]
    surrogate = Sigmoid(alpha=cfg.alpha)

    fixed_db = fixed_threshold_sqnr(eval_x, 1.0, T)

    atif_u = ATIFu(cfg.initial_threshold, surrogate=surrogate).to(device)
    u_history = _train(atif_u, cfg, monitor_x, torch.Generator().manual_seed(cfg.seed + 2))
    with torch.no_grad():
        u_db = sqnr_db(torch.relu(eval_x), simulate(atif_u, eval_x, T))
    u_vth = float(atif_u.threshold.detach())

    atif_nu = ATIFnu(T, cfg.initial_threshold, surrogate=surrogate).to(device)
    nu_history = _train(atif_nu, cfg, monitor_x, torch.Generator().manual_seed(cfg.seed + 3))
    with torch.no_grad():
        nu_db = sqnr_db(torch.relu(eval_x), simulate(atif_nu, eval_x, T))
        levels = atif_nu.levels.detach()
        curve_x = torch.linspace(
            -0.1 * float(levels[0]), 1.3 * float(levels[0]), 2001, device=levels.device
        )
        counts = atif_nu_transfer(levels, curve_x)
        monotone = bool((counts[1:] >= counts[:-1]).all())

    grid = torch.linspace(0.2 * cfg.sigma, 6 * cfg.sigma, 291)
    grid_db = [fixed_threshold_sqnr(eval_x, float(v), T) for v in grid]
    best_i = max(range(len(grid_db)), key=grid_db.__getitem__)

    return {
        "config": asdict(cfg),
        "input_std": float(eval_x.std()),
        "fixed": {"vth": 1.0, "sqnr_db": fixed_db},
        "atif_u": {
            "sqnr_db": u_db,
            "vth": u_vth,
            "vth_over_sigma": u_vth / cfg.sigma,
            "history": u_history,
        },
        "atif_nu": {
            "sqnr_db": nu_db,
            "levels": levels.tolist(),
            "step_thresholds": atif_nu.step_thresholds().detach().tolist(),
            "gain_over_atif_u_db": nu_db - u_db,
            "transfer_monotone": monotone,
            "transfer": {"input": curve_x[::20].tolist(), "count": counts[::20].tolist()},
            "history": nu_history,
        },
        "best_fixed_grid": {"vth": float(grid[best_i]), "sqnr_db": grid_db[best_i]},
        "atif_u_gap_to_best_db": grid_db[best_i] - u_db,
        "fixed_t_to_match": timesteps_to_match(eval_x, u_db),
        "fixed_sqnr_by_t": {t: fixed_threshold_sqnr(eval_x, 1.0, t) for t in (4, 8, 16, 20, 32)},
        "quantization_curves": quantization_curves(),
    }


def plot_sqnr_study(result: dict, path) -> None:
    """SQNR over iterations (Fig. 3A), ATIF-u's threshold over iterations (Fig. 3B) and the
    learned transfer curves."""
    from .._optional import pyplot

    plt = pyplot("the SQNR study's plot")

    fig, (ax, vx, bx) = plt.subplots(1, 3, figsize=(16, 4))
    for key, label in (("atif_u", "ATIF-u"), ("atif_nu", "ATIF-nu")):
        its, dbs, _ = zip(*result[key]["history"], strict=False)
        ax.plot(its, dbs, label=label)
    its, _, vths = zip(*result["atif_u"]["history"], strict=False)
    sigma = result["config"]["sigma"]
    vx.plot(its, vths, label="ATIF-u V_th")
    vx.axhline(sigma, color="gray", ls=":", label="input std sigma")
    vx.axhline(2 * sigma, color="gray", ls="--", label="2 sigma")
    vx.set(xlabel="iteration", ylabel="V_th", title="Threshold during training (Fig. 3B)")
    vx.legend()
    ax.axhline(result["fixed"]["sqnr_db"], color="k", ls="--", label="fixed V_th = 1")
    ax.axhline(
        result["best_fixed_grid"]["sqnr_db"], color="gray", ls=":", label="best uniform V_th (grid)"
    )
    T = result["config"]["timesteps"]
    ax.set(
        xlabel="iteration",
        ylabel="SQNR [dB]",
        title=f"Single neuron, T = {T}, sigma = {result['config']['sigma']}",
    )
    ax.legend()
    levels = result["atif_nu"]["levels"]
    tx, tc = result["atif_nu"]["transfer"]["input"], result["atif_nu"]["transfer"]["count"]
    bx.step(tx, [c * levels[0] / T for c in tc], where="post", label="ATIF-nu (learned)")
    vth = result["atif_u"]["vth"]
    ux = torch.tensor(tx)
    bx.step(tx, uniform_quantizer(ux, vth, T).tolist(), where="post", label="ATIF-u (learned)")
    bx.plot(tx, torch.relu(ux).tolist(), "k:", label="ReLU")
    mono = "monotone" if result["atif_nu"]["transfer_monotone"] else "NOT monotone"
    bx.set(xlabel="input x", ylabel="decoded output", title=f"Transfer curves (ATIF-nu {mono})")
    bx.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_quantization_curves(result: dict, path) -> None:
    """The ATIF paper's Figures 1 (curves for three biases / thresholds) and 2 (curve against
    ReLU, granular and overload error) from ``result["quantization_curves"]``."""
    from .._optional import pyplot

    plt = pyplot("the SQNR study's plot")
    q = result["quantization_curves"]
    x, T = q["input"], q["timesteps"]
    fig, axes = plt.subplots(1, 4, figsize=(20, 4))
    for b, y in q["by_bias"].items():
        axes[0].step(x, y, where="post", label=f"b = {b}")
    axes[0].set(title=f"Fig. 1A: bias (T = {T}, V_th = 1)", xlabel="input x", ylabel="y_hat")
    for v, y in q["by_threshold"].items():
        axes[1].step(x, y, where="post", label=f"V_th = {v}")
    axes[1].set(title=f"Fig. 1B: threshold (T = {T})", xlabel="input x", ylabel="y_hat")
    relu = [max(0.0, v) for v in x]
    axes[2].step(x, q["by_threshold"]["1.0"], where="post", label="IF, soft reset")
    axes[2].plot(x, relu, "k:", label="ReLU")
    axes[2].set(title=f"Fig. 2A: IF vs ReLU (T = {T}, V_th = 1)", xlabel="input x")
    granular = [e if v <= 1.0 else float("nan") for v, e in zip(x, q["error"], strict=True)]
    overload = [e if v > 1.0 else float("nan") for v, e in zip(x, q["error"], strict=True)]
    axes[3].plot(x, granular, label=f"granular (|e| <= {q['max_granular_error']:.3f})")
    axes[3].plot(x, overload, label="overload (x > V_th, unbounded)")
    axes[3].set(title="Fig. 2B: quantization error ReLU(x) - y_hat", xlabel="input x")
    for ax in axes:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
