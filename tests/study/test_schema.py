"""The study schema is strict: every misspelt key is an error that names it and the right one."""

import pytest
import yaml

from spikequant import ConfigError
from spikequant.cli import main
from spikequant.study import list_studies, load_study, resolve_settings
from spikequant.study.report import report_stem

BASE = """
title: t
seeds: [0, 1]
rows:
  fp: {recipe: spquant-mnist-fp}
  quant: {recipe: spquant-mnist-quant, init_from: {row: fp, key: method.init_from}}
summary: [{field: test_accuracy, scale: 100, format: .2f}]
comparisons: [{name: drop, row: fp, base: quant, field: test_accuracy, scale: 100}]
checks: [{name: small, comparison: drop, at_most: 2}]
settings:
  short: {description: shorter, overrides: [train.epochs=1], rows: {quant: {init_from: null}}}
"""


def _load(tmp_path, edit=None):
    raw = yaml.safe_load(BASE)
    if edit:
        edit(raw)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_study(str(path))


def test_a_valid_study_gets_its_defaults(tmp_path):
    study = _load(tmp_path)
    assert study["name"] == "s" and study["rows"]["fp"]["label"] == "fp"
    assert study["summary"][0] == {
        "field": "test_accuracy", "label": "test_accuracy", "scale": 100.0, "format": ".2f"
    }  # fmt: skip
    assert study["comparisons"][0]["op"] == "difference"
    assert study["checks"][0]["limit"] == "at_most" and study["checks"][0]["value"] == 2.0
    assert study["settings"]["short"]["rows"]["quant"] == {"overrides": [], "init_from": None}


@pytest.mark.parametrize(
    ("edit", "path", "suggestion"),
    [
        (lambda s: s.update(seed=s.pop("seeds")), "seed", "seeds"),
        (lambda s: s["rows"]["fp"].update(recipie=s["rows"]["fp"].pop("recipe")),
         "rows.fp.recipie", "rows.fp.recipe"),
        (lambda s: s["rows"]["quant"]["init_from"].update(rows="fp"),
         "rows.quant.init_from.rows", "rows.quant.init_from.row"),
        (lambda s: s["comparisons"][0].update(bse="quant"), "comparisons[0].bse",
         "comparisons[0].base"),
        (lambda s: s["checks"][0].update(at_mots=1), "checks[0].at_mots", "checks[0].at_most"),
        (lambda s: s["settings"]["short"].update(overides=[]), "settings.short.overides",
         "settings.short.overrides"),
        (lambda s: s["summary"][0].update(formt=".1f"), "summary[0].formt", "summary[0].format"),
    ],
)  # fmt: skip
def test_a_misspelt_key_names_its_path_and_the_valid_key(tmp_path, edit, path, suggestion):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, edit)
    message = str(err.value)
    assert f"study: unknown key {path} (did you mean {suggestion}?)" in message


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s["comparisons"][0].update(row="fpp"), "unknown row 'fpp'; did you mean 'fp'"),
        (lambda s: s["checks"][0].update(comparison="drops"), "did you mean 'drop'"),
        (lambda s: s["checks"][0].update(at_least=1), "exactly one of"),
        (lambda s: s["rows"]["fp"].update(init_from={"row": "quant", "key": "k"}), "earlier row"),
        (lambda s: s.update(seeds=[0, 0]), "distinct"),
        (lambda s: s.pop("rows"), "study: rows is required"),
        (lambda s: s["summary"][0].update(format="%d"), "not a Python number format"),
        (lambda s: s.update(collect=["thresholds"]), "unknown collector"),
        (lambda s: s.update(setting="shrt"), "did you mean 'short'"),
    ],
)
def test_bad_references_and_values_are_config_errors(tmp_path, edit, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _load(tmp_path, edit)


def test_every_bundled_study_loads():
    assert {"atif-ablation", "spquant-study", "demo"} <= set(list_studies())
    for name in list_studies():
        study = load_study(name)
        assert study["rows"] and study["summary"]
    demo = load_study("demo")  # extends the ablation, runs its resnet8 setting
    assert demo["rows"] == load_study("atif-ablation")["rows"] and demo["setting"] == "resnet8"
    assert demo["seeds"] == [0, 1, 2]


def test_settings_resolve_to_one_run_or_a_sweep():
    study = load_study("atif-ablation")
    assert resolve_settings(study, None) == [None]
    assert resolve_settings(study, "resnet8") == ["resnet8"]
    assert resolve_settings(study, None, sweep=True) == list(study["settings"])
    assert resolve_settings(study, "adam,sgd", sweep=True) == ["adam", "sgd"]
    assert resolve_settings(load_study("demo"), None) == ["resnet8"]
    with pytest.raises(ConfigError, match="add --sweep"):
        resolve_settings(study, "adam,sgd")
    with pytest.raises(ConfigError, match="unknown setting 'nope'"):
        resolve_settings(study, "nope")


def test_report_names_never_collide():
    stems = {
        report_stem(study, setting, sweep)
        for study in ("atif-ablation", "spquant-study", "demo")
        for setting in (None, "resnet8", "adam")
        for sweep in (False, True)
        if not (sweep and setting)
    }
    assert len(stems) == 3 * 4
    assert report_stem("atif-ablation", None) == "atif_ablation"
    assert report_stem("atif-ablation", "resnet8") == "atif_ablation_resnet8"
    assert report_stem("atif-ablation", None, sweep=True) == "atif_ablation_sweep"


def test_seeds_accept_ranges_and_lists():
    from spikequant.cli.commands.study import parse_seeds

    assert parse_seeds("0..2") == [0, 1, 2]
    assert parse_seeds("0..2,7") == [0, 1, 2, 7]
    assert parse_seeds("3") == [3]
    for bad in ("a", "0..2,1", "-1", ""):
        with pytest.raises(ConfigError):
            parse_seeds(bad)


def test_the_command_answers_bad_input_with_one_line(tmp_path, capsys):
    for argv, message in (
        (["study", "nope"], "study 'nope' not found"),
        (["study"], "name a study"),
        (["study", "atif-ablation", "--set", "fixd:train.epochs=1"], "unknown row 'fixd'"),
        (["study", "atif-ablation", "--setting", "nope"], "unknown setting 'nope'"),
        (["study", "atif-ablation", "--jobs", "0"], "--jobs must be at least 1"),
    ):
        assert main([*argv, "--work-dir", str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err
    assert main(["study", "--list"]) == 0
    assert "spquant-study" in capsys.readouterr().out.split()
