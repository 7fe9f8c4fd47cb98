"""NIR export/import: exact spike round trips, the parameter mapping, folding, and refusals."""

import nir
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import spikequant as sq
from spikequant.data import load_arrays
from spikequant.errors import ConversionError, ShapeError
from spikequant.export import from_nir, read_nir, to_nir, write_nir
from spikequant.layers import TimeFold
from spikequant.models.common import Flatten
from spikequant.neurons import IF, LIF, ATIFnu, ATIFu, SpikingNeuron


def spikes_of(model, x):
    """Output and every neuron layer's spikes (in execution order) for one sequence."""
    recorded = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: recorded.append(out.clone()))
        for m in model.modules()
        if isinstance(m, SpikingNeuron)
    ]
    sq.reset_state(model)
    with torch.no_grad():
        y = model(x)
    for h in hooks:
        h.remove()
    sq.reset_state(model)
    return y, recorded


def roundtrip(model, sample, tmp_path, **kwargs):
    graph = to_nir(model, sample, **kwargs)
    path = write_nir(tmp_path / "net.nir", graph)
    return graph, from_nir(read_nir(path))


def small_cnn(neuron_a, neuron_b, neuron_c):
    return nn.Sequential(
        TimeFold(nn.Conv2d(2, 4, 3, padding=1)),
        neuron_a,
        TimeFold(nn.AvgPool2d(2)),
        TimeFold(nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False)),
        neuron_b,
        Flatten(),
        TimeFold(nn.Linear(6 * 2 * 2, 5)),
        neuron_c,
        TimeFold(nn.Linear(5, 3)),
    )


def test_if_lif_network_round_trip_reproduces_every_spike(tmp_path):
    torch.manual_seed(0)
    per_channel = IF(0.7, num_channels=4, reset="zero")
    with torch.no_grad():
        per_channel.threshold.copy_(torch.tensor([0.5, 0.7, 0.9, 1.1]))
    model = small_cnn(
        per_channel, LIF(tau=2.0, threshold=0.1), LIF(tau=3.0, decay_input=True, threshold=0.05)
    )
    x = torch.rand(6, 3, 2, 8, 8) * 1.5  # [T, B, C, H, W]
    _, imported = roundtrip(model, x, tmp_path)
    y, spikes = spikes_of(model, x)
    y2, spikes2 = spikes_of(imported, x)
    assert len(spikes) == len(spikes2) == 3
    for a, b in zip(spikes, spikes2, strict=True):
        assert 0 < a.sum() < a.numel()  # the comparison is not vacuous
        assert torch.equal(a, b)
    assert torch.equal(y, y2)


def test_lif_parameters_follow_the_euler_mapping(tmp_path):
    model = nn.Sequential(
        TimeFold(nn.Linear(3, 4)),
        LIF(tau=4.0, threshold=0.5),
        TimeFold(nn.Linear(4, 2)),
        LIF(tau=2.0, decay_input=True, reset="zero"),
        TimeFold(nn.Linear(2, 2)),
        IF(2.0, reset="zero"),
    )
    graph = to_nir(model, torch.zeros(1, 1, 3), dt=0.5)
    lif, lif_in, if_node = graph.nodes["1"], graph.nodes["3"], graph.nodes["5"]
    assert isinstance(lif, nir.LIF) and isinstance(if_node, nir.IF)
    np.testing.assert_array_equal(lif.tau, np.full(4, 2.0, np.float32))  # dt * tau
    np.testing.assert_array_equal(lif.r, np.full(4, 4.0, np.float32))  # tau: input unscaled
    np.testing.assert_array_equal(lif.v_leak, np.zeros(4, np.float32))
    np.testing.assert_array_equal(lif_in.r, np.ones(2, np.float32))  # decay_input: R = 1
    np.testing.assert_array_equal(if_node.r, np.full(2, 2.0, np.float32))  # 1 / dt
    # strict '>' at the largest float32 below V_th is spikequant's '>=' at V_th
    assert lif.v_threshold.dtype == np.float32
    assert lif.v_threshold[0] < np.float32(0.5)
    assert np.nextafter(lif.v_threshold[0], np.float32(1)) == np.float32(0.5)
    assert graph.metadata["dt"] == 0.5
    imported = from_nir(read_nir(write_nir(tmp_path / "lif.nir", graph)))  # dt survives HDF5
    assert imported.dt == 0.5
    assert imported[1].tau == 4.0 and not imported[1].decay_input
    assert imported[3].tau == 2.0 and imported[3].decay_input
    assert float(imported[5].threshold) == 2.0


