"""benchmarks/recipe_time.py: its --recipes entries, with and without overrides of their own."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from benchmarks.recipe_time import recipe_epochs, recipe_params, recipe_spec

PARAMS = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())


def test_a_plain_name_is_the_recipe_alone():
    assert recipe_spec("cpu") == {"train.recipe": "cpu"}


def test_overrides_after_at_signs_are_read_as_yaml():
    spec = "cpu@train.model.activation=gelu@train.optim.epochs=11@train.model.widths=[64, 96, 96]"
    assert recipe_spec(spec) == {"train.recipe": "cpu", "train.model.activation": "gelu",
                                 "train.optim.epochs": 11, "train.model.widths": [64, 96, 96]}


def test_an_entry_s_epochs_come_from_its_own_overrides():
    plain = recipe_epochs(PARAMS, "cpu")
    assert recipe_epochs(PARAMS, f"cpu@train.optim.epochs={plain + 2}") == plain + 2
    assert recipe_epochs(PARAMS, "resnet-cpu") == PARAMS["recipes"]["resnet-cpu"]["optim"]["epochs"]


def test_the_timed_run_takes_the_entry_then_the_extra_values_without_touching_the_base():
    params = recipe_params(PARAMS, "cpu@train.model.activation=gelu@train.optim.epochs=11", {"train.optim.epochs": 1})
    assert params["train"]["recipe"] == "cpu"
    assert params["train"]["model"]["activation"] == "gelu" and params["train"]["optim"]["epochs"] == 1
    assert PARAMS["train"]["model"].get("activation") is None  # the base is copied, not changed


@pytest.mark.parametrize("spec", ["@train.optim.epochs=11", "cpu@epochs"])
def test_a_malformed_entry_is_refused_naming_it_and_the_form(spec):
    with pytest.raises(SystemExit) as err:
        recipe_spec(spec)
    assert repr(spec) in str(err.value) and "cpu@train.optim.epochs=11" in str(err.value)
