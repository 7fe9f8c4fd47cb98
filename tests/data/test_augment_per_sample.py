"""Per-sample augmentations (crop + flip, Cutout, RandAugment) for a Dataset's transform."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, TensorDataset

from spikequant.data.augment import (
    RAND_AUGMENT_OPS,
    Compose,
    Cutout,
    RandAugment,
    RandomCropFlip,
    apply_op,
    cutout,
    standard_augment,
)
from spikequant.errors import ConfigError, ShapeError


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_cutout_zeroes_one_clipped_square_per_sample():
    x = torch.ones(64, 2, 9, 9)
    out = cutout(x, 4, generator=_gen(0))
    for b in range(64):
        zero = (out[b, 0] == 0).nonzero()
        rows, cols = zero[:, 0], zero[:, 1]
        height, width = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert len(zero) == height * width  # one axis-aligned rectangle
        assert height <= 4 and width <= 4
        assert torch.equal(out[b, 0], out[b, 1])  # same square on every channel
    full = [(out[b, 0] == 0).sum() for b in range(64)]
    assert max(full) == 16 and min(full) < 16  # squares at the border are clipped


def test_ops_keep_range_shape_and_match_pil_where_pil_defines_them():
    rgb = np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    img = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    for op in RAND_AUGMENT_OPS:
        out = apply_op(img, op, 0.5, -1.0)
        assert out.shape == img.shape and 0 <= float(out.min()) and float(out.max()) <= 1, op
    assert torch.equal(apply_op(img, "identity", 1.0), img)
    for op in ("brightness", "contrast", "color", "sharpness", "rotate", "shear_x"):
        assert torch.equal(apply_op(img, op, 0.0), img), op  # magnitude 0 is the identity
    pil = Image.fromarray(rgb)
    expected = {
        "equalize": ImageOps.equalize(pil),
        "posterize": ImageOps.posterize(pil, 6),  # m = 0.5: 8 - int(4 * 0.5) = 6 bits
        "solarize": ImageOps.solarize(pil, 128),
    }
    for op, reference in expected.items():
        m = 127.5 / 255 if op == "solarize" else 0.5  # threshold 1 - m = 128 / 255 ~ 0.502
        got = (apply_op(img, op, m) * 255).round().byte().permute(1, 2, 0).numpy()
        assert np.abs(got.astype(int) - np.asarray(reference, dtype=int)).max() <= 1, op
    shifted = apply_op(img, "translate_x", 1.0)  # round(0.45 * 10) = 4 pixels, zero fill
    assert float(shifted[..., -4:].abs().sum()) == 0
    assert torch.equal(shifted[..., :-4], img[..., 4:])


def test_rand_augment_is_reproducible_and_changes_images():
    img = torch.rand(3, 16, 16, generator=_gen(1))
    a = [RandAugment(2, 9, _gen(5))(img) for _ in range(2)]
    assert torch.equal(a[0], a[1])
    aug = RandAugment(2, 9, _gen(6))
    assert sum(not torch.equal(aug(img), img) for _ in range(10)) >= 7
    with pytest.raises(ConfigError):
        RandAugment(2, 31)
    with pytest.raises(ShapeError):
        aug(torch.rand(2, 3, 16, 16))
    with pytest.raises(ConfigError, match="unknown augmentation op"):
        apply_op(img, "invert", 0.5)


def test_per_sample_transforms_run_in_a_dataloader():
    images = torch.rand(8, 3, 12, 12, generator=_gen(2)) + 0.1

    class Augmented(TensorDataset):
        def __init__(self, transform):
            super().__init__(images, torch.arange(8))
            self.transform = transform

        def __getitem__(self, i):
            x, y = super().__getitem__(i)
            return self.transform(x), y

    transform = Compose(RandomCropFlip(2, True, _gen(3)), Cutout(4, _gen(4)))
    xb, yb = next(iter(DataLoader(Augmented(transform), batch_size=8)))
    assert xb.shape == (8, 3, 12, 12) and yb.tolist() == list(range(8))
    assert all((xb[b] == 0).any() for b in range(8))  # cutout or the crop's zero padding
    standard = standard_augment(generator=_gen(7))
    assert standard(images[0]).shape == (3, 12, 12)
