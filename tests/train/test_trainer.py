"""Trainer: exact resume, schedules, non-finite detection, recipe validation, CLI round trip."""

import json
import math

import pytest
import torch
from torch.utils.data import TensorDataset

from spikequant.checkpoint import load_checkpoint
from spikequant.cli import main
from spikequant.config import list_recipes, load_recipe
from spikequant.errors import ConfigError, NonFiniteError
from spikequant.pipeline import run as run_recipe
from spikequant.train.recipe import validate_recipe
from spikequant.train.trainer import Trainer, lr_factor, resolve_checkpoint


def tiny_recipe(**over):
    cfg = {
        "name": "tiny",
        "seed": 3,
        "data": {
            "name": "mnist5k",
            "batch_size": 32,
            "train_subset": 192,
            "test_subset": 96,
            "augment": {"flip": True, "crop_padding": 2},
            "mixup_alpha": 0.5,
        },
        "model": {
            "name": "cnn_digits",
            "timesteps": 2,
            "neuron": "atif_u",
            "kwargs": {"widths": [4, 8], "hidden": 16},
        },
        "optim": {
            "name": "sgd",
            "lr": 0.05,
            "momentum": 0.9,
            "weight_decay": 1e-4,
            "grad_clip": 1.0,
        },
        "schedule": {"name": "step", "step_size": 1, "gamma": 0.5},
        "train": {"epochs": 3, "eval_every": 1},
    }
    for key, value in over.items():
        section, name = key.split("__")
        cfg[section][name] = value
    return cfg


def test_resumed_run_is_bit_identical_to_unbroken_run(tmp_path):
    unbroken = run_recipe(tiny_recipe(), out_dir=tmp_path / "a", progress=False)
    stopped = run_recipe(tiny_recipe(), out_dir=tmp_path / "b", progress=False, stop_after=1)
    assert stopped == {"stopped_after_epoch": 1}
    # a half-written later epoch (weights but no meta.json: killed mid-save) must be ignored
    (tmp_path / "b" / "checkpoints" / "epoch_0002").mkdir()
    (tmp_path / "b" / "checkpoints" / "epoch_0002" / "model.safetensors").write_bytes(b"junk")
    resumed = run_recipe(tiny_recipe(), out_dir=tmp_path / "b", resume=True, progress=False)
    assert resumed["resumed_from_epoch"] == 1 and resumed["epochs"] == 3
    wa, meta_a = load_checkpoint(resolve_checkpoint(tmp_path / "a"))
    wb, meta_b = load_checkpoint(resolve_checkpoint(tmp_path / "b"))
    assert meta_a["epoch"] == meta_b["epoch"] == 3
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(unbroken["history"]) == strip(resumed["history"])
    assert unbroken["test_accuracy"] == resumed["test_accuracy"]
    # the newest complete epoch and one fallback are kept
    assert sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir()) == [
        "epoch_0002",
        "epoch_0003",
    ]
    assert [json.loads(line)["epoch"] for line in (tmp_path / "b" / "metrics.jsonl").open()] == [
        1,
        2,
        3,
    ]


def test_learning_rate_schedules():
    cos = {"name": "cosine", "min_lr_ratio": 0.0}
    assert lr_factor(cos, 0, 10, 100) == 1.0
    assert lr_factor(cos, 50, 10, 100) == pytest.approx(0.5)
    assert lr_factor(cos, 100, 10, 100) == pytest.approx(0.0)
    assert lr_factor({"name": "cosine", "min_lr_ratio": 0.1}, 100, 10, 100) == pytest.approx(0.1)
    step = {"name": "step", "step_size": 30, "gamma": 0.9}
    assert lr_factor(step, 29 * 10 + 9, 10, 10_000) == 1.0
    assert lr_factor(step, 30 * 10, 10, 10_000) == pytest.approx(0.9)
    assert lr_factor(step, 95 * 10, 10, 10_000) == pytest.approx(0.9**3)
    assert lr_factor({"name": "constant"}, 123, 10, 100) == 1.0