def nir_reference(node, currents, dt):
    """NIR's IF/LIF equations integrated by forward Euler, firing on v > v_threshold."""
    v = np.zeros(currents.shape[1:], np.float32)
    out = []
    for i in currents:
        if isinstance(node, nir.LIF):
            v = v + np.float32(dt) / node.tau * (node.v_leak - v + node.r * i)
        else:
            v = v + np.float32(dt) * node.r * i
        z = v > node.v_threshold
        v = np.where(z, node.v_reset, v).astype(np.float32)
        out.append(z.astype(np.float32))
    return np.stack(out)


@pytest.mark.parametrize(
    ("neuron", "first_two"),
    [(IF(1.0, reset="zero"), (0.5, 0.5)), (LIF(tau=2.0, threshold=1.0), (0.5, 0.75))],
)
def test_exported_node_under_nir_semantics_matches_spikequant_at_the_threshold(neuron, first_two):
    # Dyadic currents make the Euler update exact, so membranes land exactly on V_th = 1.
    rng = np.random.default_rng(0)
    currents = rng.integers(0, 9, size=(12, 64)).astype(np.float32) / 8
    currents[:2] = np.array(first_two, np.float32)[:, None]  # v reaches exactly 1.0 at step 2
    graph = to_nir(nn.Sequential(neuron), torch.zeros(1, 1, 64))
    node = graph.nodes["0"]
    expected = nir_reference(node, currents, dt=1.0)
    sq.reset_state(neuron)
    with torch.no_grad():
        got = neuron(torch.from_numpy(currents)[:, None]).squeeze(1).numpy()
    assert got[1].all()  # fired on equality
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    ("name", "neuron"),
    [("cnn_digits", "if_hard"), ("cnn_digits", "lif"), ("mlp", "if_hard"), ("mlp", "lif")],
)
def test_registered_models_round_trip_on_digits(tmp_path, name, neuron):
    torch.manual_seed(1)
    kwargs = dict(input_size=8, neuron=neuron, timesteps=4)
    if name == "mlp":
        kwargs["hidden"] = [64, 32]
    model = sq.create_model(name, **kwargs)
    for m in model.modules():  # non-trivial BN statistics so that folding is exercised
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    model.eval()
    images, _ = load_arrays("digits8x8", "test")
    x = images[:32] * 3
    graph, imported = roundtrip(model, x[:1], tmp_path)
    assert not any(
        isinstance(n, nir.NIRNode) and type(n).__name__.startswith("BatchNorm")
        for n in graph.nodes.values()
    )
    y, spikes = spikes_of(model, x)
    y2, spikes2 = spikes_of(imported, x.unsqueeze(0).expand(4, *x.shape))
    # BN folding reorders float operations: spikes may differ only within rounding of V_th.
    total = sum(s.numel() for s in spikes)
    agree = sum((a == b).sum().item() for a, b in zip(spikes, spikes2, strict=True))
    assert sum(s.sum().item() for s in spikes) > 0
    assert agree / total > 0.999
    if agree == total:  # with identical spikes only the folded affine layers' rounding remains
        assert torch.allclose(y, y2, atol=1e-4)


def test_atif_u_exports_with_metadata_and_output_scale_folded(tmp_path):
    torch.manual_seed(2)
    model = sq.create_model(
        "cnn_digits", input_size=8, neuron="atif_u", norm=False, neuron_kwargs={"per_channel": True}
    )
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, ATIFu):
                m.threshold.uniform_(0.3, 1.5)
    with pytest.raises(ConversionError, match=r"'net.1' \(ATIFu\) with soft reset"):
        to_nir(model, torch.zeros(1, 1, 8, 8))
    x = torch.rand(16, 1, 8, 8) * 2
    graph, imported = roundtrip(model, x[:1], tmp_path, soft_reset="metadata")
    first = graph.nodes["net.1"]
    assert first.metadata["spikequant_reset"] == "subtract"
    # V_th (per channel of net.1) multiplies the input channels of the next conv
    th = model.net[1].threshold.detach()
    w = model.net[3].module.weight.detach()
    np.testing.assert_allclose(
        graph.nodes["net.3.module"].weight, (w * th.view(1, -1, 1, 1)).numpy(), rtol=1e-6
    )
    y, spikes = spikes_of(model, x)
    y2, spikes2 = spikes_of(imported, x.unsqueeze(0).expand(4, *x.shape))
    assert all(isinstance(m, IF) and not m.scale_output for m in imported if isinstance(m, IF))
    spikes = [(s != 0).float() for s in spikes]  # ATIF-u emits V_th z; the import emits z
    assert torch.equal(spikes[0], spikes2[0])  # before any folded layer: bit for bit
    pairs = zip(spikes, spikes2, strict=True)
    assert sum((a == b).float().mean().item() for a, b in pairs) / len(spikes) > 0.999
    assert torch.allclose(y, y2, atol=1e-4)


