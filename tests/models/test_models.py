"""Every registered model: forward/backward on a small input; the exact layouts others rely on."""

import pytest
import torch

import spikequant as sq
from spikequant.errors import ConfigError, ConversionError, ShapeError
from spikequant.neurons import SpikingNeuron

# The smallest inputs each model accepts (kept small so the whole file runs in seconds).
SMALL = {
    "vgg9": dict(input_size=16, width=0.25),
    "vgg9_lee": dict(input_size=8, width=0.25),
    "vgg11": dict(input_size=32, width=0.25),
    "vgg16": dict(input_size=32, width=0.25),
    "resnet8_kws": dict(in_channels=1, input_size=(12, 6)),
    "rsnn_kws": dict(in_channels=1, input_size=(6, 4)),
    "cnn_digits": dict(in_channels=1, input_size=8),
    "mlp": dict(in_channels=1, input_size=8),
    "mobilenet_v1": dict(input_size=8, width=0.125),
    "mobilenet20": dict(input_size=8, width=0.125),
    "m5": dict(in_channels=1, input_size=400, width=4),
    "resnet34": dict(input_size=32, width=0.125),
    "resnet11h": dict(input_size=16, width=0.25),
}


def own_models():
    """Every registered spiking-network model (family "snn"; the "ann" and "ttfs" families have
    other contracts, checked in tests/core/test_registry.py)."""
    return sq.list_models(family="snn")


def small_input(model_name, batch=2):
    kw = SMALL.get(model_name, dict(input_size=8))
    size = kw["input_size"]
    if model_name == "m5":  # raw audio [B, 1, samples]
        return kw, torch.rand(batch, 1, size)
    h, w = (size, size) if isinstance(size, int) else size
    return kw, torch.rand(batch, kw.get("in_channels", 3), h, w)


def spiking_neuron_count(model, x):
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        total += output[0].numel() // output.shape[1]

    handles = [
        m.register_forward_hook(hook) for m in model.modules() if isinstance(m, SpikingNeuron)
    ]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return total


@pytest.mark.parametrize("name", own_models())
def test_forward_backward(name):
    torch.manual_seed(0)
    kw, x = small_input(name)
    model = sq.create_model(name, num_classes=5, timesteps=2, neuron="atif_u", **kw)
    out = model(x)
    assert out.shape == (2, 2, 5)
    loss = torch.nn.functional.cross_entropy(out.mean(0), torch.tensor([0, 3]))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    # the thresholds themselves are trained
    th = [m.threshold.grad for m in model.modules() if isinstance(m, sq.ATIFu)]
    assert th and any(g.abs().sum() > 0 for g in th)


def test_vgg9_has_921600_spiking_neurons_on_2x48x48():
    model = sq.create_model("vgg9", in_channels=2, input_size=48, timesteps=1, neuron="lif")
    assert spiking_neuron_count(model, torch.rand(1, 2, 48, 48)) == 921_600


def test_resnet19_has_1442048_spiking_neurons_on_32x32():
    model = sq.create_model("resnet19", timesteps=1, neuron="lif")
    assert spiking_neuron_count(model, torch.rand(1, 3, 32, 32)) == 1_442_048


def test_no_max_pooling_anywhere():
    for name in own_models():
        kw, _ = small_input(name)
        model = sq.create_model(name, timesteps=1, neuron="if", **kw)
        assert not any(
            isinstance(m, (torch.nn.MaxPool1d, torch.nn.MaxPool2d, torch.nn.AdaptiveMaxPool2d))
            for m in model.modules()
        ), name


@pytest.mark.parametrize("neuron", sq.list_neurons())
def test_every_neuron_drops_in(neuron):
    model = sq.create_model("cnn_digits", input_size=8, timesteps=3, neuron=neuron)
    out = model(torch.rand(4, 1, 8, 8))
    assert out.shape == (3, 4, 10)
    out.mean().backward()
    sq.reset_state(model)
    assert model(torch.rand(2, 1, 8, 8)).shape == (3, 2, 10)


