"""QAT on the bundled digits, then exact Ca-LIF conversion (calif.md checks on trained nets)."""

import pytest
import torch

from spikequant.config import run_recipe
from spikequant.convert import convert
from spikequant.convert.evaluate import accuracy_vs_timesteps, ann_accuracy
from spikequant.convert.network import calif_agreement
from spikequant.data import load_arrays
from spikequant.errors import ConfigError, ConversionError
from spikequant.pipeline import load_run_model
from spikequant.quant.qat import QuantReLU, check_bits, fake_quant_weight, quantize_weight


@pytest.fixture(scope="module")
def qat_mlp(tmp_path_factory):
    out = tmp_path_factory.mktemp("qat_mlp")
    cfg = {
        "name": "test-qat-mlp",
        "seed": 0,
        "model": {"name": "ann_mlp", "kwargs": {"qat": True, "bits": 8, "hidden": [64, 32]}},
        "data": {"name": "mnist5k", "batch_size": 64},
        "optim": {"name": "sgd", "lr": 0.05},
        "train": {"epochs": 2},
        "method": {"name": "qat"},
    }
    metrics = run_recipe(cfg, out_dir=out, progress=False)
    model, meta = load_run_model(out)
    return model.eval(), metrics, meta


def test_runner_checkpoint_round_trip(qat_mlp):
    model, metrics, meta = qat_mlp
    x, y = load_arrays("mnist5k", "test")
    assert meta["model"]["name"] == "ann_mlp"
    assert metrics["test_accuracy"] > 0.85
    assert ann_accuracy(model, x, y) == pytest.approx(metrics["test_accuracy"])


def test_calif_reproduces_every_layer_exactly_at_T_2_pow_bits(qat_mlp):
    model, _, _ = qat_mlp
    x, y = load_arrays("mnist5k", "test")
    x, y = x[:250], y[:250]  # the full test set is in docs/results/calif-mnist.md (LeNet)
    snn = convert(model, "calif")
    rows = accuracy_vs_timesteps(snn, x, y, [256], exact_model=model)
    agreement = snn.info["calif_exactness"]
    assert agreement["T"] == 256 and agreement["samples"] == 250
    assert agreement["input_spike_budget"] == 255  # lossless 8-bit input coding
    for layer in agreement["layers"].values():
        assert layer["mismatch_vs_decoded_input"] == 0
        assert layer["mismatch_vs_original_input"] == 0
    assert abs(rows[0]["accuracy"] - ann_accuracy(model, x, y)) <= 0.001
    # the read-out c*Vth + V of the output layer is the ANN's logit (fp32 vs fp64 weight products)
    logits = snn.simulate(x[:50], [256])[256]["logits"]
    with torch.no_grad():
        ann_logits = model.double()(x[:50].double())
        model.float()
    torch.testing.assert_close(logits, ann_logits, rtol=0, atol=1e-5)


def test_calif_low_T_exact_up_to_input_coding(qat_mlp):
    model, _, _ = qat_mlp
    x, _ = load_arrays("mnist5k", "test")
    snn = convert(model, "calif")
    agreement = calif_agreement(model, snn, x[:100], 16)
    assert agreement["input_spike_budget"] == 16
    assert all(l["mismatch_vs_decoded_input"] == 0 for l in agreement["layers"].values())
    # the coarser input code (16 levels) does change some activations of the original network
    assert sum(l["mismatch_vs_original_input"] for l in agreement["layers"].values()) > 0


def test_calif_cnn_with_pool_neurons_is_exact():
    torch.manual_seed(0)
    from spikequant.convert.ann import train_epochs
    from spikequant.registry import create_model

    x, y = load_arrays("mnist5k", "train")
    model = create_model("ann_cnn", width=4, qat=True, bits=6, bn=False)
    train_epochs(
        model,
        x[:600],
        y[:1000],
        epochs=1,
        lr=0.05,
        batch_size=64,
        cfg={},
        generator=torch.Generator().manual_seed(0),
    )
    model.eval()
    snn = convert(model, "calif")
    agreement = calif_agreement(model, snn, x[-30:], 32)
    pooled = [m for m in model.modules() if isinstance(m, QuantReLU) and m.pool > 1]
    assert pooled and all(m.qmax == 31 for m in pooled)
    assert all(l["mismatch_vs_decoded_input"] == 0 for l in agreement["layers"].values())


def test_weight_quantization_is_per_channel_and_validated():
    w = torch.tensor([[0.5, -1.0, 0.25], [0.01, 0.02, -0.04]])
    wq, scale = quantize_weight(w, 8)
    assert wq.abs().amax(1).tolist() == [127, 127]
    torch.testing.assert_close(scale, torch.tensor([1.0, 0.04]) / 127)
    torch.testing.assert_close(fake_quant_weight(w, 8), wq * scale[:, None])
    for bad in (1, 17, 8.0, True):
        with pytest.raises(ConfigError):
            check_bits(bad)


def test_lsq_relu_levels_and_gradient():
    act = QuantReLU(4, init_step=0.5)
    assert act.qmax == 7
    x = torch.tensor([-1.0, 0.2, 0.25, 0.74, 10.0], requires_grad=True)
    y = act(x)
    assert y.tolist() == [0.0, 0.0, 0.5, 0.5, 3.5]
    y.sum().backward()
    assert act.raw_step.grad is not None and x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_relu_state_dict_with_the_old_step_key_loads():
    trained = QuantReLU(4, pool=2)
    trained.train()(torch.rand(2, 3, 4, 4))  # LSQ initialises the step on the first batch
    old = {("step" if k == "raw_step" else k): v for k, v in trained.state_dict().items()}
    assert set(old) == {"step", "initialized"}
    fresh = QuantReLU(4, pool=2)
    fresh.load_state_dict(old)
    assert fresh.raw_step.item() == trained.raw_step.item() != 1.0
    x = torch.rand(2, 3, 4, 4) * 3
    assert torch.equal(fresh.eval()(x), trained.eval()(x))


def test_checkpoint_written_with_the_old_step_key_loads(qat_mlp, tmp_path):
    from spikequant.checkpoint import save_checkpoint

    model, _, meta = qat_mlp
    state = model.state_dict()
    old = {k.removesuffix("raw_step") + "step" if k.endswith(".raw_step") else k: v
           for k, v in state.items()}  # fmt: skip
    assert sum(k.endswith(".step") for k in old) == 2  # one per hidden layer
    keep = {k: v for k, v in meta.items() if k != "files"}
    save_checkpoint(tmp_path / "old", old, keep)
    loaded, _ = load_run_model(tmp_path / "old")
    x, _ = load_arrays("mnist5k", "test")
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x[:256]), model(x[:256]))


def test_calif_refuses_float_networks():
    from spikequant.registry import create_model

    with pytest.raises(ConversionError, match="quantized"):
        convert(create_model("ann_mlp"), "calif")


def test_models_pass_power_of_two_steps_to_every_quantized_relu():
    from spikequant.registry import create_model

    for name in ("ann_mlp", "ann_lenet", "ann_cnn"):
        model = create_model(name, qat=True, power_of_two_steps=True)
        relus = [m for m in model.modules() if isinstance(m, QuantReLU)]
        assert relus and all(m.power_of_two for m in relus), name
        assert not any(
            m.power_of_two
            for m in create_model(name, qat=True).modules()
            if isinstance(m, QuantReLU)
        )
