"""params.yaml loading: the shipped file is valid, and every bad value is named precisely."""
from __future__ import annotations

import dataclasses

import pytest

from stages.params import TRAIN_KEYS, ParamsError, channel_stats, load_params, parse_params
from tests.conftest import DEFAULT_PARAMS, PROJECT, params_dict


def test_shipped_params_reproduce_the_tutorial():
    p = load_params(PROJECT / "params.yaml")
    t = p.train
    assert t.recipe == "tutorial"
    assert (t.augment.crop_pad, t.augment.flip, t.optim.schedule, t.numerics.precision) == (0, "none", "constant",
                                                                                            "fp32")
    assert (t.model.name, t.optim.optimizer, t.optim.units, t.optim.lr, t.optim.momentum) == (
        "mlp", "sgd", "per-step", 0.001, 0.0)
    assert (t.optim.batch_size, t.optim.epochs, t.optim.warmup, t.average.ema, t.average.lookahead) == (4, 10, 0, 0, 0)
    assert (p.prepare.mean, p.prepare.std, p.prepare.val_size) == (0.5, 0.5, 0)
    assert p.data.md5 == "c58f30108f718f92721af3b95e74349a"


def test_train_keys_are_dotted_group_keys_and_every_one_is_in_params_yaml():
    assert {"optim.lr", "model.name", "augment.flip", "average.lookahead", "numerics.seed"} <= set(TRAIN_KEYS)
    for key in TRAIN_KEYS:
        group, name = key.split(".")
        assert name in DEFAULT_PARAMS["train"][group], key  # null there: the recipe's value
        assert DEFAULT_PARAMS["train"][group][name] is None, key
        for recipe in DEFAULT_PARAMS["recipes"].values():
            assert name in recipe[group], key


def test_ints_are_accepted_where_numbers_are_expected():
    p = parse_params(params_dict(**{"train.optim.lr": 1, "prepare.mean": [0, 1, 0]}))
    assert p.train.optim.lr == 1.0 and isinstance(p.train.optim.lr, float)
    assert p.prepare.mean == [0.0, 1.0, 0.0]


