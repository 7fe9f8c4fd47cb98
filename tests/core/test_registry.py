"""Every registered model is covered by the contract of its family."""

import pytest
import torch

import spikequant as sq
from spikequant.errors import ConfigError
from spikequant.registry import MODEL_FAMILIES, model_family


def test_every_model_has_a_known_family_and_the_zoo_is_complete():
    names = sq.list_models()
    assert all(model_family(n) in MODEL_FAMILIES for n in names)
    assert set(sq.list_models(family="snn")) >= {
        "vgg9",
        "vgg11",
        "vgg16",
        "resnet18",
        "resnet19",
        "resnet20",
        "cnn_digits",
        "resnet8_kws",
    }
    by_family = [sq.list_models(family=f) for f in ("snn", "ann", "ttfs", "detection")]
    assert sorted(sum(by_family, [])) == names


def test_unknown_family_and_model_are_refused():
    with pytest.raises(ConfigError, match="family"):
        sq.register_model(lambda: None, name="x_bad_family", family="cnn")
    with pytest.raises(ConfigError, match="unknown model"):
        model_family("nope")


@pytest.mark.parametrize("name", sq.list_models(family="ann"))
def test_ann_family_contract(name):
    torch.manual_seed(0)
    model = sq.create_model(name, num_classes=10)
    x = torch.rand(3, 1, 28, 28, requires_grad=True)
    out = model(x)
    assert out.shape == (3, 10)
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


# The deep TTFS models default to the paper's CIFAR-10 / ImageNet sizes; the contract runs them
# on 28x28 digits at 1/16 width.
TTFS_SMALL = {
    "ttfs_vgg16": dict(input_shape=[1, 28, 28], width=1 / 16),
    "ttfs_googlenet": dict(input_shape=[1, 28, 28], width=1 / 16, num_classes=10),
}


@pytest.mark.parametrize("name", sq.list_models(family="ttfs"))
def test_ttfs_family_contract(name):
    torch.manual_seed(0)
    model = sq.create_model(name, **TTFS_SMALL.get(name, {}))
    x = torch.rand(3, 1, 28, 28)
    z = model(x)
    assert z.shape == (3, 10)
    assert bool((z >= 1).all())  # z = exp(t) with t >= 0
    z.clamp(max=1e3).sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", sq.list_models(family="detection"))
def test_detection_family_contract(name):
    torch.manual_seed(0)
    model = sq.create_model(name, num_classes=10, timesteps=2, input_size=32)
    x = torch.rand(3, 1, 32, 32)
    head = model(x)
    assert head.shape[0] == 3 and head.shape[-1] == 5 + 10
    head.sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    model.score_threshold = 0.0
    found = model.decode(head.detach())
    assert len(found) == 3 and all(set(d) == {"boxes", "scores", "labels"} for d in found)