def test_per_channel_thresholds_and_atif_nu_levels():
    m = sq.create_model(
        "cnn_digits",
        input_size=8,
        timesteps=4,
        neuron="atif_u",
        neuron_kwargs={"per_channel": True, "threshold": 0.5},
    )
    th = [n.threshold for n in m.modules() if isinstance(n, sq.ATIFu)]
    assert [t.shape for t in th] == [(16,), (32,), (128,)]
    assert all(torch.allclose(t, torch.tensor(0.5)) for t in th)
    m = sq.create_model("cnn_digits", input_size=8, timesteps=4, neuron="atif_nu")
    levels = [n.levels for n in m.modules() if isinstance(n, sq.ATIFnu)]
    assert len(levels) == 3 and all(lv.shape == (4,) for lv in levels)
    assert m(torch.rand(2, 1, 8, 8)).shape == (4, 2, 10)


def test_time_first_input_sets_T():
    model = sq.create_model("cnn_digits", input_size=8, in_channels=2, timesteps=4, neuron="if")
    assert model(torch.rand(6, 3, 2, 8, 8)).shape == (6, 3, 10)


def test_ann_baseline_runs_with_T1_only():
    model = sq.create_model("cnn_digits", input_size=8, timesteps=1, neuron="relu")
    assert model(torch.rand(2, 1, 8, 8)).shape == (1, 2, 10)
    assert not any(isinstance(m, SpikingNeuron) for m in model.modules())
    with pytest.raises(ConfigError, match="timesteps = 1"):
        sq.create_model("cnn_digits", input_size=8, timesteps=4, neuron="relu")


def test_static_input_equals_repeated_time_first_input():
    torch.manual_seed(0)
    model = sq.create_model("cnn_digits", input_size=8, timesteps=3, neuron="if").eval()
    x = torch.rand(2, 1, 8, 8)
    a = model(x)
    sq.reset_state(model)
    b = model(x.unsqueeze(0).repeat(3, 1, 1, 1, 1))
    assert torch.equal(a, b)


def test_bad_arguments_raise_precise_errors():
    with pytest.raises(ConfigError, match="unknown neuron"):
        sq.create_model("cnn_digits", neuron="nope")
    with pytest.raises(ConfigError, match="unknown model"):
        sq.create_model("resnet1000")
    with pytest.raises(ConfigError, match="timesteps"):
        sq.create_model("mlp", timesteps=0)
    with pytest.raises(ConfigError, match="too small"):
        sq.create_model("vgg16", input_size=16)
    with pytest.raises(ConfigError, match="neuron 'if'"):
        sq.create_model("mlp", neuron="if", neuron_kwargs={"bogus": 1})
    model = sq.create_model("mlp", input_size=8, in_channels=1, timesteps=2, neuron="if")
    with pytest.raises(ShapeError):
        model(torch.rand(8, 8))
    with pytest.raises(ShapeError, match="input channels"):
        model(torch.rand(2, 3, 8, 8))


def test_the_zoo_is_registered():
    assert set(own_models()) == {
        "vgg9",
        "vgg9_lee",
        "vgg11",
        "vgg16",
        "resnet18",
        "resnet19",
        "resnet20",
        "resnet34",
        "resnet11h",
        "resnet8_kws",
        "cnn_digits",
        "mlp",
        "rsnn_kws",
        "mobilenet_v1",
        "mobilenet20",
        "m5",
        "spikformer",
    }


@pytest.mark.parametrize("name", own_models())
def test_ann_form_computes_the_relu_model(name):
    """The ANN form (for conversion) shares the layers and computes the same function."""
    torch.manual_seed(0)
    kw, x = small_input(name, batch=3)
    model = sq.create_model(name, num_classes=5, timesteps=1, neuron="relu", **kw).eval()
    if name.startswith("rsnn"):
        with pytest.raises(ConversionError, match="recurrent"):  # LSTMs convert on their own path
            model.ann_form()
        return
    if name == "spikformer":  # attention multiplies two activations: nothing to convert
        with pytest.raises(ConversionError, match="Q K\\^T V"):
            model.ann_form()
        return
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
    ann = model.ann_form()
    assert not any(isinstance(m, SpikingNeuron) for m in ann.modules())
    assert {id(p) for p in ann.parameters()} == {id(p) for p in model.parameters()}
    with torch.no_grad():
        torch.testing.assert_close(ann(x), model(x)[0])
    torch.fx.symbolic_trace(ann)  # the converter traces it


