import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spikequant.data.augment import (
    Augment,
    mixup,
    mixup_cross_entropy,
    random_crop,
    random_horizontal_flip,
    random_resized_crop,
)
from spikequant.errors import ConfigError, ShapeError


def _gen(seed):
    return torch.Generator().manual_seed(seed)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31), padding=st.integers(0, 4), h=st.integers(3, 9), w=st.integers(3, 9)
)
def test_random_crop_is_a_window_of_the_padded_image(seed, padding, h, w):
    x = (
        torch.rand(3, 2, h, w, generator=_gen(seed + 1)) + 1.0
    )  # strictly positive: padding is visible
    out = random_crop(x, padding=padding, generator=_gen(seed))
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    for b in range(3):
        windows = [
            (i, j)
            for i in range(2 * padding + 1)
            for j in range(2 * padding + 1)
            if torch.equal(padded[b, :, i : i + h, j : j + w], out[b])
        ]
        assert windows, "crop is not a window of the zero-padded image"


def test_random_crop_covers_all_offsets_and_is_deterministic():
    x = torch.arange(16.0).view(1, 1, 4, 4).repeat(400, 1, 1, 1)
    a = random_crop(x, padding=1, generator=_gen(3))
    b = random_crop(x, padding=1, generator=_gen(3))
    assert torch.equal(a, b)
    distinct = {tuple(a[i].flatten().tolist()) for i in range(len(a))}
    assert len(distinct) == 9  # 3 x 3 offsets, all reached
    assert torch.equal(random_crop(x[:2], padding=0, generator=_gen(0)), x[:2])
    smaller = random_crop(x[:5], size=2, padding=0, generator=_gen(1))
    assert smaller.shape == (5, 1, 2, 2)


def test_random_crop_keeps_middle_dims_together():
    x = torch.rand(4, 3, 2, 6, 6)  # [B, T, C, H, W]: one crop per sample, shared across T and C
    x[:, 1] = x[:, 0]
    out = random_crop(x, padding=2, generator=_gen(5))
    assert out.shape == x.shape
    assert torch.equal(out[:, 1], out[:, 0])


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31))
def test_flip_is_per_sample_mirror_or_identity(seed):
    x = torch.rand(8, 3, 5, 7, generator=_gen(seed))
    out = random_horizontal_flip(x, generator=_gen(seed))
    for b in range(8):
        assert torch.equal(out[b], x[b]) or torch.equal(out[b], x[b].flip(-1))
    assert torch.equal(random_horizontal_flip(x, p=1.0), x.flip(-1))
    assert torch.equal(random_horizontal_flip(x, p=0.0), x)


def test_flip_rate_is_p():
    x = torch.arange(2.0).view(1, 1, 1, 2).repeat(4000, 1, 1, 1)
    out = random_horizontal_flip(x, p=0.3, generator=_gen(0))
    rate = (out[:, 0, 0, 0] == 1).float().mean().item()
    assert abs(rate - 0.3) < 0.03


def test_resized_crop_full_box_is_identity_and_ranges_hold():
    x = torch.rand(4, 3, 8, 8, generator=_gen(0))
    same = random_resized_crop(x, scale=(1.0, 1.0), ratio=(1.0, 1.0), generator=_gen(1))
    torch.testing.assert_close(same, x, atol=1e-5, rtol=0)
    out = random_resized_crop(x, size=5, generator=_gen(2))
    assert out.shape == (4, 3, 5, 5)
    # bilinear resampling inside the image never leaves the input's value range
    assert out.min() >= x.min() - 1e-6 and out.max() <= x.max() + 1e-6
    torch.testing.assert_close(
        random_resized_crop(x, generator=_gen(9)), random_resized_crop(x, generator=_gen(9))
    )


def test_resized_crop_of_constant_image_is_constant():
    x = torch.full((3, 2, 6, 6), 0.7)
    out = random_resized_crop(x, scale=(0.1, 0.5), generator=_gen(4))
    torch.testing.assert_close(out, x)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), alpha=st.floats(0.1, 4.0))
def test_mixup_is_a_convex_pairing(seed, alpha):
    x = torch.rand(6, 2, 3, 3, generator=_gen(seed))
    y = torch.arange(6)
    mixed, (y_a, y_b, lam) = mixup(x, y, alpha=alpha, generator=_gen(seed))
    assert 0.0 <= lam <= 1.0
    assert torch.equal(y_a, y)
    assert sorted(y_b.tolist()) == y.tolist()  # a permutation
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x[y_b])
    again, (_, y_b2, lam2) = mixup(x, y, alpha=alpha, generator=_gen(seed))
    assert lam2 == lam and torch.equal(y_b2, y_b) and torch.equal(again, mixed)


