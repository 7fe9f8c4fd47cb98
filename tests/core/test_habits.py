"""Habits brought from other libraries get spikequant's own one-line answers, and written files
respect the user's umask."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

import spikequant as sq
from spikequant.errors import ConfigError, ShapeError, StaleStateError, StateShapeError
from spikequant.io import write_text
from spikequant.layers import TimeFold

SRC = Path(sq.__file__).resolve().parents[1]
BACKENDS = ("torch", "fused")


def tiny_net(backend: str) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(TimeFold(nn.Linear(4, 8)), sq.LIF(backend=backend))


@pytest.mark.parametrize("backend", BACKENDS)
def test_second_backward_without_reset_state_is_named(backend):
    net, x = tiny_net(backend), torch.rand(4, 2, 4)
    net(x).sum().backward()
    with pytest.raises(StaleStateError, match=r"reset_state\(model\) before each batch"):
        net(x)
    # what the message advises works, and so does a graph kept on purpose
    sq.reset_state(net)
    net(x).sum().backward()
    sq.detach_state(net)
    net(x).sum().backward()
    sq.reset_state(net)
    net(x).sum().backward(retain_graph=True)
    net(x).sum().backward()
    # a state carried on within one graph (one backward over several chunks) is left alone
    sq.reset_state(net)
    (net(x[:2]).sum() + net(x[2:]).sum()).backward()
    # without gradients nothing can go wrong, so nothing is refused
    with torch.no_grad():
        net(x)


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_step_without_time_dimension_points_to_step_mode(backend):
    neuron, x = sq.LIF(backend=backend), torch.rand(4, 2, 8)
    neuron(x)
    with pytest.raises(StateShapeError, match=r"neuron\.step\(x, state\)"):
        neuron(x[0])
    # the step mode the message names gives the multi-step result
    multi = sq.reset_state(neuron)(x)
    state = neuron.initial_state(x[0])
    steps = []
    for x_t in x:
        out, state = neuron.step(x_t, state)
        steps.append(out)
    assert torch.equal(torch.stack(steps), multi)


def test_one_step_into_a_per_channel_neuron_points_to_step_mode():
    neuron = sq.create_neuron("if", num_channels=3)
    with pytest.raises(ShapeError, match=r"as if one step \[B, C, \.\.\.\]"):
        neuron(torch.rand(2, 3, 5, 5))  # [B, C, H, W]: one step, no time dimension


def test_create_model_and_list_models_as_in_timm():
    assert sq.list_models("resnet*") == [
        "resnet11h",
        "resnet18",
        "resnet19",
        "resnet20",
        "resnet34",
        "resnet8_kws",
    ]
    assert sq.list_models("vgg1?", family="snn") == ["vgg11", "vgg16"]
    assert sq.list_models("nothing*") == []
    assert sq.list_models(pretrained=True) == []  # no weights are shipped
    assert sq.list_models() == sorted(sq.list_models())
    model = sq.create_model("cnn_digits", pretrained=False, in_chans=3, timesteps=2)
    assert model(torch.rand(2, 3, 28, 28)).shape == (2, 2, 10)
    with pytest.raises(ConfigError, match="no pretrained weights"):
        sq.create_model("cnn_digits", pretrained=True)
    with pytest.raises(ConfigError, match="takes no in_chans"):
        sq.create_model("ttfs_fc", in_chans=3)
    with pytest.raises(ConfigError, match="not both"):
        sq.create_model("cnn_digits", in_chans=3, in_channels=3)
    with pytest.raises(ConfigError, match="family='snn'"):
        sq.list_models("snn")  # the old positional family is a pattern now


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = write_text(tmp_path / "report.md", "x\n")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_version_flag_matches_the_package(capsys):
    import tomllib

    from spikequant.cli import build_parser

    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["--version"])
    version = tomllib.loads((SRC.parent / "pyproject.toml").read_text())["project"]["version"]
    assert info.value.code == 0
    assert capsys.readouterr().out == f"spikequant {version}\n" == f"spikequant {sq.__version__}\n"
