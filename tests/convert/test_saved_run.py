"""Deployable conversions: ``SpikingNetwork.forward`` at its T, saved as a run folder
(``save_converted`` / ``convert --save-run``) that ``load_run_model`` rebuilds without calibration
data, ``eval`` measures like the sweep, and ``export`` / ``deploy`` / ``cost`` / ``convert`` refuse
with one line naming why."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch

from spikequant.cli import main
from spikequant.config import run_recipe
from spikequant.convert import convert, is_converted, save_converted
from spikequant.data import load_arrays
from spikequant.errors import ConfigError, RunFolderError
from spikequant.pipeline import load_run_model

METHODS = ("rate", "msat", "calif")
T = 8


@pytest.fixture(scope="module")
def qat_run(tmp_path_factory):
    """A 4-bit QAT MLP (784-32-10) trained one epoch on 1,000 real digits: every method converts
    it (calif needs the quantized form)."""
    out = tmp_path_factory.mktemp("qat")
    cfg = {
        "name": "tiny-qat",
        "seed": 0,
        "data": {"name": "mnist5k", "train_subset": 1000, "test_subset": 200},
        "model": {"name": "ann_mlp", "kwargs": {"qat": True, "bits": 4, "hidden": [32]}},
        "optim": {"name": "sgd", "lr": 0.05},
        "train": {"epochs": 1},
        "method": {"name": "qat"},
    }
    run_recipe(cfg, out_dir=out, progress=False)
    return out


@pytest.fixture(scope="module")
def digits():
    x_train, _ = load_arrays("mnist5k", "train")
    x_test, y_test = load_arrays("mnist5k", "test")
    return x_train[:64], x_test[:96], y_test[:96]


def quiet_main(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def one_line_refusal(code, err):
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("method", METHODS)
def test_forward_is_the_simulation_at_its_timesteps(qat_run, digits, method):
    model, _ = load_run_model(qat_run)
    x_cal, x, _ = digits
    net = convert(model.eval(), method, x_cal, timesteps=T)
    logits = net(x)
    assert logits.shape == (len(x), 10)
    assert torch.equal(logits, net.simulate(x, [T])[T]["logits"])
    assert torch.equal(net(x), logits)  # msat's confidence draws restart at every call
    net.timesteps = None
    with pytest.raises(ConfigError, match="timesteps"):
        net(x)


@pytest.mark.parametrize("method", METHODS)
def test_saved_network_loads_back_bit_for_bit(qat_run, digits, method, tmp_path):
    model, meta = load_run_model(qat_run)
    x_cal, x, _ = digits
    net = convert(model.eval(), method, x_cal, timesteps=T)
    expected = net(x)
    folder = save_converted(net, tmp_path / "run", source_model=model, source_meta=meta)
    assert (tmp_path / "run" / "latest.json").is_file()
    saved = json.loads((folder / "meta.json").read_text())
    assert set(saved["files"]) >= {"model.safetensors"}  # SHA-256 of every file
    conversion = saved["conversion"]
    assert saved["method"] == "conversion" and conversion["method"] == method
    assert conversion["timesteps"] == T and saved["model"] == meta["model"]
    loaded, loaded_meta = load_run_model(tmp_path / "run")  # no calibration data here
    assert is_converted(loaded_meta) and loaded.timesteps == T
    assert torch.equal(loaded(x), expected)
    with pytest.raises(RunFolderError, match="already holds a run"):
        save_converted(net, tmp_path / "run", source_model=model, source_meta=meta)


def test_convert_save_run_then_eval_matches_the_sweep(qat_run, tmp_path):
    out = tmp_path / "msat-run"
    code, printed, err = quiet_main(
        [
            "convert",
            str(qat_run),
            "--method",
            "msat",
            "--timesteps",
            str(T),
            "--test-samples",
            "96",
            "--calibration-samples",
            "64",
            "--device",
            "cpu",
            "--save-run",
            str(out),
            "--name",
            "sweep",
        ]
    )
    assert code == 0, err
    assert "as a run" in printed
    # without --out the report lands in the source run's reports/ folder
    report = json.loads((qat_run / "reports" / "sweep.json").read_text())
    sweep = report["methods"]["msat"]["rows"][0]["accuracy"]
    sweep = sweep / 100 if sweep > 1 else sweep  # the report may give percent or a fraction
    code, printed, err = quiet_main(["eval", str(out), "--subset", "96", "--json"])
    assert code == 0, err
    result = json.loads(printed)
    assert result["timesteps"] == T
    assert result["accuracy"] == pytest.approx(sweep, abs=1e-9)
    assert result["spikes_per_neuron"] == pytest.approx(
        report["methods"]["msat"]["rows"][0]["spikes_per_neuron"]
    )


@pytest.fixture(scope="module")
def saved_runs(qat_run, digits, tmp_path_factory):
    model, meta = load_run_model(qat_run)
    root = tmp_path_factory.mktemp("saved")
    for method in METHODS:
        net = convert(model.eval(), method, digits[0], timesteps=4)
        save_converted(net, root / method, source_model=model, source_meta=meta)
    return root


# what each command answers on a converted run: 0 works, else the words of its one-line refusal
COMMANDS = {
    "eval": {m: 0 for m in METHODS},
    "export": {
        "rate": 0,  # IF neurons with soft reset: NIR IF annotated 'spikequant_reset: subtract'
        "msat": "MSAT's multi-stage adaptive-threshold neurons",
        "calif": "Ca-LIF",
    },
    "deploy": {
        "rate": "float weights",
        "msat": "adaptive thresholds",
        "calif": 0,  # an exact integer Ca-LIF program (tests/runtime/test_calif.py)
    },
    "cost": {"rate": 0, "msat": 0, "calif": "ANN-vs-SNN energy model of rate and msat"},
    "convert": {m: "already a spiking network" for m in METHODS},
}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_commands_on_a_converted_run_work_or_refuse(saved_runs, command, method, tmp_path):
    run = saved_runs / method
    argv = {
        "eval": ["eval", str(run), "--subset", "16", "--json"],
        "export": [
            "export",
            str(run),
            "--out",
            str(tmp_path / "m.nir"),
            "--soft-reset",
            "metadata",
            "--verify",
            "--subset",
            "32",
            "--json",
        ],
        "deploy": ["deploy", str(run), "--out", str(tmp_path / "m.sqrt")],
        "cost": ["cost", str(run), "--samples", "8", "--json"],
        "convert": ["convert", str(run), "--timesteps", "2", "--out", str(tmp_path)],
    }[command]
    code, printed, err = quiet_main(argv)
    expected = COMMANDS[command][method]
    if expected != 0:
        assert expected in one_line_refusal(code, err)
        assert not (tmp_path / "m.nir").exists() and not (tmp_path / "m.sqrt").exists()
        return
    assert code == 0, err
    if command == "deploy":
        assert (tmp_path / "m.sqrt").is_file() and "Ca-LIF program" in printed
        return
    result = json.loads(printed)
    if command == "eval":
        assert result["timesteps"] == 4
    elif command == "cost":  # the MSAT paper's energy model at the saved T
        assert result["timesteps"] == 4 and result["samples"] == 8
        assert result["first_layer_macs"] > 0 and result["synops"] > 0
        assert result["snn_pj"] == pytest.approx(
            4.6 * 4 * result["first_layer_macs"] + 0.9 * result["synops"]
        )
    else:  # the NIR file read back and imported spikes like the converted network
        assert (tmp_path / "m.nir").is_file()
        assert result["nodes"]["IF"] == 1 and result["verify"]["timesteps"] == 4
        assert result["verify"]["prediction_agreement"] == 1.0
        assert result["verify"]["spike_entries_differing"] == 0


@pytest.mark.parametrize("name", ["ann_lenet", "ann_cnn"])
@pytest.mark.parametrize("per_channel", [False, True])
def test_rate_chain_runs_like_the_network(digits, name, per_channel):
    """The chain NIR export writes (conv, pooling, flatten, IF with soft reset, each over the whole
    sequence) gives the step-by-step network's logits."""
    from spikequant.convert.chain import rate_chain
    from spikequant.registry import create_model

    torch.manual_seed(0)
    x_cal, x, _ = digits
    net = convert(create_model(name).eval(), "rate", x_cal, timesteps=6, per_channel=per_channel)
    chain = rate_chain(net)
    logits = net(x[:32])
    with torch.no_grad():
        chained = chain(x[:32]).mean(0)
    assert torch.allclose(chained, logits, atol=1e-5)
    assert torch.equal(chained.argmax(1), logits.argmax(1))