def test_mixup_lambda_distribution_and_disable():
    gen = _gen(0)
    lams = torch.tensor(
        [
            mixup(torch.zeros(2, 1, 1, 1), torch.zeros(2), alpha=1.0, generator=gen)[1][2]
            for _ in range(2000)
        ]
    )
    # Beta(1, 1) is uniform: mean 1/2, variance 1/12
    assert abs(lams.mean().item() - 0.5) < 0.03 and abs(lams.var().item() - 1 / 12) < 0.01
    x = torch.rand(3, 1, 2, 2)
    out, (y_a, y_b, lam) = mixup(x, torch.arange(3), alpha=0.0)
    assert out is x and lam == 1.0 and torch.equal(y_b, y_a)


def test_mixup_loss_equals_soft_target_cross_entropy():
    logits = torch.randn(5, 4, generator=_gen(0))
    y_a, y_b, lam = torch.tensor([0, 1, 2, 3, 0]), torch.tensor([1, 1, 0, 2, 3]), 0.3
    soft = lam * torch.nn.functional.one_hot(y_a, 4) + (1 - lam) * torch.nn.functional.one_hot(
        y_b, 4
    )
    expected = -(soft * logits.log_softmax(-1)).sum(-1).mean()
    torch.testing.assert_close(mixup_cross_entropy(logits, y_a, y_b, lam), expected)


def test_augment_from_config_and_errors():
    aug = Augment.from_config({"crop_padding": 4, "flip": True, "mixup_alpha": 1.0})
    x = torch.rand(2, 3, 32, 32)
    assert aug(x, _gen(0)).shape == x.shape
    assert torch.equal(aug(x, _gen(0)), aug(x, _gen(0)))
    assert not Augment.from_config(None).active
    rrc = Augment.from_config({"resized_crop_scale": [0.5, 1.0], "flip": True})
    assert rrc.resized_crop_scale == (0.5, 1.0) and rrc(x, _gen(1)).shape == x.shape
    with pytest.raises(ConfigError, match="unknown augment"):
        Augment.from_config({"crop": 4})
    with pytest.raises(ConfigError):
        Augment.from_config({"resized_crop_scale": 0.5})
    with pytest.raises(ConfigError):
        random_resized_crop(x, scale=(0.0, 1.0))
    with pytest.raises(ShapeError):
        random_crop(torch.rand(4, 4))
    with pytest.raises(ShapeError):
        mixup(x, torch.arange(3))


def test_build_batch_augment_matches_trainer_contract():
    from spikequant.data.augment import build_batch_augment

    x, y = torch.rand(8, 1, 28, 28), torch.arange(8)
    plain = build_batch_augment(crop_padding=2, flip=True)
    out = plain(x, y, _gen(0))
    assert len(out) == 2 and out[0].shape == x.shape and torch.equal(out[1], y)
    assert torch.equal(out[0], plain(x, y, _gen(0))[0])
    mixing = build_batch_augment(random_resize=True, flip=True, mixup_alpha=1.0)
    mixed, y_a, y_b, lam = mixing(x, y, _gen(1))
    assert mixed.shape == x.shape and 0 <= lam <= 1 and sorted(y_b.tolist()) == y.tolist()
    assert build_batch_augment()(x, y, _gen(0))[0] is x


def test_recipe_cutout_and_rand_augment_reach_the_training_batches():
    from spikequant.config import load_recipe
    from spikequant.data import get_dataset
    from spikequant.data.augment import RandAugment, cutout
    from spikequant.train.build import build_augment

    cfg = load_recipe(
        "mnist-quick",
        ["data.augment.cutout=6", "data.augment.rand_augment_ops=2",
         "data.augment.rand_augment_magnitude=12"],
    )  # fmt: skip
    augment = build_augment(cfg)
    x, y = get_dataset("mnist5k", "test").tensors
    x, y = x[:16], y[:16]
    out, labels = augment(x, y, torch.Generator().manual_seed(3))
    again, _ = augment(x, y, torch.Generator().manual_seed(3))
    other, _ = augment(x, y, torch.Generator().manual_seed(4))
    assert torch.equal(labels, y) and torch.equal(out, again) and not torch.equal(out, other)
    # the documented order: RandAugment per image, then Cutout, from the same generator
    g = torch.Generator().manual_seed(3)
    ops = RandAugment(2, 12, generator=g)
    expected = cutout(torch.stack([ops(img) for img in x]), 6, generator=g)
    assert torch.equal(out, expected)
    assert all(not torch.equal(a, b) for a, b in zip(out, x, strict=True))
    with pytest.raises(ConfigError, match="rand_augment_magnitude"):
        load_recipe("mnist-quick", ["data.augment.rand_augment_magnitude=31"])
    with pytest.raises(ConfigError, match="cutout"):
        load_recipe("mnist-quick", ["data.augment.cutot=4"])  # a typo names the key