def test_scaled_output_before_another_neuron_or_the_output_becomes_a_scale_node(tmp_path):
    model = nn.Sequential(TimeFold(nn.Linear(4, 3)), ATIFu(0.5), ATIFu(0.25, num_channels=3))
    graph, imported = roundtrip(model, torch.zeros(1, 1, 4), tmp_path, soft_reset="metadata")
    scales = [n for n in graph.nodes.values() if isinstance(n, nir.Scale)]
    assert [s.scale.tolist() for s in scales] == [[0.5] * 3, [0.25] * 3]
    x = torch.rand(5, 2, 4) * 2
    y, _ = spikes_of(model, x)
    y2, _ = spikes_of(imported, x)
    assert torch.equal(y, y2)


@pytest.mark.parametrize(
    ("module", "message"),
    [
        (ATIFnu(timesteps=4), r"'1' \(ATIFnu\).*threshold changes every timestep"),
        (nn.ReLU(), r"'1' \(ReLU\)"),
        (TimeFold(nn.MaxPool2d(2)), r"'1.module' \(MaxPool2d\)"),
    ],
)
def test_unsupported_modules_are_refused_by_name(module, message):
    model = nn.Sequential(TimeFold(nn.Conv2d(1, 2, 3, padding=1)), module)
    with pytest.raises(ConversionError, match=message):
        to_nir(model, torch.zeros(4, 1, 1, 6, 6))


def test_quantized_membrane_and_residual_models_are_refused():
    qlif = sq.create_neuron("qlif")
    with pytest.raises(ConversionError, match=r"QLIF\).*membrane is quantized"):
        to_nir(nn.Sequential(TimeFold(nn.Linear(3, 3)), qlif), torch.zeros(2, 1, 3))
    resnet = sq.create_model("resnet8_kws", in_channels=1, input_size=(12, 6), neuron="if_hard")
    with pytest.raises(ConversionError, match=r"'net.3' \(BasicBlock\)"):
        to_nir(resnet, torch.zeros(1, 1, 12, 6))
    with pytest.raises(ConversionError, match="batch norm is folded into the preceding Conv2d"):
        to_nir(
            nn.Sequential(TimeFold(nn.BatchNorm2d(1)), IF(reset="zero")), torch.zeros(1, 1, 1, 4, 4)
        )
    with pytest.raises(ShapeError):
        to_nir(nn.Sequential(TimeFold(nn.Linear(3, 3))), torch.zeros(2, 1, 5))


def test_import_refuses_what_spikequant_cannot_run():
    lif = nir.LIF(
        tau=np.full(2, 2.0), r=np.full(2, 2.0), v_leak=np.full(2, 0.1), v_threshold=np.ones(2)
    )
    with pytest.raises(ConversionError, match=r"'lif'.*v_leak"):
        from_nir(nir.NIRGraph.from_list(nir.Affine(np.eye(2), np.zeros(2)), lif))
    cuba = nir.CubaLIF(
        tau_syn=np.ones(2),
        tau_mem=np.ones(2) * 2,
        r=np.ones(2),
        v_leak=np.zeros(2),
        v_threshold=np.ones(2),
    )
    with pytest.raises(ConversionError, match=r"'cubalif' \(CubaLIF\)"):
        from_nir(nir.NIRGraph.from_list(nir.Affine(np.eye(2), np.zeros(2)), cuba))
    ragged = nir.IF(r=np.ones((2, 2)), v_threshold=np.array([[1.0, 2.0], [1.0, 1.0]]))
    with pytest.raises(ConversionError, match="per-layer or per-channel"):
        from_nir(nir.NIRGraph.from_list(nir.Scale(np.ones((2, 2))), ragged))
    a, b = nir.Affine(np.eye(2), np.zeros(2)), nir.Affine(np.eye(2), np.zeros(2))
    branching = nir.NIRGraph(
        nodes={
            "input": nir.Input(np.array([2])),
            "a": a,
            "b": b,
            "output": nir.Output(np.array([2])),
        },
        edges=[("input", "a"), ("input", "b"), ("a", "output"), ("b", "output")],
    )
    with pytest.raises(ConversionError, match="only sequential chains"):
        from_nir(branching)


