"""Batch augmentation with plain tensor ops (no torchvision), reproducible under a torch.Generator.

Every function takes a batch ``x`` of shape ``[B, ..., H, W]`` (batch first; the middle dims,
e.g. channels or ``[T, C]`` of event frames, get the same transform per sample) and draws its
randomness from ``generator`` (the global torch RNG when None). Same generator state, same
output. For a single image pass ``x[None]``.

* :func:`random_crop`: zero-pad by ``padding`` then cut a random ``size`` window (integer shifts).
* :func:`random_resized_crop`: a random box of area fraction ``s ~ U(scale)`` and aspect ratio
  ``r`` with ``log r ~ U(log ratio)`` (box width ``sqrt(s r)``, height ``sqrt(s / r)`` as
  fractions of the image, clipped to 1) resampled bilinearly to ``size``.
* :func:`random_horizontal_flip`: mirror the last axis with probability ``p`` per sample.
* :func:`mixup`: ``x~ = lam x + (1 - lam) x[perm]``, ``lam ~ Beta(alpha, alpha)`` for the batch,
  returning ``(x~, (y, y[perm], lam))``; train with :func:`mixup_cross_entropy`
  ``= lam CE(z, y_a) + (1 - lam) CE(z, y_b)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, ShapeError


def _check_batch(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() < 3:
        shape = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ShapeError(f"{name} expects a batch [B, ..., H, W] with at least 3 dims, got {shape}")


def _pair(size, x: torch.Tensor) -> tuple[int, int]:
    if size is None:
        return int(x.shape[-2]), int(x.shape[-1])
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def _uniform(n: int, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, generator=generator, dtype=torch.float64)


def random_crop(
    x: torch.Tensor,
    size: int | tuple[int, int] | None = None,
    padding: int = 4,
    generator: torch.Generator | None = None,
    fill: float = 0.0,
) -> torch.Tensor:
    """Pad each side by ``padding`` with ``fill``, then take a ``size`` window at a random
    integer offset ``(i, j)``, ``0 <= i <= H + 2p - h``, per sample (default size: the input's)."""
    _check_batch(x, "random_crop")
    if padding < 0:
        raise ConfigError(f"padding must be >= 0, got {padding}")
    out_h, out_w = _pair(size, x)
    padded = F.pad(x, (padding, padding, padding, padding), value=fill) if padding else x
    full_h, full_w = padded.shape[-2], padded.shape[-1]
    if out_h > full_h or out_w > full_w:
        raise ConfigError(f"crop {out_h}x{out_w} is larger than the padded image {full_h}x{full_w}")
    batch = x.shape[0]
    top = (_uniform(batch, generator) * (full_h - out_h + 1)).long().clamp_(max=full_h - out_h)
    left = (_uniform(batch, generator) * (full_w - out_w + 1)).long().clamp_(max=full_w - out_w)
    flat = padded.reshape(batch, -1, full_h, full_w)
    rows = (top[:, None] + torch.arange(out_h)).to(x.device)
    cols = (left[:, None] + torch.arange(out_w)).to(x.device)
    batch_index = torch.arange(batch, device=x.device)[:, None, None, None]
    mid_index = torch.arange(flat.shape[1], device=x.device)[None, :, None, None]
    cropped = flat[batch_index, mid_index, rows[:, None, :, None], cols[:, None, None, :]]
    return cropped.reshape(*x.shape[:-2], out_h, out_w)


def random_resized_crop(
    x: torch.Tensor,
    size: int | tuple[int, int] | None = None,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Crop a random box (area fraction ``s ~ U(scale)``, aspect ``exp(U(log ratio))``) and
    resample it bilinearly to ``size`` (default: the input size).

    Unlike torchvision's rejection loop, boxes that do not fit are clipped to the image side, so
    every sample costs the same and the draw count is fixed (one reason it is reproducible).
    """
    _check_batch(x, "random_resized_crop")
    lo, hi = float(scale[0]), float(scale[1])
    if not 0 < lo <= hi <= 1:
        raise ConfigError(f"scale must satisfy 0 < low <= high <= 1, got {tuple(scale)}")
    if not 0 < ratio[0] <= ratio[1]:
        raise ConfigError(f"ratio must satisfy 0 < low <= high, got {tuple(ratio)}")
    out_h, out_w = _pair(size, x)
    batch = x.shape[0]
    area = lo + (hi - lo) * _uniform(batch, generator)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * _uniform(batch, generator))
    box_w = torch.sqrt(area * aspect).clamp(max=1.0)
    box_h = torch.sqrt(area / aspect).clamp(max=1.0)
    # centres in [-1, 1] normalised coordinates, chosen so the box stays inside the image
    centre_x = (1 - box_w) * (2 * _uniform(batch, generator) - 1)
    centre_y = (1 - box_h) * (2 * _uniform(batch, generator) - 1)
    theta = torch.zeros(batch, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 2] = box_w, centre_x
    theta[:, 1, 1], theta[:, 1, 2] = box_h, centre_y
    flat = x.reshape(batch, -1, x.shape[-2], x.shape[-1])
    dtype = flat.dtype if flat.is_floating_point() else torch.float32
    grid = F.affine_grid(
        theta.to(x.device, dtype), [batch, flat.shape[1], out_h, out_w], align_corners=False
    )
    resampled = F.grid_sample(
        flat.to(dtype), grid, mode="bilinear", padding_mode="border", align_corners=False
    )
    return resampled.reshape(*x.shape[:-2], out_h, out_w)


def random_horizontal_flip(
    x: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Mirror the width axis of each sample independently with probability ``p``."""
    _check_batch(x, "random_horizontal_flip")
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"flip probability must be in [0, 1], got {p}")
    flip = (_uniform(x.shape[0], generator) < p).to(x.device)
    flip = flip.view(-1, *([1] * (x.dim() - 1)))
    return torch.where(flip, x.flip(-1), x)


def sample_beta(alpha: float, generator: torch.Generator | None = None) -> float:
    """``lam ~ Beta(alpha, alpha)``, seeded from ``generator`` (torch has no seeded Beta)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def mixup(
    x: torch.Tensor, y: torch.Tensor, alpha: float = 1.0, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, float]]:
    """Mix each sample with a random partner: ``x~ = lam x + (1 - lam) x[perm]``.

    Returns ``(x~, (y_a, y_b, lam))`` with ``y_a = y`` and ``y_b = y[perm]``. ``alpha <= 0``
    disables mixing (``lam = 1``, ``perm`` = identity).
    """
    if x.shape[0] != y.shape[0]:
        raise ShapeError(f"mixup: {x.shape[0]} inputs but {y.shape[0]} labels")
    if alpha <= 0:
        return x, (y, y, 1.0)
    lam = sample_beta(alpha, generator)
    perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
    mixed = lam * x + (1.0 - lam) * x[perm]
    return mixed, (y, y[perm], lam)


def mixup_cross_entropy(
    logits: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor, lam: float
) -> torch.Tensor:
    """``lam CE(logits, y_a) + (1 - lam) CE(logits, y_b)``: CE against the mixed one-hot target."""
    return lam * F.cross_entropy(logits, y_a) + (1.0 - lam) * F.cross_entropy(logits, y_b)


@dataclass(frozen=True)
class Augment:
    """Input augmentation for a training batch, built from a recipe's ``augment`` mapping.

    Order: random resized crop (if ``resized_crop_scale``), random crop with padding (if
    ``crop_padding``), horizontal flip (if ``flip``), RandAugment per image (``rand_augment =
    (num_ops, magnitude)``), Cutout (a ``cutout`` x ``cutout`` square per image). Mixup needs the
    labels and is applied by the trainer through :func:`mixup` with ``mixup_alpha``.
    """

    crop_padding: int | None = None
    resized_crop_scale: tuple[float, float] | None = None
    resized_crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = False
    mixup_alpha: float = 0.0
    rand_augment: tuple[int, int] | None = None
    cutout: int = 0

    _KEYS = ("crop_padding", "resized_crop_scale", "resized_crop_ratio", "flip", "mixup_alpha",
             "rand_augment", "cutout")  # fmt: skip

    @classmethod
    def from_config(cls, cfg: Mapping | None) -> Augment:
        """E.g. ``{"crop_padding": 4, "flip": true, "mixup_alpha": 1.0}``; unknown keys raise."""
        if not cfg:
            return cls()
        if not isinstance(cfg, Mapping):
            raise ConfigError(f"augment must be a mapping, got {type(cfg).__name__}")
        unknown = sorted(set(cfg) - set(cls._KEYS))
        if unknown:
            raise ConfigError(f"unknown augment option(s) {unknown}; known: {list(cls._KEYS)}")
        kwargs = dict(cfg)
        for key in ("resized_crop_scale", "resized_crop_ratio"):
            if kwargs.get(key) is not None:
                value = kwargs[key]
                if not isinstance(value, (list, tuple)) or len(value) != 2:
                    raise ConfigError(f"augment.{key} must be a pair [low, high], got {value!r}")
                kwargs[key] = (float(value[0]), float(value[1]))
        if kwargs.get("crop_padding") is not None and int(kwargs["crop_padding"]) < 0:
            raise ConfigError(f"augment.crop_padding must be >= 0, got {kwargs['crop_padding']}")
        if float(kwargs.get("mixup_alpha", 0.0)) < 0:
            raise ConfigError(f"augment.mixup_alpha must be >= 0, got {kwargs['mixup_alpha']}")
        return cls(**kwargs)

    @property
    def active(self) -> bool:
        return bool(
            self.crop_padding is not None
            or self.resized_crop_scale
            or self.flip
            or self.rand_augment
            or self.cutout
        )

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.resized_crop_scale is not None:
            x = random_resized_crop(
                x, scale=self.resized_crop_scale, ratio=self.resized_crop_ratio, generator=generator
            )
        if self.crop_padding is not None:
            x = random_crop(x, padding=int(self.crop_padding), generator=generator)
        if self.flip:
            x = random_horizontal_flip(x, generator=generator)
        if self.rand_augment:
            ops = RandAugment(*self.rand_augment, generator=generator)
            x = torch.stack([ops(img) for img in x])
        if self.cutout:
            x = cutout(x, int(self.cutout), generator=generator)
        return x


def build_batch_augment(
    crop_padding: int = 0,
    random_resize: bool = False,
    flip: bool = False,
    mixup_alpha: float = 0.0,
    resized_crop_scale: tuple[float, float] = (0.08, 1.0),
    rand_augment: tuple[int, int] | None = None,
    cutout: int = 0,
):
    """The trainer's hook: ``fn(x, y, generator)`` returning ``(x, y)``, or ``(x, y_a, y_b, lam)``
    when ``mixup_alpha > 0``. Order: random resized crop (``random_resize``), random crop with
    ``crop_padding`` (0 = off), flip, RandAugment (``(num_ops, magnitude)``), Cutout (square
    side, 0 = off), then mixup; all randomness comes from ``generator``."""
    augment = Augment(
        crop_padding=int(crop_padding) if crop_padding else None,
        resized_crop_scale=tuple(resized_crop_scale) if random_resize else None,
        flip=bool(flip),
        mixup_alpha=float(mixup_alpha),
        rand_augment=tuple(rand_augment) if rand_augment else None,
        cutout=int(cutout),
    )

    def apply(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None):
        x = augment(x, generator)
        if augment.mixup_alpha > 0:
            mixed, (y_a, y_b, lam) = mixup(x, y, augment.mixup_alpha, generator)
            return mixed, y_a, y_b, lam
        return x, y

    return apply


# ---------------------------------------------------------------------------------------------
# Per-sample transforms: callables on one image ``[C, H, W]`` in [0, 1], for a Dataset's
# ``transform=`` (run by DataLoader workers). Each draws from its own ``generator`` if given.


def cutout(
    x: torch.Tensor, size: int, generator: torch.Generator | None = None, fill: float = 0.0
) -> torch.Tensor:
    """Cutout (DeVries & Taylor, 2017): per sample, set a ``size x size`` square centred at a
    uniformly drawn pixel ``(cy, cx)`` to ``fill`` (the square is clipped at the border)."""
    _check_batch(x, "cutout")
    if size < 0:
        raise ConfigError(f"cutout size must be >= 0, got {size}")
    height, width = x.shape[-2], x.shape[-1]
    batch = x.shape[0]
    cy = (_uniform(batch, generator) * height).long().clamp_(max=height - 1).to(x.device)
    cx = (_uniform(batch, generator) * width).long().clamp_(max=width - 1).to(x.device)
    rows = torch.arange(height, device=x.device)[None, :]
    cols = torch.arange(width, device=x.device)[None, :]
    top, left = cy[:, None] - size // 2, cx[:, None] - size // 2
    in_rows = (rows >= top) & (rows < top + size)
    in_cols = (cols >= left) & (cols < left + size)
    mask = (in_rows[:, :, None] & in_cols[:, None, :]).view(
        batch, *([1] * (x.dim() - 3)), height, width
    )
    return x.masked_fill(mask, fill)


def _grey(img: torch.Tensor) -> torch.Tensor:
    """ITU-R 601-2 luma of ``[C, H, W]`` (C = 3), or the image itself for one channel."""
    if img.shape[0] != 3:
        return img
    r, g, b = img[0], img[1], img[2]
    return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(0)


def _blend(img: torch.Tensor, other: torch.Tensor, factor: float) -> torch.Tensor:
    return (factor * img + (1.0 - factor) * other).clamp(0.0, 1.0)


def _affine(img: torch.Tensor, matrix: list[list[float]]) -> torch.Tensor:
    """Resample ``img`` with a 2x3 affine ``matrix`` in normalised [-1, 1] coordinates (output
    pixel -> input pixel), nearest neighbour, zero fill."""
    theta = torch.tensor([matrix], dtype=img.dtype, device=img.device)
    grid = F.affine_grid(theta, [1, *img.shape], align_corners=False)
    return F.grid_sample(img[None], grid, mode="nearest", padding_mode="zeros",
                         align_corners=False)[0]  # fmt: skip


def _equalize(img: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation of each channel on 256 levels (PIL's ImageOps.equalize rule)."""
    levels = (img * 255).round().long().clamp(0, 255)
    out = torch.empty_like(img)
    for c in range(img.shape[0]):
        hist = torch.bincount(levels[c].flatten(), minlength=256)
        nonzero = hist[hist > 0]
        step = int((hist.sum() - nonzero[-1]) // 255) if len(nonzero) else 0
        if step == 0:
            out[c] = img[c]
            continue
        lut = ((torch.cumsum(hist, 0) - hist + step // 2) // step).clamp(0, 255)
        out[c] = lut[levels[c]].to(img.dtype) / 255
    return out


def _sharpen_kernel(img: torch.Tensor) -> torch.Tensor:
    kernel = torch.ones(3, 3, dtype=img.dtype, device=img.device)
    kernel[1, 1] = 5.0
    kernel = (kernel / 13).expand(img.shape[0], 1, 3, 3)
    smooth = F.conv2d(img[None], kernel, padding=1, groups=img.shape[0])[0]
    smooth[..., 0, :], smooth[..., -1, :] = img[..., 0, :], img[..., -1, :]
    smooth[..., :, 0], smooth[..., :, -1] = img[..., :, 0], img[..., :, -1]
    return smooth


#: RandAugment's 14 operations; ``m`` in [0, 1] is magnitude / 30, ``sign`` is +-1.
RAND_AUGMENT_OPS = (
    "identity", "autocontrast", "equalize", "rotate", "solarize", "color", "posterize",
    "contrast", "brightness", "sharpness", "shear_x", "shear_y", "translate_x", "translate_y",
)  # fmt: skip


def apply_op(img: torch.Tensor, op: str, m: float, sign: float = 1.0) -> torch.Tensor:
    """One RandAugment operation on ``[C, H, W]`` in [0, 1] at relative magnitude ``m`` in [0, 1].

    Ranges at ``m = 1`` (torchvision's RandAugment): rotate 30 degrees, shear 0.3, translate
    ``round(0.45 * side)`` pixels (content moves by ``-sign`` times that, zero fill),
    colour/contrast/brightness/sharpness factor ``1 +- 0.9``, posterize to ``8 - floor(4m)``
    bits, solarize threshold ``1 - m``."""
    if op == "identity":
        return img
    if op == "autocontrast":
        low = img.amin(dim=(-2, -1), keepdim=True)
        high = img.amax(dim=(-2, -1), keepdim=True)
        span = high - low
        return torch.where(span > 0, (img - low) / span.clamp(min=1e-12), img)
    if op == "equalize":
        return _equalize(img)
    if op == "rotate":
        angle = math.radians(30.0 * m * sign)
        cos, sin = math.cos(angle), math.sin(angle)
        aspect = img.shape[-2] / img.shape[-1]
        return _affine(img, [[cos, -sin * aspect, 0.0], [sin / aspect, cos, 0.0]])
    if op == "solarize":
        threshold = 1.0 - m
        return torch.where(img >= threshold, 1.0 - img, img)
    if op == "posterize":
        bits = 8 - int(4 * m)
        levels = (img * 255).round().to(torch.uint8) >> (8 - bits) << (8 - bits)
        return levels.to(img.dtype) / 255
    factor = 1.0 + 0.9 * m * sign
    if op == "color":
        return _blend(img, _grey(img).expand_as(img), factor)
    if op == "contrast":
        return _blend(img, _grey(img).mean().expand_as(img), factor)
    if op == "brightness":
        return _blend(img, torch.zeros_like(img), factor)
    if op == "sharpness":
        return _blend(img, _sharpen_kernel(img), factor)
    if op in ("shear_x", "shear_y"):
        shear = 0.3 * m * sign
        matrix = [[1.0, shear, 0.0], [0.0, 1.0, 0.0]] if op == "shear_x" else [
            [1.0, 0.0, 0.0], [shear, 1.0, 0.0]]  # fmt: skip
        return _affine(img, matrix)
    if op in ("translate_x", "translate_y"):
        side = img.shape[-1] if op == "translate_x" else img.shape[-2]
        pixels = round(0.45 * m * side) * sign  # whole pixels, so nothing is interpolated
        shift = 2.0 * pixels / side  # normalised coordinates span 2
        matrix = [[1.0, 0.0, shift], [0.0, 1.0, 0.0]] if op == "translate_x" else [
            [1.0, 0.0, 0.0], [0.0, 1.0, shift]]  # fmt: skip
        return _affine(img, matrix)
    raise ConfigError(f"unknown augmentation op {op!r}; known: {', '.join(RAND_AUGMENT_OPS)}")


class RandAugment:
    """RandAugment (Cubuk et al., 2020) on one image: ``num_ops`` operations drawn uniformly with
    replacement from :data:`RAND_AUGMENT_OPS`, each at ``magnitude / 30`` with a random sign for
    the signed ones."""

    def __init__(
        self, num_ops: int = 2, magnitude: int = 9, generator: torch.Generator | None = None
    ) -> None:
        if num_ops < 0 or not 0 <= magnitude <= 30:
            raise ConfigError(
                f"need num_ops >= 0 and 0 <= magnitude <= 30, got {num_ops}, {magnitude}"
            )
        self.num_ops = int(num_ops)
        self.magnitude = int(magnitude)
        self.generator = generator

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        _check_image(img, "RandAugment")
        for _ in range(self.num_ops):
            op = RAND_AUGMENT_OPS[
                int(torch.randint(len(RAND_AUGMENT_OPS), (1,), generator=self.generator))
            ]
            sign = 1.0 if float(_uniform(1, self.generator)) < 0.5 else -1.0
            img = apply_op(img, op, self.magnitude / 30.0, sign)
        return img


def _check_image(img: torch.Tensor, name: str) -> None:
    if not isinstance(img, torch.Tensor) or img.dim() != 3:
        shape = list(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
        raise ShapeError(f"{name} expects one image [C, H, W], got {shape}")


class RandomCropFlip:
    """Zero-pad by ``padding``, random crop back to the input size, mirror with probability 1/2."""

    def __init__(self, padding: int = 4, flip: bool = True, generator=None) -> None:
        self.padding, self.flip, self.generator = int(padding), bool(flip), generator

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        _check_image(img, "RandomCropFlip")
        out = random_crop(img[None], padding=self.padding, generator=self.generator)
        if self.flip:
            out = random_horizontal_flip(out, generator=self.generator)
        return out[0]


class Cutout:
    """:func:`cutout` of one ``size x size`` square per image."""

    def __init__(self, size: int = 16, generator=None, fill: float = 0.0) -> None:
        self.size, self.generator, self.fill = int(size), generator, float(fill)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        _check_image(img, "Cutout")
        return cutout(img[None], self.size, self.generator, self.fill)[0]


class Compose:
    """Apply transforms in order (e.g. the MSAT paper's ANN training: crop + flip, RandAugment,
    Cutout)."""

    def __init__(self, *transforms) -> None:
        self.transforms = transforms

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        for transform in self.transforms:
            img = transform(img)
        return img


def standard_augment(padding: int = 4, cutout_size: int = 16, rand_augment: bool = True,
                     generator: torch.Generator | None = None) -> Compose:  # fmt: skip
    """Random crop (``padding``) + flip, RandAugment (2 ops, magnitude 9) if asked, Cutout."""
    steps = [RandomCropFlip(padding, True, generator)]
    if rand_augment:
        steps.append(RandAugment(2, 9, generator))
    if cutout_size:
        steps.append(Cutout(cutout_size, generator))
    return Compose(*steps)
