"""params.yaml loading: the shipped file is valid, and every bad value is named precisely."""
from __future__ import annotations

import pytest

from stages.params import ParamsError, channel_stats, load_params, parse_params
from tests.conftest import PROJECT, params_dict


def test_shipped_params_reproduce_the_tutorial():
    p = load_params(PROJECT / "params.yaml")
    assert p.train.recipe == "tutorial"
    assert (p.train.crop_pad, p.train.flip, p.train.schedule, p.train.precision) == (0, False, "constant", "fp32")
    assert (p.train.model, p.train.optimizer, p.train.lr, p.train.momentum) == ("mlp", "sgd", 0.001, 0.0)
    assert (p.train.batch_size, p.train.epochs) == (4, 10)
    assert (p.prepare.mean, p.prepare.std, p.prepare.val_size) == (0.5, 0.5, 0)
    assert p.data.md5 == "c58f30108f718f92721af3b95e74349a"


def test_ints_are_accepted_where_numbers_are_expected():
    p = parse_params(params_dict(**{"train.lr": 1, "prepare.mean": [0, 1, 0]}))
    assert p.train.lr == 1.0 and isinstance(p.train.lr, float)
    assert p.prepare.mean == [0.0, 1.0, 0.0]


@pytest.mark.parametrize("dotted, value, expected", [
    ("train.lr", -0.1, r"train\.lr: got -0\.1; must be > 0"),
    ("train.lr", "fast", r"train\.lr: got 'fast' \(str\); expected a number"),
    ("train.epochs", 2.5, r"train\.epochs: got 2\.5 \(float\); expected an integer"),
    ("train.epochs", 0, r"train\.epochs: got 0; must be >= 1"),
    ("train.batch_size", True, r"train\.batch_size: got True \(bool\); expected an integer"),
    ("train.model", "vgg", r"train\.model: got 'vgg' \(str\); expected one of 'mlp', 'cnn', 'resnet'"),
    ("train.optimizer", "adam", r"train\.optimizer: got 'adam' \(str\); expected one of 'sgd', 'adamw'"),
    ("train.momentum", 1.0, r"train\.momentum: got 1\.0; must be in \[0, 1\)"),
    ("train.device", "gpu", r"train\.device: got 'gpu'; must be auto, cpu, cuda, cuda:N or mps"),
    ("data.md5", "abc", r"data\.md5: got 'abc'; must be 32 lowercase hex digits"),
    ("prepare.std", [0.5, 0.0, 0.5], r"prepare\.std: got \[0\.5, 0\.0, 0\.5\]; every value must be > 0"),
    ("prepare.mean", [0.5, 0.5], r"prepare\.mean: got \[0\.5, 0\.5\]; must be one number or a list of 3"),
    ("prepare.mean", "train", r"'train' must be set on both or neither"),
    ("prepare.val_size", -1, r"prepare\.val_size: got -1; must be >= 0"),
    ("evaluate.batch_size", None, r"evaluate\.batch_size: got nothing \(null\); expected an integer"),
])
def test_bad_values_name_key_value_and_rule(dotted, value, expected):
    with pytest.raises(ParamsError, match=expected):
        parse_params(params_dict(**{dotted: value}))


def test_unknown_and_missing_keys_are_listed_together():
    raw = params_dict(**{"train.lrr": 0.1})
    del raw["evaluate"]["device"]
    with pytest.raises(ParamsError) as err:
        parse_params(raw)
    message = str(err.value)
    assert "train.lrr: unknown key; allowed keys in train: recipe, model, width, optimizer, lr," in message
    assert "evaluate.device: missing" in message


def test_section_that_is_not_a_mapping():
    with pytest.raises(ParamsError, match=r"train: expected a mapping of keys, got 3 \(int\)"):
        parse_params(params_dict(train=3))


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ParamsError, match=r"nope\.yaml: file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match=r"params\.yaml: not valid YAML"):
        load_params(bad)


def test_channel_stats_expands_one_value_to_three():
    assert channel_stats(0.5) == [0.5, 0.5, 0.5]
    assert channel_stats([0.1]) == [0.1, 0.1, 0.1]
    assert channel_stats([0.1, 0.2, 0.3]) == [0.1, 0.2, 0.3]


def test_recipe_switch_takes_every_value_of_the_recipe():
    raw = params_dict(**{"train.recipe": "fast-gpu"})
    p = parse_params(raw)
    expected = dict(raw["recipes"]["fast-gpu"], recipe="fast-gpu")
    assert {k: getattr(p.train, k) for k in expected} == expected


def test_single_keys_override_the_recipe():
    p = parse_params(params_dict(**{"train.recipe": "cpu", "train.lr": 0.05, "train.flip": False}))
    assert (p.train.model, p.train.lr, p.train.flip) == ("resnet", 0.05, False)


def test_unknown_recipe_lists_the_known_ones():
    with pytest.raises(ParamsError, match=r"train\.recipe: got 'gpu' \(str\); expected one of 'tutorial', 'cpu', "):
        parse_params(params_dict(**{"train.recipe": "gpu"}))


def test_errors_name_where_the_bad_value_was_written():
    with pytest.raises(ParamsError) as err:
        parse_params(params_dict(**{"recipes.cpu.lr": -1.0, "train.epochs": 0}))
    message = str(err.value)
    assert "recipes.cpu.lr: got -1.0; must be > 0" in message  # checked although tutorial is in use
    assert "train.epochs: got 0; must be >= 1" in message
    assert "train.lr" not in message


def test_incomplete_recipe_is_an_error():
    raw = params_dict()
    del raw["recipes"]["cpu"]["width"]
    with pytest.raises(ParamsError, match=r"recipes\.cpu\.width: missing"):
        parse_params(raw)


def test_nesterov_needs_momentum():
    with pytest.raises(ParamsError, match=r"train\.nesterov: got True; must be false unless momentum > 0"):
        parse_params(params_dict(**{"train.nesterov": True}))
