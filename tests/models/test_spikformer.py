"""Spikformer: the attention's algebra, the bundled recipes, and one short epoch of each digits
recipe on real digits (the SpQuant one checked for low-bit weights and a ternary membrane)."""

import pytest
import torch
from torch.nn.utils import parametrize

import spikequant as sq
from spikequant.config import list_recipes, load_recipe
from spikequant.data import get_dataset
from spikequant.errors import ConfigError
from spikequant.models import NeuronFactory
from spikequant.models.spikformer import SpikingSelfAttention
from spikequant.pipeline import load_run_model
from spikequant.pipeline import run as run_recipe
from spikequant.quant.pow2 import pow2_grid
from spikequant.spquant.neuron import QLIF
from spikequant.spquant.weights import RescaledPowerOfTwo
from spikequant.train.build import build_model, model_spec
from spikequant.train.recipe import validate_recipe

pytestmark = pytest.mark.usefixtures("one_thread")

RECIPES = [name for name in list_recipes() if "spikformer" in name]
#: one epoch of each digits recipe on 768 digits at T = 2 (the recipes' network and optimizer,
#: half their timesteps): about 12 s (direct) and 16 s (spquant) of one core, measured; the
#: test accuracy was 0.33 and 0.31 (chance 0.1; 0.2 is five standard deviations above it)
SHORT = {"train_subset": 768, "test_subset": 200}
SHORT_TIMESTEPS = 2


def test_the_recipes_are_bundled_and_validate():
    assert {
        "spikformer-digits",
        "spquant-spikformer-digits",
        "spquant-spikformer-cifar10",
        "spquant-spikformer-cifar100",
        "spquant-spikformer-imagenet",
    } <= set(RECIPES)
    for name in RECIPES:
        cfg = validate_recipe(load_recipe(name))
        assert cfg["model"]["name"] == "spikformer"
        if cfg["method"]["name"] == "spquant":
            assert cfg["model"]["neuron"] == "qlif"
            assert cfg["model"]["neuron_kwargs"]["membrane"] == "ternary"
            assert cfg["method"]["weight_bits"] <= 4


@pytest.mark.parametrize(
    "recipe, tokens, millions",
    [
        # Zhou et al. report 9.32 M (Spikformer-4-384) and 29.68 M (Spikformer-8-512) parameters
        ("spquant-spikformer-cifar10", 8 * 8, 9.32),
        ("spquant-spikformer-imagenet", 14 * 14, 29.68),
    ],
)
def test_paper_cells_have_spikformers_size(recipe, tokens, millions):
    spec = model_spec(validate_recipe(load_recipe(recipe)))
    model = build_model(spec)
    count = sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6
    assert count == pytest.approx(millions, rel=0.005)  # measured: 9.311, 29.665
    size = spec["kwargs"]["input_size"]
    assert (size // model.patch_size) ** 2 == tokens


def test_attention_is_q_kt_v_without_softmax():
    """The module's Q (K^T V) equals (Q K^T) V exactly: both sum products of 0/1 spikes."""
    torch.manual_seed(0)
    make = NeuronFactory("lif", None, timesteps=2)
    attention = SpikingSelfAttention(dim=8, heads=2, scale=0.125, make_neuron=make)
    x = (torch.rand(2, 3, 8, 4, 4) > 0.5).float()  # [T, B, D, H, W] spike tokens
    seen = {}
    attention.attn_neuron.register_forward_hook(lambda m, i, o: seen.update(mixed=i[0]))
    with torch.no_grad():
        attention(x)
        sq.reset_state(attention)
        q, k, v = (attention._split_heads(f(x)) for f in (attention.q, attention.k, attention.v))
    assert {float(s) for s in torch.cat([q, k, v]).unique()} <= {0.0, 1.0}
    quadratic = (q @ k.transpose(-1, -2)) @ v * 0.125  # [T, B, heads, N, d]
    expected = quadratic.transpose(-1, -2).reshape(2, 3, 8, 4, 4)
    assert torch.equal(seen["mixed"], expected)
    assert expected.abs().sum() > 0


def test_bad_sizes_are_config_errors():
    with pytest.raises(ConfigError, match="divisible by heads"):
        sq.create_model("spikformer", embed_dim=30, heads=4)
    with pytest.raises(ConfigError, match="power of two"):
        sq.create_model("spikformer", patch_size=3)
    with pytest.raises(ConfigError, match="multiple of patch_size"):
        sq.create_model("spikformer", input_size=30, patch_size=4)


def _short_run(name, tmp_path):
    cfg = load_recipe(name)
    cfg["data"].update(SHORT)
    cfg["train"]["epochs"] = 1
    cfg["model"]["timesteps"] = SHORT_TIMESTEPS
    return run_recipe(cfg, out_dir=tmp_path / name, progress=False)


def test_spikformer_digits_learns_in_one_short_epoch(tmp_path):
    result = _short_run("spikformer-digits", tmp_path)
    assert result["test_accuracy"] > 0.2  # chance is 0.1


def test_spquant_spikformer_digits_has_low_bit_weights_and_a_ternary_membrane(tmp_path):
    result = _short_run("spquant-spikformer-digits", tmp_path)
    assert result["test_accuracy"] > 0.2
    model, _ = load_run_model(tmp_path / "spquant-spikformer-digits")
    model.eval()
    quantized = {
        name: module
        for name, module in model.named_modules()
        if parametrize.is_parametrized(module, "weight")
    }
    synapses = [
        name
        for name, m in model.named_modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
    ]
    assert set(synapses) == set(quantized)  # every conv/linear, Q/K/V and head included
    assert {"net.1.q.0.module.0", "net.1.k.0.module.0", "net.1.v.0.module.0"} <= set(quantized)
    grid = pow2_grid(4)
    for name, module in quantized.items():
        (rescaled,) = module.parametrizations.weight
        assert isinstance(rescaled, RescaledPowerOfTwo) and rescaled.bits == 4
        with torch.no_grad():
            original = module.parametrizations.weight.original
            unit = (original.std() + rescaled.eps) / rescaled.gain * rescaled.quantizer.alpha
            levels = (module.weight / unit).abs().flatten()
            nearest = grid[(levels[:, None] - grid[None, :]).abs().argmin(1)]
        torch.testing.assert_close(levels, nearest, rtol=1e-5, atol=1e-6, msg=name)
        assert module.weight.unique().numel() <= 2 * len(grid) - 1, name
    qlifs = [m for m in model.modules() if isinstance(m, QLIF)]
    assert len(qlifs) == 12  # 5 in the stem, Q, K, V, attention, output, 2 in the MLP
    for layer in qlifs:
        layer.record_trace = True
    x, _ = get_dataset("mnist5k", "test").tensors
    with torch.no_grad():
        model(x[:8])
    for layer in qlifs:
        stored = layer.trace["stored"]
        assert {float(v) for v in stored.unique()} <= {-1.0, 0.0, 1.0}
        assert float(layer.trace["spikes"].sum()) > 0
