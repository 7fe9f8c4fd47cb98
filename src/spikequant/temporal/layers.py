"""TTFS layers on ``z = exp(t)``: encoder, dense, convolutional, pooling, concatenation.

Every layer maps ``z`` to ``z``; silent neurons carry ``z = z_max``. Dense and convolutional
layers add a bias/synchronisation input that always spikes at ``t = 0`` (``z = 1``); its
weight starts at 0. Weights start from the paper's ``U[0, 8 / (N_in + 1)]``.

Weight quantization (QAT) is a per-layer setting ``weight_bits``; 32 (default) means full
precision. With fewer bits the forward pass uses uniform symmetric weights
``delta = max|w| / (2^(b-1) - 1)``, ``w_q = delta * round(w / delta)`` over the layer's weights and
bias together, and the backward pass is the straight-through estimator.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, ShapeError
from ..finite import require_finite
from .solver import DEFAULT_Z_MAX, check_backend, solve_spike_times

FULL_PRECISION_BITS = 32


def quantize_symmetric(w: torch.Tensor, bits: int, range_quantile: float = 1.0) -> torch.Tensor:
    """Uniform symmetric quantization ``delta round(w / delta)``, ``delta = r / (2^(b-1)-1)``.

    ``r = max|w|`` (the spec's quantizer, ``range_quantile = 1``) or, as an option, the
    ``range_quantile`` quantile of ``|w|``, with codes clipped to ``+-(2^(b-1)-1)``: with 2 bits and
    ``r = max|w|`` almost every weight rounds to 0. ``bits >= 32`` returns ``w`` unchanged. No
    gradient flows through (see :func:`quantize_ste`).
    """
    if bits >= FULL_PRECISION_BITS:
        return w
    if bits < 2:
        raise ConfigError(f"weight bits must be >= 2 (sign plus one level), got {bits}")
    if not 0 < range_quantile <= 1:
        raise ConfigError(f"range_quantile must be in (0, 1], got {range_quantile}")
    levels = 2 ** (bits - 1) - 1
    magnitude = w.detach().abs()
    if range_quantile >= 1:
        delta = magnitude.max() / levels
    else:
        delta = torch.quantile(magnitude.flatten().float(), range_quantile).to(w.dtype) / levels
    # delta = 0 (every weight in the range is 0) keeps w; decided on the device, not read back
    zero = delta == 0
    codes = torch.round(w.detach() / torch.where(zero, 1.0, delta)).clamp_(-levels, levels)
    return torch.where(zero, w.detach(), codes * delta)


def quantize_ste(w: torch.Tensor, bits: int, range_quantile: float = 1.0) -> torch.Tensor:
    """Forward: quantized ``w``; backward: identity (straight-through estimator)."""
    if bits >= FULL_PRECISION_BITS:
        return w
    return w + (quantize_symmetric(w, bits, range_quantile) - w).detach()


class TTFSEncoder(nn.Module):
    """Pixels ``p in [0, 1]`` -> ``z = exp(t)`` with ``t = alpha (1 - p)`` (``bright_first``,
    the paper's MNIST rule: brighter spikes earlier) or ``t = alpha p`` (its CIFAR-10 rule).

    ``noise_std`` adds Gaussian jitter to the spike times in training mode only (the paper trains
    on noisy input times), clamped at ``t >= 0``.
    """

    def __init__(
        self, alpha: float = 3.0, noise_std: float = 0.0, bright_first: bool = True
    ) -> None:
        super().__init__()
        if not alpha > 0:
            raise ConfigError(f"encoder alpha must be > 0, got {alpha}")
        self.alpha = float(alpha)
        self.noise_std = float(noise_std)
        self.bright_first = bool(bright_first)

    def times(self, pixels: torch.Tensor) -> torch.Tensor:
        from ..coding import latency_times

        require_finite(
            torch.isfinite(pixels).all(), lambda _: "TTFS encoder input contains NaN or infinity"
        )
        p = pixels.clamp(0, 1)
        t = latency_times(p, self.alpha) if self.bright_first else self.alpha * p
        if self.training and self.noise_std > 0:
            t = (t + self.noise_std * torch.randn_like(t)).clamp_min(0)
        return t

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.times(pixels))

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, noise_std={self.noise_std}, bright_first={self.bright_first}"


class _TTFSWeighted(nn.Module):
    """Shared parts of dense and conv layers: bias column, init, quantized weight matrix."""

    weight: nn.Parameter
    bias: nn.Parameter

    def __init__(self, fan_in: int, z_max: float) -> None:
        super().__init__()
        self.fan_in = fan_in
        self.z_max = float(z_max)
        self.backend = "auto"  # solver implementation, see set_solver_backend
        # A buffer, so a checkpoint of a QAT model reloads with its forward quantization on.
        self.register_buffer("quant_bits", torch.tensor(FULL_PRECISION_BITS, dtype=torch.int64))
        self.register_buffer("quant_range_quantile", torch.tensor(1.0, dtype=torch.float64))
        # host copies of the two buffers, so that a forward on a GPU does not read them back;
        # the buffers change only through the setters below and state-dict loading
        self._bits, self._range_quantile = FULL_PRECISION_BITS, 1.0

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints written before the range option existed use the spec's max|w| range
        state_dict.setdefault(
            prefix + "quant_range_quantile", torch.tensor(1.0, dtype=torch.float64)
        )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._bits = int(self.quant_bits)
        self._range_quantile = float(self.quant_range_quantile)

    @property
    def weight_bits(self) -> int:
        return self._bits

    @weight_bits.setter
    def weight_bits(self, bits: int) -> None:
        self.quant_bits.fill_(int(bits))
        self._bits = int(bits)

    @property
    def range_quantile(self) -> float:
        """The quantizer's range: the ``range_quantile`` quantile of ``|w|`` (1 = ``max|w|``)."""
        return self._range_quantile

    @range_quantile.setter
    def range_quantile(self, quantile: float) -> None:
        self.quant_range_quantile.fill_(float(quantile))
        self._range_quantile = float(quantile)

    def reset_parameters(self) -> None:
        """Paper's init ``W ~ U[0, 8 / (N_in + 1)]`` (``+1`` counts the bias input); bias 0."""
        with torch.no_grad():
            self.weight.uniform_(0.0, 8.0 / (self.fan_in + 1))
            self.bias.zero_()

    def weight_matrix(self) -> torch.Tensor:
        """``[out, fan_in + 1]``: weights then the bias column, quantized when QAT is on."""
        full = torch.cat([self.weight.reshape(self.weight.shape[0], -1), self.bias.unsqueeze(1)], 1)
        return quantize_ste(full, self.weight_bits, self.range_quantile)

    def weight_sums(self) -> torch.Tensor:
        """``sum_i w_ji`` per output neuron (bias included), for the weight-sum penalty."""
        return self.weight_matrix().sum(1)

    def _solve(self, rows: torch.Tensor) -> torch.Tensor:
        sync = torch.ones(rows.shape[0], 1, dtype=rows.dtype, device=rows.device)
        return solve_spike_times(
            torch.cat([rows, sync], 1), self.weight_matrix(), self.z_max, backend=self.backend
        )


def set_solver_backend(model: nn.Module, backend: str) -> nn.Module:
    """Use ``backend`` (``"auto"``, ``"fused"`` or ``"torch"``) in every TTFS layer of ``model``."""
    check_backend(backend)
    for module in model.modules():
        if isinstance(module, _TTFSWeighted):
            module.backend = backend
    return model


class TTFSLinear(_TTFSWeighted):
    """Fully connected TTFS layer ``[B, in] -> [B, out]``."""

    def __init__(self, in_features: int, out_features: int, z_max: float = DEFAULT_Z_MAX) -> None:
        super().__init__(in_features, z_max)
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features))
        self.reset_parameters()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.in_features:
            raise ShapeError(f"TTFSLinear expects [B, {self.in_features}], got {tuple(z.shape)}")
        return self._solve(z)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, z_max={self.z_max:g}"


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TensorFlow-style SAME: ``out = ceil(size / stride)``; returns (out, pad_lo, pad_hi)."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


