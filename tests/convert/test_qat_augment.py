"""The qat method trains on the recipe's augmented batches (random crop with padding, flip), as
the other methods do: the images its model sees in training are shifted/mirrored copies of the
real training digits, the same ones for the same seed, the plain digits without augmentation."""

import pytest
import torch
import torch.nn.functional as F

from spikequant.config import load_recipe, run_recipe
from spikequant.data import get_dataset
from spikequant.train.trainer import Trainer

pytestmark = pytest.mark.slow

IMAGES = 32
PADDING = 2
SHORT = [
    f"data.train_subset={IMAGES}",
    "data.test_subset=16",
    "data.batch_size=16",
    "train.epochs=1",
    "method.fold_epochs=1",  # the fine-tune after folding BN is augmented too
]
AUGMENTED = [f"data.augment={{crop_padding: {PADDING}, flip: true}}"]


def _training_inputs(overrides, out, monkeypatch):
    """Every batch the trainer feeds the model in a training step."""
    seen = []
    forward = Trainer.forward

    def recording_forward(trainer, x):
        seen.append(x.detach().clone())
        return forward(trainer, x)

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "forward", recording_forward)
        run_recipe(load_recipe("qat-mnist", [*SHORT, *overrides]), out_dir=out, progress=False)
    return torch.cat(seen)


def _shifted(image, dy, dx):
    """``image`` moved by ``(dy, dx)`` pixels, zeros shifted in (a crop of the zero-padded one)."""
    p = PADDING
    padded = F.pad(image, (p, p, p, p))
    h, w = image.shape[-2:]
    return padded[..., p - dy : p - dy + h, p - dx : p - dx + w]


def _explain(image, raw):
    """``(index, dy, dx, flipped)`` of a raw image this one is a shifted/mirrored copy of."""
    for i, source in enumerate(raw):
        for flipped in (False, True):
            base = source.flip(-1) if flipped else source
            for dy in range(-PADDING, PADDING + 1):
                for dx in range(-PADDING, PADDING + 1):
                    if torch.equal(_shifted(base, dy, dx), image):
                        return i, dy, dx, flipped
    return None


def test_qat_batches_are_augmented_reproducibly(tmp_path, monkeypatch):
    raw = get_dataset("mnist5k", "train")[:IMAGES][0]
    assert raw.shape == (IMAGES, 1, 28, 28)

    plain = _training_inputs([], tmp_path / "plain", monkeypatch)
    assert len(plain) == 2 * IMAGES  # one main epoch and one fine-tune epoch, every image once
    for image in plain:  # without augmentation the model sees the digits themselves
        assert any(torch.equal(image, source) for source in raw)

    seen = _training_inputs(AUGMENTED, tmp_path / "augmented", monkeypatch)
    assert seen.shape == plain.shape
    how = [_explain(image, raw) for image in seen]
    assert all(h is not None for h in how)  # each one a shifted and/or mirrored real digit
    moved = [h for h in how if (h[1], h[2]) != (0, 0)]
    mirrored = [h for h in how if h[3]]
    assert len(moved) > IMAGES and len(mirrored) > IMAGES // 2
    # every training image still appears once per epoch (augmentation does not resample)
    assert sorted(h[0] for h in how) == sorted(list(range(IMAGES)) * 2)

    again = _training_inputs(AUGMENTED, tmp_path / "again", monkeypatch)
    assert torch.equal(again, seen)  # same seed, same augmented batches
    other_seed = _training_inputs([*AUGMENTED, "seed=1"], tmp_path / "seed1", monkeypatch)
    assert not torch.equal(other_seed, seen)


CIFAR_AUGMENT = {"crop_padding": 4, "random_resize": False, "flip": True, "cutout": 16,
                 "rand_augment_ops": 2, "rand_augment_magnitude": 9}  # fmt: skip


@pytest.mark.parametrize(
    "name, augment",
    [
        ("cifar10-vgg16-msat", CIFAR_AUGMENT),
        ("cifar100-resnet20-msat", CIFAR_AUGMENT),
        ("imagenet-resnet34-msat", {"crop_padding": 0, "random_resize": True, "flip": True,
                                    "cutout": 0, "rand_augment_ops": 0,
                                    "rand_augment_magnitude": 9}),
    ],
)  # fmt: skip
def test_msat_paper_recipes_ship_the_augmentation_that_is_implemented(name, augment):
    # the paper: flip + Cutout + AutoAugment (RandAugment stands in for AutoAugment's policy)
    assert load_recipe(name)["data"]["augment"] == augment
