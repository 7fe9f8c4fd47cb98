"""Host reads of device values in the hot loops: a training step reads the device once (its checks,
loss and correct count together), an evaluation once per batch, whatever the network's depth; and
no ``.to(device)`` inside a step blocks.

On a GPU every such read waits for the device's queue to drain, so a read per layer serialises the
step; counted here on the CPU, where the reads are the same calls (``item``, ``tolist``, ``bool``,
``float``, ``int`` of a tensor), through a :class:`TorchFunctionMode`. A blocking copy to a device
(``.to(device)`` without ``non_blocking=True``) synchronises the stream as well; on the CPU it is
the same call, so it is counted the same way.
"""

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils.data import TensorDataset

import spikequant as sq
from spikequant.errors import NonFiniteError
from spikequant.finite import deferred_checks, require_finite
from spikequant.pipeline import run as run_recipe
from spikequant.train import trainer as trainer_module
from spikequant.train.recipe import validate_recipe
from spikequant.train.trainer import Trainer, evaluate

HOST_READS = {"item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy"}


def _blocking_transfer(name: str, args: tuple, kwargs: dict) -> bool:
    """``tensor.to(device, ...)`` without ``non_blocking=True`` (``copy_`` between tensors of one
    device, as the quantizers' in-place updates, is no transfer and not counted)."""
    if name != "to":
        return False
    to_device = "device" in kwargs or any(isinstance(a, (torch.device, str)) for a in args[1:])
    non_blocking = kwargs.get("non_blocking") or any(a is True for a in args[1:])
    return to_device and not non_blocking


class CountHostReads(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.reads = 0
        self.blocking_transfers = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        self.reads += name in HOST_READS
        self.blocking_transfers += _blocking_transfer(name, args, kwargs)
        return func(*args, **kwargs)


def recipe(method: dict, model: dict, data: str = "digits8x8") -> dict:
    cfg = {
        "name": "reads",
        "data": {"name": data, "batch_size": 32, "train_subset": 128, "test_subset": 64},
        "model": model,
        "optim": {"lr": 0.05},
        "train": {"epochs": 1},
        "method": method,
    }
    return validate_recipe(cfg)


def digits_cnn(neuron: str, **neuron_kwargs) -> dict:
    return {"name": "cnn_digits", "timesteps": 2, "neuron": neuron, "neuron_kwargs": neuron_kwargs,
            "kwargs": {"widths": [4, 8], "hidden": 16, "input_size": 8}}  # fmt: skip


@pytest.mark.parametrize(
    "cfg",
    [
        pytest.param(recipe({"name": "direct"}, digits_cnn("atif_nu")), id="direct-atif_nu"),
        pytest.param(recipe({"name": "direct"}, digits_cnn("lif")), id="direct-lif"),
        pytest.param(
            recipe(
                {"name": "spquant", "weight_bits": 2, "learn_threshold": True},
                digits_cnn("qlif", membrane="ternary"),
            ),  # fmt: skip
            id="spquant",
        ),
        pytest.param(
            recipe(
                {"name": "qat", "fold_epochs": 0},
                {"name": "ann_lenet", "kwargs": {"qat": True, "bits": 8, "bn": True}},
                data="mnist5k",
            ),  # fmt: skip
            id="qat",
        ),
        pytest.param(
            recipe(
                {"name": "ttfs", "form": "code", "bits": [32, 2], "epochs_per_stage": 1},
                {"name": "ttfs_fc", "kwargs": {"sizes": [64, 16, 10]}},
            ),
            id="ttfs",
        ),
    ],
)
def test_a_training_step_reads_the_device_once(cfg, tmp_path, monkeypatch, one_thread):
    counted = []
    original = Trainer.train_epoch

    def counting(self, *args, **kwargs):
        with CountHostReads() as mode:
            result = original(self, *args, **kwargs)
        counted.append((mode.reads, self.iters_per_epoch))
        assert mode.blocking_transfers == 0
        return result

    monkeypatch.setattr(Trainer, "train_epoch", counting)
    run_recipe(cfg, out_dir=tmp_path / "run", progress=False)
    # 128 samples in batches of 32: one read per step; TTFS counts its clipped gradients on the
    # device and reads the count once per epoch, and trains a 2-bit stage after the first epoch
    if cfg["method"]["name"] == "ttfs":
        assert counted == [(4 + 1, 4)] * 2
    else:
        assert counted == [(4, 4)]


def test_evaluation_reads_the_device_once_per_batch(one_thread):
    model = sq.create_model("cnn_digits", timesteps=2, neuron="atif_u", widths=[4, 8], hidden=16,
                            input_size=8)  # fmt: skip
    data = TensorDataset(torch.rand(64, 1, 8, 8), torch.randint(0, 10, (64,)))
    reads = {}
    for batch_size in (32, 8):  # 2 and 8 batches
        with CountHostReads() as mode:
            evaluate(model, data, batch_size=batch_size)
        reads[batch_size] = mode.reads
    assert reads[8] - reads[32] == 8 - 2  # the rest is the fixed cost of the report


def test_a_nan_threshold_found_during_training_names_its_layer_and_keeps_the_weights(tmp_path):
    cfg = recipe({"name": "direct"}, digits_cnn("atif_u"))
    model = sq.create_model("cnn_digits", timesteps=2, neuron="atif_u", widths=[4, 8], hidden=16,
                            input_size=8)  # fmt: skip
    trainer = Trainer(
        model,
        cfg,
        TensorDataset(torch.rand(64, 1, 8, 8), torch.randint(0, 10, (64,))),
        None,
        out_dir=tmp_path,
        meta={},
        progress=False,
    )
    neuron = next(m for m in model.modules() if isinstance(m, sq.neurons.SpikingNeuron))
    with torch.no_grad():
        neuron.threshold.fill_(float("nan"))
    weights = {k: v.detach().clone() for k, v in model.named_parameters()}
    with pytest.raises(NonFiniteError, match=r"ATIF.* layer .*threshold"):
        trainer.fit()
    for key, value in model.named_parameters():
        assert torch.equal(value, weights[key]) or key.endswith("threshold"), key
    assert trainer_module.runfolder.load_epoch(tmp_path) is None  # nothing saved from it


def test_deferred_checks_raise_the_first_failure_in_order():
    with deferred_checks() as checks:
        require_finite(torch.tensor([True, True]), lambda v: "first")
        require_finite(torch.tensor([True, False]), lambda v: f"second {v}")
        require_finite(torch.tensor(False), lambda v: "third")
    assert len(checks.entries) == 3  # queued, nothing raised inside the block
    with pytest.raises(NonFiniteError, match=r"^second \[True, False\]$"):
        checks.raise_first(checks.verdicts(torch.device("cpu")).tolist())
    with pytest.raises(NonFiniteError, match="^third$"):  # outside a block: at once
        require_finite(torch.tensor(False), lambda v: "third")