class TTFSConv2d(_TTFSWeighted):
    """Convolutional TTFS layer: shared ``k x k x C_in`` kernels, SAME padding.

    Padded positions are silent inputs (``z = z_max``), so they never enter a causal set. Each
    output position is one neuron solved over its patch plus the bias input.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        z_max: float = DEFAULT_Z_MAX,
    ) -> None:
        super().__init__(in_channels * kernel_size * kernel_size, z_max)
        if kernel_size < 1 or stride < 1:
            raise ConfigError(f"kernel_size and stride must be >= 1, got {kernel_size}, {stride}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = kernel_size, stride
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels))
        self.reset_parameters()

    def output_shape(self, height: int, width: int) -> tuple[int, int]:
        return (
            same_padding(height, self.kernel_size, self.stride)[0],
            same_padding(width, self.kernel_size, self.stride)[0],
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 4 or z.shape[1] != self.in_channels:
            raise ShapeError(
                f"TTFSConv2d expects [B, {self.in_channels}, H, W], got {tuple(z.shape)}"
            )
        batch, _, height, width = z.shape
        out_h, top, bottom = same_padding(height, self.kernel_size, self.stride)
        out_w, left, right = same_padding(width, self.kernel_size, self.stride)
        padded = F.pad(z, (left, right, top, bottom), value=self.z_max)
        patches = F.unfold(padded, self.kernel_size, stride=self.stride)  # [B, C k k, L]
        rows = patches.transpose(1, 2).reshape(batch * out_h * out_w, self.fan_in)
        out = self._solve(rows)  # [B L, out]
        return out.reshape(batch, out_h, out_w, self.out_channels).permute(0, 3, 1, 2).contiguous()

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding=SAME, z_max={self.z_max:g}"
        )


POOL_PADDINGS = ("valid", "same")


class _TTFSPool(nn.Module):
    """Window geometry shared by the pooling layers: ``kernel_size``, ``stride`` (default: the
    kernel) and ``padding``: ``"valid"`` (no padding, ``out = floor((size - k) / s) + 1``) or
    ``"same"`` (TensorFlow-style, ``out = ceil(size / s)``, like :class:`TTFSConv2d`). Padded
    positions are silent (``z = z_max``), so they never become a window's spike."""

    def __init__(self, kernel_size: int, stride: int | None, padding: str, z_max: float) -> None:
        super().__init__()
        stride = kernel_size if stride is None else stride
        if kernel_size < 1 or stride < 1:
            raise ConfigError(
                f"pool kernel_size and stride must be >= 1, got {kernel_size}, {stride}"
            )
        if padding not in POOL_PADDINGS:
            raise ConfigError(f"pool padding must be one of {POOL_PADDINGS}, got {padding!r}")
        self.kernel_size, self.stride, self.padding = int(kernel_size), int(stride), padding
        self.z_max = float(z_max)

    def output_shape(self, height: int, width: int) -> tuple[int, int]:
        if self.padding == "same":
            return (
                same_padding(height, self.kernel_size, self.stride)[0],
                same_padding(width, self.kernel_size, self.stride)[0],
            )
        return (
            (height - self.kernel_size) // self.stride + 1,
            (width - self.kernel_size) // self.stride + 1,
        )

    def _pad(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 4:
            raise ShapeError(f"{type(self).__name__} expects [B, C, H, W], got {tuple(z.shape)}")
        if self.padding == "valid":
            if z.shape[2] < self.kernel_size or z.shape[3] < self.kernel_size:
                raise ShapeError(
                    f"{type(self).__name__}: input {tuple(z.shape[2:])} is smaller than the "
                    f"{self.kernel_size}x{self.kernel_size} window"
                )
            return z
        _, top, bottom = same_padding(z.shape[2], self.kernel_size, self.stride)
        _, left, right = same_padding(z.shape[3], self.kernel_size, self.stride)
        if not (top or bottom or left or right):
            return z
        return F.pad(z, (left, right, top, bottom), value=self.z_max)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class TTFSMaxPool2d(_TTFSPool):
    """Max pooling on spike times. ``mode="earliest"`` (paper): output the first spike in the
    window, ``min z`` (max pooling of the activations, since ``t`` decreases with the value);
    ``mode="latest"``: the last one, ``max z`` over the spiking inputs (silent if all are silent).

    Gradient: ``d z_out / d z_i = 1`` for the selected input, 0 for the others (the gradient of
    ``min``). Window geometry: see :class:`_TTFSPool` (default: ``kernel_size`` windows with equal
    stride, no padding)."""

    def __init__(
        self,
        kernel_size: int = 2,
        mode: str = "earliest",
        z_max: float = DEFAULT_Z_MAX,
        stride: int | None = None,
        padding: str = "valid",
    ) -> None:
        super().__init__(kernel_size, stride, padding, z_max)
        if mode not in ("earliest", "latest"):
            raise ConfigError(f"max-pool mode must be 'earliest' or 'latest', got {mode!r}")
        self.mode = mode

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = self._pad(z)
        if self.mode == "earliest":
            return -F.max_pool2d(-z, self.kernel_size, self.stride)
        spiking = z < self.z_max
        latest = F.max_pool2d(
            torch.where(spiking, z, torch.zeros_like(z)), self.kernel_size, self.stride
        )
        return torch.where(latest > 0, latest, torch.full_like(latest, self.z_max))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mode={self.mode}"


class TTFSAvgPool2d(_TTFSPool):
    """Average of ``z`` over the spiking inputs of each window (silent if none spikes):
    ``z_out = sum_{i spiking} z_i / |{i spiking}|``.

    Unlike earliest-spike pooling it must wait for every input, so it gives up the latency gain.
    Window geometry: see :class:`_TTFSPool`.
    """

    def __init__(
        self,
        kernel_size: int = 2,
        z_max: float = DEFAULT_Z_MAX,
        stride: int | None = None,
        padding: str = "valid",
    ) -> None:
        super().__init__(kernel_size, stride, padding, z_max)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = self._pad(z)
        spiking = (z < self.z_max).to(z.dtype)
        total = F.avg_pool2d(z * spiking, self.kernel_size, self.stride)
        count = F.avg_pool2d(spiking, self.kernel_size, self.stride)
        mean = total / count.clamp_min(1e-12)
        return torch.where(count > 0, mean, torch.full_like(mean, self.z_max))


class TTFSGlobalPool2d(nn.Module):
    """``[B, C, H, W] -> [B, C]`` over the whole feature map: ``mode="avg"`` the mean ``z`` of the
    spiking positions (silent if none), ``mode="earliest"`` the first spike (``min z``)."""

    def __init__(self, mode: str = "avg", z_max: float = DEFAULT_Z_MAX) -> None:
        super().__init__()
        if mode not in ("avg", "earliest"):
            raise ConfigError(f"global pool mode must be 'avg' or 'earliest', got {mode!r}")
        self.mode, self.z_max = mode, float(z_max)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 4:
            raise ShapeError(f"TTFSGlobalPool2d expects [B, C, H, W], got {tuple(z.shape)}")
        flat = z.flatten(2)
        if self.mode == "earliest":
            return flat.amin(2)
        spiking = (flat < self.z_max).to(z.dtype)
        count = spiking.sum(2)
        mean = (flat * spiking).sum(2) / count.clamp_min(1)
        return torch.where(count > 0, mean, torch.full_like(mean, self.z_max))

    def extra_repr(self) -> str:
        return f"mode={self.mode}"


class TTFSConcat(nn.Module):
    """Parallel TTFS sub-networks on one input, their spike times concatenated along channels:
    ``z_out = [b_1(z), ..., b_n(z)]`` (an inception block). Concatenation does not change any
    spike time, so each branch's output neurons keep their own earliest-spike semantics and the
    gradient of each slice flows back into its own branch. Every branch must keep the spatial
    size (stride 1 and SAME padding)."""

    def __init__(self, branches: list[nn.Module]) -> None:
        super().__init__()
        if not branches:
            raise ConfigError("TTFSConcat needs at least one branch")
        self.branches = nn.ModuleList(
            b if isinstance(b, nn.Module) else nn.Sequential(*b) for b in branches
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        outs = [branch(z) for branch in self.branches]
        sizes = {tuple(o.shape[:1] + o.shape[2:]) for o in outs}
        if len(sizes) != 1:
            raise ShapeError(
                "TTFSConcat branches must agree in every dim but channels, got "
                f"{[tuple(o.shape) for o in outs]}"
            )
        return torch.cat(outs, 1)


class TTFSFlatten(nn.Module):
    """``[B, C, H, W] -> [B, C H W]`` (no change of spike times)."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z.reshape(z.shape[0], -1)


def ttfs_weighted_layers(model: nn.Module) -> list[_TTFSWeighted]:
    """The dense and conv layers of a model, in order."""
    return [m for m in model.modules() if isinstance(m, _TTFSWeighted)]


WEIGHT_INITS = ("paper", "signed")


def init_weights(
    model: nn.Module, init: str = "paper", row_sum: float = 4.0, spread: float = 3.0
) -> nn.Module:
    """Initialise the TTFS layers of ``model``: ``"paper"`` leaves the paper's
    ``U[0, 8 / (N + 1)]`` (drawn when the layers were built); ``"signed"`` redraws every layer but
    the last as ``w_ji = row_sum / N + spread / sqrt(N) (e_ji - mean_i e_ji)``, ``e ~ N(0, 1)``,
    bias 0, ``N`` = fan-in: every row sums to exactly ``row_sum``, around it the weights have
    both signs.

    Why: with only positive weights and (at init) nearly every input in the causal set, a layer
    computes ``z_out = sum w z / (W - 1)``, a positive weighted mean that every neuron of the layer
    shares up to a scale, so deep stacks collapse to one signal per layer (docs/ttfs.md, "The deep
    models at small scale"). The zero-sum part keeps the neurons distinct: the deviation of the
    inputs from their mean, ``sigma``, reaches the output as ``spread sigma / (row_sum - 1)``, so
    ``spread = row_sum - 1`` (the defaults) keeps it at the same scale from layer to layer; the
    fixed row sum leaves the weight-sum penalty ``K max(0, beta - sum w)`` inactive at the start
    and sets how much later than its inputs a neuron fires (``row_sum = 4``: the paper's expected
    sum). The output layer keeps the paper's positive init so that every class fires at first.
    """
    if init not in WEIGHT_INITS:
        raise ConfigError(f"TTFS weight init must be one of {WEIGHT_INITS}, got {init!r}")
    if not row_sum > 1 or not spread >= 0:
        raise ConfigError(f"signed init needs row_sum > 1 and spread >= 0, got {row_sum}, {spread}")
    if init == "paper":
        return model
    with torch.no_grad():
        for layer in ttfs_weighted_layers(model)[:-1]:
            rows = layer.weight.view(layer.weight.shape[0], -1)
            n = rows.shape[1]
            noise = torch.randn_like(rows)
            rows.copy_(row_sum / n + spread / math.sqrt(n) * (noise - noise.mean(1, keepdim=True)))
            layer.bias.zero_()
    return model


def set_weight_bits(model: nn.Module, bits: int, range_quantile: float | None = None) -> None:
    """Switch QAT forward quantization of every TTFS layer (32 = full precision);
    ``range_quantile`` (kept when None) picks the quantizer range, 1 = ``max|w|`` (spec)."""
    if not isinstance(bits, int) or bits < 2:
        raise ConfigError(f"weight bits must be an integer >= 2, got {bits!r}")
    if range_quantile is not None and not 0 < range_quantile <= 1:
        raise ConfigError(f"range_quantile must be in (0, 1], got {range_quantile}")
    for layer in ttfs_weighted_layers(model):
        layer.weight_bits = bits
        if range_quantile is not None:
            layer.range_quantile = range_quantile