def test_rate_chain_refuses_a_precharged_membrane(digits):
    from spikequant.convert.chain import rate_chain
    from spikequant.errors import ConversionError
    from spikequant.registry import create_model

    net = convert(
        create_model("ann_lenet").eval(), "rate", digits[0], timesteps=4, initial_membrane=0.5
    )
    with pytest.raises(ConversionError, match="NIR neurons start at rest"):
        rate_chain(net)


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--method", "rate,msat", "--timesteps", "4"], "exactly one --method"),
        (["--method", "rate", "--timesteps", "4,8"], "exactly one --method"),
        (["--method", "rate", "--timesteps", "4", "--device", "tpu"], "device"),
        (["--method", "rate", "--timesteps", "4", "--device", "cuda:99"], "cuda"),
    ],
)
def test_bad_save_run_and_device_are_refused(qat_run, argv, words, tmp_path):
    code, _, err = quiet_main(
        ["convert", str(qat_run), *argv, "--save-run", str(tmp_path / "x"), "--out", str(tmp_path)]
    )
    assert words in one_line_refusal(code, err)
    assert not (tmp_path / "x").exists()


def test_save_run_into_a_run_is_refused_before_work(qat_run, tmp_path):
    code, _, err = quiet_main(
        [
            "convert",
            str(qat_run),
            "--method",
            "rate",
            "--timesteps",
            "4",
            "--save-run",
            str(qat_run),
            "--out",
            str(tmp_path),
        ]
    )
    assert "already holds a run" in one_line_refusal(code, err)
    assert list(tmp_path.iterdir()) == []  # refused before the sweep wrote its report


def test_save_run_keeps_its_timesteps_when_check_exact_extends_the_sweep(qat_run, tmp_path):
    out = tmp_path / "calif-run"
    code, _, err = quiet_main(
        ["convert", str(qat_run), "--method", "calif", "--timesteps", "4", "--check-exact",
         "--test-samples", "32", "--out", str(tmp_path / "report"), "--name", "calif",
         "--save-run", str(out)]
    )  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "report" / "calif.json").read_text())
    assert report["timesteps"] == [4, 16]  # 4 bits: T = 2^4 joins the sweep
    net, _ = load_run_model(out)
    assert net.timesteps == 4