def test_import_of_a_foreign_graph_with_sum_pooling_and_input_gain():
    # A NIR graph written by hand: conv -> IF (R = 0.5: input gain) -> sum pool -> flatten -> LIF
    conv_w = np.ones((1, 1, 1, 1), np.float32)
    graph = nir.NIRGraph.from_list(
        nir.Conv2d(
            input_shape=(4, 4),
            weight=conv_w,
            stride=1,
            padding=0,
            dilation=1,
            groups=1,
            bias=np.zeros(1, np.float32),
        ),
        nir.IF(
            r=np.full((1, 4, 4), 0.5, np.float32), v_threshold=np.full((1, 4, 4), 0.99, np.float32)
        ),
        nir.SumPool2d(
            kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])
        ),
        nir.Flatten(input_type={"input": np.array([1, 2, 2])}, start_dim=0),
        nir.LIF(
            tau=np.full(4, 2.0), r=np.full(4, 2.0), v_leak=np.zeros(4), v_threshold=np.full(4, 1.5)
        ),
    )
    model = from_nir(graph)
    x = torch.ones(3, 1, 1, 4, 4)  # IF: v = 0.5, 1.0 (> 0.99, fires), 0.5
    spikes_if = []
    model[2].register_forward_hook(lambda _m, _i, out: spikes_if.append(out))
    y = model(x)
    assert spikes_if[0][:, 0, 0, 0, 0].tolist() == [0.0, 1.0, 0.0]
    # sum pool of 4 spikes -> 4 at t=2; LIF v = 0, 4 (fires since 4 > 1.5), 0
    assert y[:, 0, 0].tolist() == [0.0, 1.0, 0.0]
    with pytest.raises(ShapeError):
        model(torch.ones(3, 1, 4, 4))


@settings(max_examples=15, deadline=None)
@given(
    widths=st.lists(st.integers(1, 6), min_size=1, max_size=3),
    taus=st.lists(st.sampled_from([None, 1.0, 1.5, 2.0, 8.0]), min_size=3, max_size=3),
    thresholds=st.lists(st.floats(0.125, 2.0, width=32), min_size=3, max_size=3),
    v_reset=st.sampled_from([0.0, -0.25, 0.25]),
    seed=st.integers(0, 2**16),
)
def test_round_trip_is_exact_for_random_mlps(widths, taus, thresholds, v_reset, seed):
    torch.manual_seed(seed)
    layers, features = [], 5
    for width, tau, th in zip(widths, taus, thresholds, strict=False):
        layers.append(TimeFold(nn.Linear(features, width)))
        reset = sq.Zero(v_reset)
        layers.append(
            IF(th, reset=reset) if tau is None else LIF(tau=tau, threshold=th, reset=reset)
        )
        features = width
    model = nn.Sequential(*layers)
    x = torch.randn(8, 4, 5) * 2
    imported = from_nir(to_nir(model, x))
    y, spikes = spikes_of(model, x)
    y2, spikes2 = spikes_of(imported, x)
    for a, b in zip(spikes, spikes2, strict=True):
        assert torch.equal(a, b)


def test_mean_over_time_read_out_is_kept_in_metadata_and_restored(tmp_path):
    from spikequant.layers import MeanOverTime, RepeatTime

    torch.manual_seed(4)
    model = nn.Sequential(
        RepeatTime(5),
        TimeFold(nn.Flatten()),
        TimeFold(nn.Linear(12, 6)),
        LIF(tau=2.0, threshold=0.2),
        TimeFold(nn.Linear(6, 3)),
        MeanOverTime(),
    )
    graph, imported = roundtrip(model, torch.zeros(2, 3, 4), tmp_path)
    assert graph.metadata["readout"] == "mean_over_time"
    assert list(graph.nodes["input"].input_type["input"]) == [3, 4]
    x = torch.rand(7, 3, 4) * 2
    y, _ = spikes_of(model, x)
    y2, _ = spikes_of(imported, x.unsqueeze(0).expand(5, *x.shape))
    assert y.shape == (7, 3) and torch.equal(y, y2)
    middle = nn.Sequential(TimeFold(nn.Linear(3, 3)), MeanOverTime(), nn.Identity(), LIF())
    with pytest.raises(ConversionError, match="MeanOverTime is only supported as the final"):
        to_nir(middle, torch.zeros(2, 1, 3))


