"""`spikequant eval` reads checkpoints of every model family."""

import json

import pytest

import spikequant as sq
from spikequant.checkpoint import save_checkpoint
from spikequant.cli import main


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("ttfs_fc", {"sizes": [784, 20, 10]}),
        ("ann_mlp", {"hidden": [16]}),
        ("mlp", {"in_channels": 1, "input_size": 28, "timesteps": 2, "neuron": "if"}),
    ],
)
def test_eval_cli_on_each_family(tmp_path, capsys, name, kwargs):
    model = sq.create_model(name, **kwargs)
    save_checkpoint(
        tmp_path,
        model.state_dict(),
        {"model": {"name": name, "kwargs": kwargs}, "dataset": "mnist5k"},
    )
    assert main(["eval", str(tmp_path), "--subset", "40", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["samples"] == 40 and 0.0 <= out["accuracy"] <= 1.0
    # each family as its method evaluates it: T of a spiking net, none of an ANN's [B, classes]
    # output, the spiking fraction of a TTFS net; dense MACs where layers are counted
    assert out["timesteps"] == {"ttfs_fc": None, "ann_mlp": None, "mlp": 2}[name]
    assert ("fraction_spiking" in out) == (name == "ttfs_fc")
    if name != "ttfs_fc":
        assert out["dense_macs"] > 0 and (out["theta"] is None) == (name == "ann_mlp")


def test_eval_cli_corrupt_checkpoint_exits_2(tmp_path, capsys):
    (tmp_path / "meta.json").write_text("{not json")
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    assert main(["eval", str(tmp_path)]) == 2
    assert "corrupt" in capsys.readouterr().err