def test_ann_form_needs_the_relu_model():
    model = sq.create_model("cnn_digits", input_size=8, timesteps=2, neuron="if")
    with pytest.raises(ConversionError, match="neuron='relu'"):
        model.ann_form()


def test_widths_scale_resnets_and_mobilenets():
    def convs(name, **kw):
        model = sq.create_model(name, timesteps=1, neuron="relu", input_size=8, **kw)
        return [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]

    assert [c.out_channels for c in convs("resnet20", width=0.5)][:2] == [8, 8]
    depthwise = [c for c in convs("mobilenet20", width=0.5) if c.groups > 1]
    assert len(depthwise) == 9 and all(c.groups == c.in_channels for c in depthwise)
    assert len(convs("mobilenet20")) == 19  # + the linear read-out: 20 weight layers
    with pytest.raises(ConfigError, match="too short"):
        sq.create_model("m5", input_size=300)


# ---- device-agnostic by construction: the meta device holds shapes, no data, so a tensor that a
# forward or backward creates on the CPU (instead of on its inputs' device) meets the model's meta
# tensors and fails, as it would on a GPU; and any read of a value on the host fails too (the
# finiteness guards queue theirs inside deferred_checks, as in the trainer)

TTFS_INPUTS = {"ttfs_fc": (2, 1, 28, 28), "ttfs_scnn": (2, 1, 28, 28),
               "ttfs_vgg16": (2, 3, 32, 32), "ttfs_googlenet": (1, 3, 224, 224)}  # fmt: skip


def _runs_on_meta(model, x):
    from spikequant.finite import deferred_checks

    model = model.to("meta")
    with deferred_checks():
        out = model(x.to("meta"))
        out.float().sum().backward()
    assert out.device.type == "meta"
    return out


@pytest.mark.parametrize("name", own_models())
def test_every_model_runs_forward_and_backward_on_the_meta_device(name):
    kw, x = small_input(name)
    model = sq.create_model(name, num_classes=5, timesteps=2, neuron="atif_u", **kw)
    assert _runs_on_meta(model, x).shape == (2, 2, 5)


@pytest.mark.parametrize("neuron", sq.list_neurons())
def test_every_neuron_runs_on_the_meta_device(neuron):
    model = sq.create_model("cnn_digits", input_size=8, timesteps=3, neuron=neuron)
    assert _runs_on_meta(model, torch.rand(4, 1, 8, 8)).shape == (3, 4, 10)


@pytest.mark.parametrize("name", sq.list_models(family="ttfs"))
def test_every_ttfs_model_runs_on_the_meta_device(name):
    assert set(TTFS_INPUTS) == set(sq.list_models(family="ttfs"))
    kw = {"width": 1 / 16} if name in ("ttfs_vgg16", "ttfs_googlenet") else {}
    out = _runs_on_meta(sq.create_model(name, **kw), torch.rand(*TTFS_INPUTS[name]))
    assert out.shape[0] == TTFS_INPUTS[name][0]


def test_spike_codings_run_on_the_meta_device():
    from spikequant import coding
    from spikequant.finite import deferred_checks

    x = torch.rand(2, 3, device="meta")
    with deferred_checks():
        assert coding.latency(x, 4).device.type == "meta"
        assert coding.direct(x, 4).shape == (4, 2, 3)
        assert coding.first_spike_time(coding.latency(x, 4)).device.type == "meta"


@pytest.mark.parametrize("name", sq.list_models(family="ann") + sq.list_models(family="detection"))
def test_every_ann_and_detector_runs_on_the_meta_device(name):
    size = 64 if sq.registry.model_family(name) == "detection" else 28
    out = _runs_on_meta(sq.create_model(name), torch.rand(2, 1, size, size))
    assert out.shape[0] == 2 or out.shape[1] == 2