@pytest.mark.parametrize("dotted, value, expected", [
    ("train.optim.lr", -0.1, r"train\.optim\.lr: got -0\.1; must be > 0"),
    ("train.optim.lr", "fast", r"train\.optim\.lr: got 'fast' \(str\); expected a number"),
    ("train.optim.epochs", 2.5, r"train\.optim\.epochs: got 2\.5 \(float\); expected an integer"),
    ("train.optim.epochs", 0, r"train\.optim\.epochs: got 0; must be >= 1"),
    ("train.optim.batch_size", True, r"train\.optim\.batch_size: got True \(bool\); expected an integer"),
    ("train.model.name", "vgg",
     r"train\.model\.name: got 'vgg' \(str\); expected one of 'mlp', 'cnn', 'resnet', 'airbench'"),
    ("train.optim.optimizer", "adam", r"train\.optim\.optimizer: got 'adam' \(str\); expected one of 'sgd', 'adamw'"),
    ("train.optim.momentum", 1.0, r"train\.optim\.momentum: got 1\.0; must be in \[0, 1\)"),
    # The flat-era values are refused with what is allowed now.
    ("train.optim.schedule", "onecycle",
     r"train\.optim\.schedule: got 'onecycle' \(str\); expected one of 'constant', 'linear', 'cosine'"),
    ("train.augment.flip", True,
     r"train\.augment\.flip: got True \(bool\); expected one of 'none', 'random', 'alternate'"),
    ("train.augment.crop_pad", 17, r"train\.augment\.crop_pad: got 17; must be in 0\.\.16"),
    ("train.optim.warmup_from", 1.5, r"train\.optim\.warmup_from: got 1\.5; must be in \[0, 1\]"),
    ("train.optim.decay_to", -0.1, r"train\.optim\.decay_to: got -0\.1; must be in \[0, 1\]"),
    ("train.model.bn_momentum", 0.0, r"train\.model\.bn_momentum: got 0\.0; must be in \(0, 1\]"),
    ("train.average.lookahead", 1.0, r"train\.average\.lookahead: got 1\.0; must be in \[0, 1\)"),
    ("train.average.lookahead_every", 0, r"train\.average\.lookahead_every: got 0; must be >= 1"),
    ("train.numerics.device", "gpu", r"train\.numerics\.device: got 'gpu'; must be auto, cpu, cuda, cuda:N or mps"),
    ("evaluate.tta", "mirror", r"evaluate\.tta: got 'mirror' \(str\); expected one of 'none', 'flip', 'flip-shift', "
                               r"'airbench'"),
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


@pytest.mark.parametrize("widths", [[64, 128], [64, 128, 128, 256], [64, 0, 128]])
def test_model_widths_are_three_positive_channel_counts(widths):
    with pytest.raises(ParamsError, match=r"train\.model\.widths: got \[[\d, ]+\]; must be 3 channel counts, "
                                          r"each >= 1") as err:
        parse_params(params_dict(**{"train.model.widths": widths}))
    assert str(widths) in str(err.value)
    assert parse_params(params_dict(**{"train.model.widths": [8, 16, 16]})).train.model.widths == [8, 16, 16]


def test_model_widths_of_another_type_say_a_list_of_integers():
    with pytest.raises(ParamsError, match=r"train\.model\.widths: got \[64, 1\.5, 3\] \(list\); "
                                          r"expected a list of integers$"):
        parse_params(params_dict(**{"train.model.widths": [64, 1.5, 3]}))


def test_unknown_and_missing_keys_are_listed_together():
    raw = params_dict(**{"train.optim.lrr": 0.1})
    del raw["evaluate"]["device"]
    with pytest.raises(ParamsError) as err:
        parse_params(raw)
    message = str(err.value)
    assert ("train.optim.lrr: unknown key; allowed keys in train.optim: optimizer, units, lr, momentum, nesterov, "
            "weight_decay, bn_bias_lr, muon,") in message
    assert "evaluate.device: missing" in message


def test_a_flat_key_of_before_the_groups_lists_the_groups():
    with pytest.raises(ParamsError, match=r"train\.lr: unknown key; allowed keys in train: recipe, model, optim, "
                                          r"augment, average, numerics"):
        parse_params(params_dict(**{"train.lr": 0.1}))


def test_section_that_is_not_a_mapping():
    with pytest.raises(ParamsError, match=r"train: expected a mapping of keys, got 3 \(int\)"):
        parse_params(params_dict(train=3))
    with pytest.raises(ParamsError, match=r"train\.optim: expected a mapping of keys, got 3 \(int\)"):
        parse_params(params_dict(**{"train.optim": 3}))


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


@pytest.mark.parametrize("recipe", list(DEFAULT_PARAMS["recipes"]))
def test_recipe_switch_takes_every_value_of_the_recipe(recipe):
    raw = params_dict(**{"train.recipe": recipe})
    p = parse_params(raw)
    assert dataclasses.asdict(p.train) == {**raw["recipes"][recipe], "recipe": recipe}


def test_the_recipes_are_the_tutorial_the_old_cpu_one_and_three_airbench_ones():
    recipes = {name: parse_params(params_dict(**{"train.recipe": name})).train for name in DEFAULT_PARAMS["recipes"]}
    assert list(recipes) == ["tutorial", "resnet-cpu", "cpu", "cpu93", "fast-gpu"]
    old_cpu = recipes["resnet-cpu"]
    assert (old_cpu.model.name, old_cpu.model.width, old_cpu.optim.batch_size, old_cpu.optim.schedule) == (
        "resnet", 24, 256, "linear")
    for name, batch in (("cpu", 256), ("fast-gpu", 1024)):
        t = recipes[name]
        assert (t.model.name, t.optim.batch_size, t.optim.units, t.augment.flip) == (
            "airbench", batch, "per-1024", "alternate"), name


def test_cpu93_is_cpu_with_the_overrides_its_benchmarks_ran():
    """BENCHMARKS.md 3r measured `--recipe cpu` with these --set values: the figures hold for cpu93."""
    overrides = {"train.model.activation": "gelu", "train.optim.epochs": 12, "train.optim.freeze_last": [4, 1],
                 "train.optim.freeze_anneal": True, "train.augment.early_crop": 24, "train.augment.early_crop_epochs": 3}
    measured = parse_params(params_dict(**{"train.recipe": "cpu", **overrides})).train
    named = parse_params(params_dict(**{"train.recipe": "cpu93"})).train
    assert dataclasses.replace(measured, recipe="cpu93") == named


def test_single_keys_override_the_recipe():
    p = parse_params(params_dict(**{"train.recipe": "resnet-cpu", "train.optim.lr": 0.05,
                                    "train.augment.flip": "none"}))
    assert (p.train.model.name, p.train.optim.lr, p.train.augment.flip) == ("resnet", 0.05, "none")
    assert p.train.augment.crop_pad == 4  # the rest of the group is the recipe's


def test_an_override_inside_a_group_keeps_the_recipes_other_values_in_that_group():
    raw = params_dict(**{"train.recipe": "cpu", "train.optim.lr": 0.5})
    p = parse_params(raw)
    recipe = raw["recipes"]["cpu"]
    assert p.train.optim.lr == 0.5
    assert p.train.optim.batch_size == 256 and p.train.optim.momentum == 0.85
    assert dataclasses.asdict(p.train.optim) == {**recipe["optim"], "lr": 0.5}
    for group in ("model", "augment", "average", "numerics"):  # and the other groups untouched
        assert dataclasses.asdict(getattr(p.train, group)) == recipe[group], group


def test_unknown_recipe_lists_the_known_ones():
    with pytest.raises(ParamsError, match=r"train\.recipe: got 'gpu' \(str\); expected one of 'tutorial', "
                                          r"'resnet-cpu', 'cpu', 'cpu93', 'fast-gpu'"):
        parse_params(params_dict(**{"train.recipe": "gpu"}))
    with pytest.raises(ParamsError) as err:
        parse_params(params_dict(**{"train.recipe": "gpu"}))
    assert str(err.value).count("\n") == 1  # one line for the name, none for the keys it could not fill


def test_errors_name_where_the_bad_value_was_written():
    with pytest.raises(ParamsError) as err:
        parse_params(params_dict(**{"recipes.resnet-cpu.optim.lr": -1.0, "train.optim.epochs": 0}))
    message = str(err.value)
    assert "recipes.resnet-cpu.optim.lr: got -1.0; must be > 0" in message  # checked although tutorial is in use
    assert "train.optim.epochs: got 0; must be >= 1" in message
    assert "train.optim.lr" not in message


def test_incomplete_recipe_is_an_error():
    raw = params_dict()
    del raw["recipes"]["cpu"]["model"]["width"]
    del raw["recipes"]["fast-gpu"]["average"]
    with pytest.raises(ParamsError) as err:
        parse_params(raw)
    assert "recipes.cpu.model.width: missing" in str(err.value)
    assert "recipes.fast-gpu.average: missing" in str(err.value)


def test_nesterov_needs_momentum():
    with pytest.raises(ParamsError, match=r"train\.optim\.nesterov: got True; must be false unless momentum > 0"):
        parse_params(params_dict(**{"train.optim.nesterov": True}))


def test_nesterov_needs_momentum_also_when_only_the_momentum_is_overridden():
    # resnet-cpu has nesterov on: momentum 0 on top of it is the same contradiction.
    with pytest.raises(ParamsError, match=r"train\.optim\.(nesterov|momentum): got .*must be false unless momentum"):
        parse_params(params_dict(**{"train.recipe": "resnet-cpu", "train.optim.momentum": 0.0}))


def test_per_1024_units_need_sgd():
    with pytest.raises(ParamsError, match=r"train\.optim\.units: got 'per-1024'; must be per-step unless optimizer "
                                          r"is sgd"):
        parse_params(params_dict(**{"train.optim.units": "per-1024", "train.optim.optimizer": "adamw"}))
    with pytest.raises(ParamsError, match=r"recipes\.cpu\.optim\.units: got 'per-1024'; must be per-step unless"):
        parse_params(params_dict(**{"recipes.cpu.optim.optimizer": "adamw"}))
    p = parse_params(params_dict(**{"train.optim.units": "per-1024", "train.optim.momentum": 0.9}))
    assert (p.train.optim.units, p.train.optim.optimizer) == ("per-1024", "sgd")


def test_per_1024_units_need_sgd_also_when_only_the_optimizer_is_overridden():
    # The cpu recipe is per-1024: switching its optimizer to adamw alone must not slip through.
    with pytest.raises(ParamsError, match=r"train\.optim\.(units|optimizer): got .*per-step unless optimizer is sgd"):
        parse_params(params_dict(**{"train.recipe": "cpu", "train.optim.optimizer": "adamw"}))


def test_ema_and_lookahead_are_not_both_on():
    with pytest.raises(ParamsError, match=r"train\.average\.ema: got 0\.9; must be 0 when average\.lookahead is on "
                                          r"\(one average at a time\)"):
        parse_params(params_dict(**{"train.recipe": "cpu", "train.average.ema": 0.9}))
    with pytest.raises(ParamsError, match=r"recipes\.tutorial\.average\.ema: got 0\.9; must be 0 when average\."
                                          r"lookahead is on"):
        parse_params(params_dict(**{"recipes.tutorial.average.ema": 0.9, "recipes.tutorial.average.lookahead": 0.5}))
    # Either one alone is fine.
    assert parse_params(params_dict(**{"train.average.ema": 0.9})).train.average.ema == 0.9
    p = parse_params(params_dict(**{"train.recipe": "cpu", "train.average.ema": 0.9, "train.average.lookahead": 0}))
    assert (p.train.average.ema, p.train.average.lookahead) == (0.9, 0.0)


def test_ema_and_lookahead_are_not_both_on_also_when_only_the_lookahead_is_overridden():
    with pytest.raises(ParamsError, match=r"train\.average\.(ema|lookahead): got .*one average at a time"):
        parse_params(params_dict(**{"recipes.resnet-cpu.average.ema": 0.99, "train.recipe": "resnet-cpu",
                                    "train.average.lookahead": 0.5}))


@pytest.mark.parametrize("dotted, value, expected", [
    ("data.source", "mnist", r"data\.source: got 'mnist' \(str\); expected one of 'cifar10', 'cifar100', 'imagefolder'"),
    ("data.labels", "both", r"data\.labels: got 'both' \(str\); expected one of 'fine', 'coarse'"),
    ("data.md5", "", r"data\.md5: got ''; must be 32 lowercase hex digits$"),  # "" is for imagefolder folders only
    ("prepare.image_size", 4, r"prepare\.image_size: got 4; must be in 8\.\.1024 \(pixels\)"),
    ("prepare.resample", "cubic", r"prepare\.resample: got 'cubic' \(str\); expected one of 'nearest', 'box', "
                                  r"'bilinear', 'hamming', 'bicubic', 'lanczos'"),
    ("prepare.test_fraction", 1.0, r"prepare\.test_fraction: got 1\.0; must be in \(0, 1\)"),
])
def test_bad_data_source_values_are_named(dotted, value, expected):
    with pytest.raises(ParamsError, match=expected):
        parse_params(params_dict(**{dotted: value}))


def test_an_image_folder_takes_an_empty_md5_and_the_default_is_cifar10_at_32_pixels():
    p = parse_params(params_dict(**{"data.source": "imagefolder", "data.url": "images/flowers", "data.md5": ""}))
    assert (p.data.source, p.data.md5) == ("imagefolder", "")
    shipped = load_params(PROJECT / "params.yaml")
    assert (shipped.data.source, shipped.prepare.image_size, shipped.prepare.resample) == ("cifar10", 32, "bicubic")


@pytest.mark.parametrize("freeze", [[1, 2], [10, 1], [1, 1, 1, 1], [-1]])
def test_freeze_last_is_up_to_three_non_increasing_epoch_counts_within_the_run(freeze):
    with pytest.raises(ParamsError, match=r"train\.optim\.freeze_last: got \[[-\d, ]+\]; must be \[\] or up to 3 "
                                          r"epoch counts, one per conv group from the first, each in 0\.\.epochs "
                                          r"\(9\) and none above the one before"):
        parse_params(params_dict(**{"train.recipe": "cpu", "train.optim.freeze_last": freeze}))
    assert parse_params(params_dict(**{"train.recipe": "cpu", "train.optim.freeze_last": [3, 1]})
                        ).train.optim.freeze_last == [3, 1]


def test_freeze_last_needs_the_airbench_network_also_when_only_the_model_is_overridden():
    with pytest.raises(ParamsError, match=r"train\.optim\.freeze_last: got \[2\]; must be \[\] unless model\.name "
                                          r"is airbench"):
        parse_params(params_dict(**{"train.recipe": "resnet-cpu", "train.optim.freeze_last": [2]}))
    with pytest.raises(ParamsError, match=r"train\.optim\.freeze_last: got \[2\]; must be \[\] unless"):
        parse_params(params_dict(**{"train.recipe": "cpu", "train.optim.freeze_last": [2],
                                    "train.model.name": "resnet"}))
    assert parse_params(params_dict(**{"train.recipe": "resnet-cpu", "train.optim.freeze_last": [0]}))


@pytest.mark.parametrize("freeze", [[], [0], [9]])
def test_freeze_anneal_needs_a_group_that_trains_and_then_freezes(freeze):
    with pytest.raises(ParamsError, match=r"train\.optim\.freeze_anneal: got True; must be false unless freeze_last "
                                          r"freezes a group after it has trained"):
        parse_params(params_dict(**{"train.recipe": "cpu", "train.optim.freeze_last": freeze,
                                    "train.optim.freeze_anneal": True}))
    assert parse_params(params_dict(**{"train.recipe": "cpu", "train.optim.freeze_last": [5, 2],
                                       "train.optim.freeze_anneal": True})).train.optim.freeze_anneal


def test_freeze_anneal_needs_a_schedule_that_decays():
    with pytest.raises(ParamsError, match=r"train\.optim\.freeze_anneal: got True; must be false unless schedule is "
                                          r"linear or cosine"):
        parse_params(params_dict(**{"train.recipe": "cpu", "train.optim.freeze_last": [3],
                                    "train.optim.freeze_anneal": True, "train.optim.schedule": "constant"}))


@pytest.mark.parametrize("dotted, message", [
    ({"train.augment.early_crop": 8, "train.augment.early_crop_epochs": 1},
     r"train\.augment\.early_crop: got 8; must be 0 \(off\) or at least 9 pixels"),
    ({"train.augment.early_crop": 24},
     r"train\.augment\.early_crop_epochs: got 0; must be in 1\.\.epochs \(9\) when early_crop is set, 0 when it is 0"),
    ({"train.augment.early_crop_epochs": 2},
     r"train\.augment\.early_crop_epochs: got 2; must be in 1\.\.epochs \(9\) when early_crop is set"),
    ({"train.augment.early_crop": 24, "train.augment.early_crop_epochs": 10},
     r"train\.augment\.early_crop_epochs: got 10; must be in 1\.\.epochs \(9\)"),
    ({"train.augment.early_crop": 24, "train.augment.early_crop_epochs": 2, "train.model.name": "resnet"},
     r"train\.augment\.early_crop: got 24; must be 0 unless model\.name is airbench"),
])
def test_early_crop_values_are_checked_against_each_other_the_epochs_and_the_model(dotted, message):
    with pytest.raises(ParamsError, match=message):
        parse_params(params_dict(**{"train.recipe": "cpu", **dotted}))
    ok = parse_params(params_dict(**{"train.recipe": "cpu", "train.augment.early_crop": 24,
                                     "train.augment.early_crop_epochs": 9})).train.augment
    assert (ok.early_crop, ok.early_crop_epochs) == (24, 9)