def test_non_finite_loss_raises(tmp_path):
    import spikequant as sq

    cfg = validate_recipe(tiny_recipe(data__augment={}, data__mixup_alpha=0.0))
    x = torch.rand(64, 1, 28, 28)
    x[5] = float("nan")
    model = sq.create_model("cnn_digits", timesteps=2, neuron="if", widths=[4, 8], hidden=16)
    trainer = Trainer(
        model,
        cfg,
        TensorDataset(x, torch.zeros(64, dtype=torch.long)),
        None,
        out_dir=tmp_path,
        meta={},
        progress=False,
    )
    with pytest.raises(NonFiniteError, match=r"training batch in epoch 1, step \d+ holds NaN"):
        trainer.fit()
    # NaN gradients (here injected by a hook) stop training before they reach the weights
    trainer = Trainer(
        model,
        cfg,
        TensorDataset(torch.rand(64, 1, 28, 28), torch.zeros(64, dtype=torch.long)),
        None,
        out_dir=tmp_path,
        meta={},
        progress=False,
    )
    weights = {k: v.detach().clone() for k, v in model.named_parameters()}
    next(model.parameters()).register_hook(lambda g: g * float("nan"))
    with pytest.raises(NonFiniteError, match=r"gradients became NaN .* epoch 1, step 1;"):
        trainer.fit()
    for key, value in model.named_parameters():
        assert torch.equal(value, weights[key]), key


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"bogus": 1}, "unknown key bogus"),
        ({"optim": {"lr": 0.1, "lrr": 2}}, r"unknown key optim.lrr \(did you mean optim.lr\?\)"),
        ({"kind": "direct"}, r"method.name"),
        ({"method": {"name": "directt"}}, r"unknown method.name 'directt' \(did you mean direct"),
        ({"method": {"name": "spquant", "tet_lamda": 1}}, r"method.tet_lamda \(did you mean"),
        ({"method": {"name": "spquant", "weight_bits": "2"}}, "method.weight_bits must be int"),
        ({"method": {"name": "ttfs", "K": float("nan")}}, "method.K must be finite"),
        ({"optim": {"lr": "fast"}}, "optim.lr must be int or float"),
        ({"optim": {"name": "rmsprop"}}, "optim.name must be one of"),
        ({"model": {"name": "mlp", "timesteps": 0}}, "model.timesteps must be >= 1"),
        ({"model": {"name": "mlp", "timesteps": 5000}}, "model.timesteps must be <= 1024"),
        ({"model": {"name": "mlp", "timesteps": 4, "neuron": "relu"}}, "timesteps = 1"),
        ({"model": {"name": "mlp", "kwargs": {"timesteps": 2}}}, "directly under model"),
        ({"model": {"timesteps": 2}}, "model.name is required"),
        ({"data": {"name": "mnist5k", "batch_size": 0}}, "data.batch_size must be >= 1"),
        ({"data": {"name": "mnist5k", "augment": {"rotate": True}}}, "data.augment.rotate"),
        ({"schedule": {"name": "step", "gamma": 2}}, "schedule.gamma must be <= 1"),
        ({"train": {"epochs": 1.5}}, "train.epochs must be int"),
        ({"seed": -1}, "seed"),
    ],
)
def test_recipe_validation_errors(patch, message):
    cfg = {"data": {"name": "mnist5k"}, "model": {"name": "mlp"}}
    cfg.update(patch)
    with pytest.raises(ConfigError, match=message):
        validate_recipe(cfg)


def test_bundled_recipes_validate():
    from spikequant.config import list_recipes, load_recipe

    names = [n for n in list_recipes() if load_recipe(n)["method"]["name"] == "direct"]
    assert {
        "mnist-fixed",
        "mnist-atif-u",
        "mnist-atif-nu",
        "mnist-ann",
        "cifar10-vgg16-atif",
        "cifar10-resnet18-atif",
        "cifar100-vgg16-atif",
        "cifar100-resnet18-atif",
        "gsc-resnet18-atif",
    } <= set(names)
    for name in names:
        cfg = validate_recipe(load_recipe(name))
        assert cfg["model"]["timesteps"] == (1 if cfg["model"]["neuron"] == "relu" else 4)


