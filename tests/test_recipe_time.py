"""benchmarks/recipe_time.py: its --recipes entries, with and without overrides of their own."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from benchmarks.recipe_time import (epoch_kinds, kind_name, kind_overrides, projected_seconds, recipe_epochs,
                                    recipe_params, recipe_spec)
from stages.params import parse_params

PARAMS = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())


def test_a_plain_name_is_the_recipe_alone():
    assert recipe_spec("cpu") == {"train.recipe": "cpu"}


def test_overrides_after_at_signs_are_read_as_yaml():
    spec = "cpu@train.model.activation=gelu@train.optim.epochs=11@train.model.widths=[64, 96, 96]"
    assert recipe_spec(spec) == {"train.recipe": "cpu", "train.model.activation": "gelu",
                                 "train.optim.epochs": 11, "train.model.widths": [64, 96, 96]}


def test_an_entry_s_epochs_come_from_its_own_overrides():
    plain, bias = PARAMS["recipes"]["cpu"]["optim"]["epochs"], PARAMS["recipes"]["cpu"]["optim"]["whiten_bias_epochs"]
    assert bias < plain
    assert recipe_epochs(PARAMS, "cpu") == {(True, 0, False): bias, (False, 0, False): plain - bias}
    assert recipe_epochs(PARAMS, f"cpu@train.optim.epochs={plain + 2}") == {(True, 0, False): bias,
                                                                          (False, 0, False): plain + 2 - bias}
    assert recipe_epochs(PARAMS, "cpu@train.optim.epochs=2") == {(True, 0, False): 2}  # its bias trains throughout


def test_frozen_groups_make_kinds_of_their_own_in_the_last_epochs():
    assert recipe_epochs(PARAMS, "cpu@train.optim.epochs=11@train.optim.freeze_last=[5, 2]") == {
        (True, 0, False): 3, (False, 0, False): 3, (False, 1, False): 3, (False, 2, False): 2}
    # the bias trains in a frozen one
    assert epoch_kinds(4, 3, [2]) == {(True, 0, False): 2, (True, 1, False): 1, (False, 1, False): 1}
    assert kind_name((False, 2, False)) == "whitening bias frozen, 2 conv group(s) frozen"
    assert kind_name((True, 0, False)) == "whitening bias trains"
    assert kind_name((True, 0, False), only=True) == "every epoch"  # resnet-cpu's: nothing to freeze
    assert kind_name((True, 0, True)) == "whitening bias trains, on early_crop windows"


def test_a_recipe_without_a_whitening_bias_has_every_epoch_of_one_kind():
    epochs = PARAMS["recipes"]["resnet-cpu"]["optim"]["epochs"]
    assert recipe_epochs(PARAMS, "resnet-cpu") == {(True, 0, False): epochs}
    cpu_epochs = PARAMS["recipes"]["cpu"]["optim"]["epochs"]
    assert recipe_epochs(PARAMS, "cpu@train.model.whiten=false") == {(True, 0, False): cpu_epochs}


def test_the_projection_adds_every_kind_of_epoch_in_the_run_s_proportion():
    medians = {(True, 0, False): 10.0, (False, 0, False): 9.0, (False, 1, False): 6.0}
    assert projected_seconds(medians, epoch_kinds(11, 3)) == 3 * 10.0 + 8 * 9.0
    assert projected_seconds(medians, epoch_kinds(11, 3, [2])) == 3 * 10.0 + 6 * 9.0 + 2 * 6.0
    assert projected_seconds(medians, epoch_kinds(9.9, 3)) == pytest.approx(30.0 + 6.9 * 9.0)  # train94's 9.9 epochs
    assert projected_seconds(medians, epoch_kinds(2, 3)) == 20.0  # a run shorter than the bias's epochs


def test_the_timed_run_takes_the_entry_then_the_extra_values_without_touching_the_base():
    params = recipe_params(PARAMS, "cpu@train.model.activation=gelu@train.optim.epochs=11", {"train.optim.epochs": 1})
    assert params["train"]["recipe"] == "cpu"
    assert params["train"]["model"]["activation"] == "gelu" and params["train"]["optim"]["epochs"] == 1
    assert PARAMS["train"]["model"].get("activation") is None  # the base is copied, not changed


def test_every_kind_of_an_annealed_freeze_is_timed_by_a_run_the_params_accept():
    spec = "cpu@train.optim.epochs=12@train.optim.freeze_last=[5, 2]@train.optim.freeze_anneal=true"
    kinds = recipe_epochs(PARAMS, spec)
    assert kinds == {(True, 0, False): 3, (False, 0, False): 4, (False, 1, False): 3, (False, 2, False): 2}
    for kind in kinds:
        optim = parse_params(recipe_params(PARAMS, spec, kind_overrides(1, kind))).train.optim
        assert (optim.epochs, optim.freeze_last, optim.freeze_anneal) == (1, [1] * kind[1], False)


def test_early_crop_epochs_are_a_kind_of_their_own_each_timed_by_a_run_the_params_accept():
    spec = ("cpu@train.optim.epochs=12@train.optim.freeze_last=[4, 1]@train.optim.freeze_anneal=true"
            "@train.augment.early_crop=24@train.augment.early_crop_epochs=2")
    kinds = recipe_epochs(PARAMS, spec)
    assert kinds == {(True, 0, True): 2, (True, 0, False): 1, (False, 0, False): 5, (False, 1, False): 3,
                     (False, 2, False): 1}
    for kind in kinds:
        augment = parse_params(recipe_params(PARAMS, spec, kind_overrides(1, kind))).train.augment
        assert (augment.early_crop, augment.early_crop_epochs) == ((24, 1) if kind[2] else (0, 0))
    assert projected_seconds({(True, 0, True): 5.0, (True, 0, False): 10.0}, epoch_kinds(3, 3, crop_epochs=2)) == 20.0


@pytest.mark.parametrize("spec", ["@train.optim.epochs=11", "cpu@epochs"])
def test_a_malformed_entry_is_refused_naming_it_and_the_form(spec):
    with pytest.raises(SystemExit) as err:
        recipe_spec(spec)
    assert repr(spec) in str(err.value) and "cpu@train.optim.epochs=11" in str(err.value)