def test_reference_simulator_matches_hard_reset_and_exposes_the_soft_reset_gap():
    from spikequant.export.reference import simulate

    torch.manual_seed(5)
    x = torch.rand(6, 4, 2, 8, 8) * 1.5
    hard = small_cnn(IF(0.5, reset="zero"), IF(0.3, reset="zero"), IF(0.2, reset="zero"))
    y, _ = spikes_of(hard, x)
    assert torch.equal(simulate(to_nir(hard, x), x), y)
    soft = small_cnn(IF(0.5), IF(0.3), IF(0.2))  # soft reset: V = H - V_th z
    y_soft, _ = spikes_of(soft, x)
    graph = to_nir(soft, x, soft_reset="metadata")
    assert torch.equal(from_nir(graph)(x), y_soft)  # spikequant honours the annotation
    assert not torch.equal(simulate(graph, x), y_soft)  # a NIR tool resets to v_reset instead


def test_parametrized_quantized_weights_export_their_effective_values_and_qat_layers_are_refused():
    from spikequant.quant.qat import QuantLinear
    from spikequant.spquant.weights import quantize_weights

    torch.manual_seed(6)
    model = nn.Sequential(
        TimeFold(nn.Linear(6, 5)), IF(0.3, reset="zero"), TimeFold(nn.Linear(5, 2))
    )
    quantize_weights(model, 2)
    graph = to_nir(model, torch.zeros(1, 1, 6))
    w = model[0].module.weight.detach()  # the power-of-two weights the forward uses
    np.testing.assert_array_equal(graph.nodes["0.module"].weight, w.numpy())
    assert len(np.unique(graph.nodes["0.module"].weight)) <= 4  # 2-bit: {0, +-a} (and maybe -0)
    x = torch.rand(5, 3, 6) * 2
    assert torch.equal(from_nir(graph)(x), spikes_of(model, x)[0])
    fake_quant = nn.Sequential(TimeFold(QuantLinear(6, 5, bits=4)), IF(reset="zero"))
    with pytest.raises(ConversionError, match=r"'0.module' \(QuantLinear\)"):
        to_nir(fake_quant, torch.zeros(1, 1, 6))


def test_grouped_conv_receives_per_channel_output_scale_and_model_state_is_restored():
    torch.manual_seed(7)
    atif = ATIFu(0.5, num_channels=4)
    with torch.no_grad():
        atif.threshold.copy_(torch.tensor([0.3, 0.5, 0.7, 0.9]))
    model = nn.Sequential(
        TimeFold(nn.Conv2d(2, 4, 3, padding=1)),
        atif,
        TimeFold(nn.Conv2d(4, 6, 3, padding=1, groups=2)),
        IF(0.4, reset="zero"),
    )
    model.train()
    x = torch.rand(5, 3, 2, 6, 6) * 2
    graph = to_nir(model, x, soft_reset="metadata")
    assert model.training and all(m.training for m in model.modules())  # mode restored
    assert all(m.state is None for m in model.modules() if isinstance(m, SpikingNeuron))
    # NIR's Conv2d type ignores groups: the export writes the equivalent dense weight [6, 4, 3, 3]
    w = model[2].module.weight.detach()  # [6, 2, 3, 3]: out 0-2 read channels 0-1, out 3-5 read 2-3
    dense = torch.zeros(6, 4, 3, 3)
    dense[:3, :2] = w[:3] * torch.tensor([0.3, 0.5])[:, None, None]
    dense[3:, 2:] = w[3:] * torch.tensor([0.7, 0.9])[:, None, None]
    node = graph.nodes["2.module"]
    assert int(node.groups) == 1
    np.testing.assert_allclose(node.weight, dense.numpy(), rtol=1e-6)
    y, _ = spikes_of(model, x)
    assert torch.allclose(from_nir(graph)(x), y)


def test_vgg9_exports_as_a_chain_and_round_trips(tmp_path):
    torch.manual_seed(8)
    model = sq.create_model("vgg9", input_size=16, width=0.25, neuron="if_hard").eval()
    x = torch.rand(4, 3, 16, 16) * 3
    graph, imported = roundtrip(model, x[:1], tmp_path)
    kinds = [type(n).__name__ for n in graph.nodes.values()]
    assert kinds.count("Conv2d") == 8 and kinds.count("IF") == 8 and "Affine" in kinds
    y, spikes = spikes_of(model, x)
    y2, spikes2 = spikes_of(imported, x.unsqueeze(0).expand(model.timesteps, *x.shape))
    assert spikes[0].sum() > 0
    total = sum(s.numel() for s in spikes)
    agree = sum((a == b).sum().item() for a, b in zip(spikes, spikes2, strict=True))
    assert agree / total > 0.999