def test_paper_recipes_fail_with_the_dataset_message_when_data_is_absent(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("SPIKEQUANT_DATA", str(tmp_path / "nothing-here"))
    for recipe, words in [
        ("cifar10-resnet18-atif", "cifar-10-batches-py"),
        ("cifar100-vgg16-atif", "cifar-100-python"),
        ("gsc-resnet18-atif", "speech_commands"),
    ]:
        assert main(["train", recipe, "--out", str(tmp_path / "run"), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1


def test_cli_train_eval_round_trip(tmp_path, capsys):
    out = tmp_path / "run"
    args = [
        "train",
        "mnist-atif-u",
        "--out",
        str(out),
        "--no-progress",
        "--json",
        "--set",
        "train.epochs=1",
        "--set",
        "data.train_subset=256",
        "--set",
        "data.test_subset=200",
        "--set",
        "model.kwargs.widths=[4,8]",
        "--set",
        "model.kwargs.hidden=16",
    ]
    assert main(args) == 0
    trained = json.loads(capsys.readouterr().out)
    assert trained["timesteps"] == 4 and 0 < trained["theta"] < 1
    assert math.isclose(
        trained["spikes_per_neuron"] / trained["timesteps"], trained["theta"], rel_tol=0.5
    )
    assert set(trained["firing_rates"]) and trained["synops"] > 0
    assert main(["eval", str(out), "--subset", "200", "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["accuracy"] == trained["test_accuracy"]
    assert evaluated["theta"] == pytest.approx(trained["theta"])
    assert main(["eval", str(tmp_path / "missing")]) == 2
    assert "no checkpoint folder" in capsys.readouterr().err
    assert main(["list", "recipes", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["recipes"]
    assert set(listed) == set(list_recipes())
    for name, line in listed.items():  # each recipe's method and description, as loaded
        recipe = load_recipe(name)
        assert line == f"[{recipe['method']['name']}] {recipe['description']}", name


def test_evaluate_reports_per_sample_counts_for_snn_and_ann():
    import spikequant as sq
    from spikequant.train.trainer import evaluate

    torch.manual_seed(0)
    data = TensorDataset(torch.rand(10, 1, 8, 8), torch.arange(10) % 10)
    kw = dict(input_size=8, widths=[4, 8], hidden=16)
    snn = evaluate(
        sq.create_model("cnn_digits", timesteps=4, neuron="if", **kw), data, batch_size=4
    )
    ann = evaluate(
        sq.create_model("cnn_digits", timesteps=1, neuron="relu", **kw), data, batch_size=4
    )
    # one image: conv 1->4 on 8x8, conv 4->8 on 4x4, FC 32->16, FC 16->10
    per_step = 4 * 9 * 64 + 8 * 4 * 9 * 16 + 32 * 16 + 16 * 10
    assert ann["dense_macs"] == per_step and snn["dense_macs"] == 4 * per_step
    assert ann["theta"] is None and ann["timesteps"] == 1 and ann["samples"] == 10
    assert snn["spiking_neurons"] == 4 * 64 + 8 * 16 + 16 and 0 <= snn["theta"] <= 1
    assert set(snn["firing_rates"]) == {"net.1", "net.4", "net.8"}


def test_frame_sequence_datasets_reach_the_model_time_first():
    import spikequant as sq
    from spikequant.train.trainer import accept_frame_sequences, evaluate

    class Frames(torch.utils.data.Dataset):  # samples [T, C, H, W] like the event datasets
        def __init__(self):
            g = torch.Generator().manual_seed(0)
            self.x = (torch.rand(6, 3, 2, 8, 8, generator=g) > 0.7).float()

        def __len__(self):
            return 6

        def __getitem__(self, i):
            return self.x[i], i % 2

    data = Frames()
    model = sq.create_model(
        "cnn_digits",
        in_channels=2,
        input_size=8,
        num_classes=2,
        timesteps=3,
        neuron="if",
        widths=[4, 4],
        hidden=8,
    )
    assert accept_frame_sequences(model, data)
    seen = []
    model.register_forward_pre_hook(lambda m, a: seen.append(tuple(a[0].shape)))
    result = evaluate(model, data, batch_size=4)
    assert seen == [(3, 4, 2, 8, 8), (3, 2, 2, 8, 8)]  # [T, B, C, H, W]
    assert result["timesteps"] == 3 and result["samples"] == 6


@pytest.mark.parametrize("name", ["cosine", "step"])
def test_schedules_never_increase_and_stay_in_range(name):
    from hypothesis import given
    from hypothesis import strategies as st

    @given(
        iters=st.integers(1, 50),
        epochs=st.integers(1, 40),
        step=st.integers(1, 10),
        gamma=st.floats(0.01, 1.0),
        floor=st.floats(0.0, 1.0),
    )
    def check(iters, epochs, step, gamma, floor):
        sched = {"name": name, "step_size": step, "gamma": gamma, "min_lr_ratio": floor}
        total = iters * epochs
        values = [lr_factor(sched, i, iters, total) for i in range(total + 1)]
        assert values[0] == pytest.approx(1.0)
        assert all(b <= a + 1e-12 for a, b in zip(values, values[1:], strict=False))
        assert all(0.0 <= v <= 1.0 + 1e-12 for v in values)
        if name == "cosine":
            assert values[-1] == pytest.approx(floor)

    check()
