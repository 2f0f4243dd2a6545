"""The evaluate stage: metric values on crafted logits, output files, clear errors."""
from __future__ import annotations

import json
import re
import shutil

import pandas as pd
import pytest
import torch

from stages import evaluate, train
from stages.common import StageError
from stages.stats import wilson_interval
from tests.cifar_archive import CLASSES as CIFAR10_CLASSES
from tests.conftest import write_params

CLASSES = ["a", "b", "c"]


def test_metrics_on_crafted_logits():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    predicted = torch.tensor([0, 1, 1, 1, 0, 0])
    logits = torch.nn.functional.one_hot(predicted, 3).float() * 5
    m = evaluate.test_metrics(logits, labels, CLASSES)
    assert m["accuracy"] == pytest.approx(3 / 6)
    assert m["per_class_accuracy"] == {"a": 0.5, "b": 1.0, "c": 0.0}
    assert m["test_images"] == 6
    assert m["loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item())


def test_wilson_intervals_beside_each_accuracy_as_flat_keys():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    predicted = torch.tensor([0, 1, 1, 1, 0, 0])
    m = evaluate.test_metrics(torch.nn.functional.one_hot(predicted, 3).float(), labels, CLASSES)
    assert (m["accuracy_low"], m["accuracy_high"]) == pytest.approx(wilson_interval(3, 6))
    assert m["accuracy_low"] < m["accuracy"] < m["accuracy_high"]
    assert m["per_class_accuracy_low"] == pytest.approx({"a": wilson_interval(1, 2)[0], "b": wilson_interval(2, 2)[0],
                                                         "c": 0.0})
    assert m["per_class_accuracy_high"] == pytest.approx({"a": wilson_interval(1, 2)[1], "b": 1.0,
                                                          "c": wilson_interval(0, 2)[1]})
    # a class without test images: no information, the whole range
    m = evaluate.test_metrics(torch.nn.functional.one_hot(torch.tensor([0, 0]), 3).float(), torch.tensor([0, 0]),
                              CLASSES)
    assert (m["per_class_accuracy_low"]["c"], m["per_class_accuracy_high"]["c"]) == (0.0, 1.0)
    assert all(isinstance(v, float) for k in ("per_class_accuracy_low", "per_class_accuracy_high")
               for v in m[k].values())


def test_class_without_test_images_scores_zero_not_nan():
    acc = evaluate.per_class_accuracy(torch.tensor([0, 0]), torch.tensor([0, 0]), CLASSES)
    assert acc == {"a": 1.0, "b": 0.0, "c": 0.0}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, prepared):
    root = tmp_path_factory.mktemp("trained")
    params = write_params(root / "params.yaml", **{"train.optim.epochs": 2, "train.optim.lr": 0.01,
                                                   "train.optim.momentum": 0.9, "train.numerics.device": "cpu",
                                                   "evaluate.device": "cpu"})
    train.main(["--params", str(params), "--prepared", str(prepared), "--model", str(root / "model.pth"),
                "--model-meta", str(root / "model.json"), "--metrics", str(root / "train.json"),
                "--history", str(root / "train_log.csv")])
    return root


def run_evaluate(trained, prepared, out, model=None):
    evaluate.main(["--params", str(trained / "params.yaml"), "--prepared", str(prepared),
                   "--model", str(model or trained / "model.pth"), "--model-meta", str(trained / "model.json"),
                   "--metrics", str(out / "metrics.json"), "--confusion", str(out / "confusion.csv"),
                   "--per-class", str(out / "per_class.csv"), "--grid", str(out / "predictions.png")])


def test_writes_metrics_and_confusion_rows(tmp_path, trained, prepared):
    run_evaluate(trained, prepared, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    test = torch.load(prepared / "test.pt", weights_only=True)
    assert metrics["test_images"] == len(test["labels"]) == 50
    assert set(metrics["per_class_accuracy"]) == set(test["classes"])
    assert metrics["accuracy"] > 0.5  # the synthetic pattern is learnable; chance is 0.1
    confusion = pd.read_csv(tmp_path / "confusion.csv")
    assert list(confusion.columns) == ["actual", "predicted"]
    assert len(confusion) == 50
    assert confusion["actual"].tolist() == [test["classes"][i] for i in test["labels"]]
    assert (confusion["actual"] == confusion["predicted"]).mean() == pytest.approx(metrics["accuracy"])
    per_class = (confusion["actual"] == confusion["predicted"]).groupby(confusion["actual"]).mean()
    assert per_class.to_dict() == pytest.approx(metrics["per_class_accuracy"])
    right = confusion["actual"] == confusion["predicted"]
    assert (metrics["accuracy_low"], metrics["accuracy_high"]) == pytest.approx(wilson_interval(right.sum(), 50))
    assert set(metrics["per_class_accuracy_low"]) == set(metrics["per_class_accuracy_high"]) == set(test["classes"])
    # evaluate.tta none: one view; the MLP's multiply-adds, 2 FLOPs each, once per test image
    assert metrics["tta_views"] == 1
    assert metrics["eval_flops"] == 50 * 2 * (3072 * 1024 + 1024 * 512 + 512 * 10)
    # from prepare: the tiny archive is no official CIFAR-10, all of its 7 batch files differ
    assert metrics["data_official"] is False and metrics["data_files_differing"] == 7


def test_model_json_from_before_the_groups_still_evaluates(tmp_path, trained, prepared):
    run_evaluate(trained, prepared, tmp_path / "new")
    old = tmp_path / "old"
    shutil.copytree(trained, old)
    meta = json.loads((old / "model.json").read_text())
    # as the flat-params train stage wrote it: the model's name and width, flat train values
    meta["train_params"] = {"recipe": "tutorial", "model": "mlp", "width": 64, "lr": 0.01, "flip": False}
    (old / "model.json").write_text(json.dumps(meta))
    run_evaluate(old, prepared, old, model=old / "model.pth")
    expected, got = (json.loads((d / "metrics.json").read_text()) for d in (tmp_path / "new", old))
    assert got == expected


def test_weights_of_another_shape_are_a_clear_error(tmp_path, trained, prepared):
    wrong = tmp_path / "wrong.pth"
    torch.save({"linear_relu_stack.0.weight": torch.zeros(2, 2)}, wrong)
    with pytest.raises(StageError, match=r"wrong\.pth: does not load into model 'mlp'"):
        run_evaluate(trained, prepared, tmp_path, model=wrong)
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.parametrize("missing", ["model.json", "model.pth"])
def test_missing_inputs_name_the_file(tmp_path, trained, prepared, missing):
    copy = tmp_path / "trained"
    shutil.copytree(trained, copy)
    (copy / missing).unlink()
    with pytest.raises(StageError, match=re.escape(missing) + r": model \w+ not found"):
        run_evaluate(copy, prepared, tmp_path, model=copy / "model.pth")
    assert not (tmp_path / "metrics.json").exists()


def test_class_report_on_known_counts():
    actual = torch.tensor([0, 0, 0, 1, 1, 2])
    predicted = torch.tensor([0, 0, 1, 1, 2, 2])
    r = evaluate.class_report(predicted, actual, CLASSES)
    assert r["recall"] == pytest.approx({"a": 2 / 3, "b": 1 / 2, "c": 1.0})
    assert r["precision"] == pytest.approx({"a": 1.0, "b": 1 / 2, "c": 1 / 2})
    assert r["f1"] == pytest.approx({"a": 0.8, "b": 0.5, "c": 2 / 3})


def test_class_never_predicted_has_zero_precision_not_nan():
    r = evaluate.class_report(torch.tensor([0, 0]), torch.tensor([0, 1]), CLASSES)
    assert r["precision"]["b"] == 0.0 and r["f1"]["b"] == 0.0 and r["f1"]["c"] == 0.0


def test_per_class_csv_and_prediction_grid(tmp_path, trained, prepared):
    run_evaluate(trained, prepared, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    table = pd.read_csv(tmp_path / "per_class.csv")
    assert list(table.columns) == ["class", "accuracy", "precision", "recall", "f1"]
    assert dict(zip(table["class"], table["f1"])) == pytest.approx(metrics["per_class_f1"])
    assert metrics["macro_f1"] == pytest.approx(table["f1"].mean())
    from PIL import Image

    with Image.open(tmp_path / "predictions.png") as grid:
        assert grid.format == "PNG" and grid.size == (8 * 104, 7 * 126)  # 5 test images per class, 8 per row


def test_grid_takes_the_first_images_of_each_class_in_class_order():
    labels = torch.tensor([2, 0, 0, 1, 2, 0, 1, 2])
    assert evaluate.grid_indices(labels, 3, 2) == [1, 2, 3, 6, 0, 4]


def test_grid_frames_wrong_predictions_in_red():
    images = torch.zeros(2, 3, 32, 32)
    grid = evaluate.prediction_grid(images, ["cat", "dog"], ["cat", "cat"], columns=2).convert("RGB")
    # The frame sits just outside each picture: red for the wrong one, white for the right one.
    assert grid.getpixel((104 + 2, 50)) == (220, 0, 0)
    assert grid.getpixel((2, 50)) == (255, 255, 255)


def test_tta_averages_the_logits_of_the_views():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 3))
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        plain, mirrored = model(x), model(x.flip(3))
        # One pixel left and right, edges filled by reflection, of the image and of its mirror.
        shifted = [model(torch.cat([v[..., 1:], v[..., -2:-1]], dim=3)) for v in (x, x.flip(3))]
        shifted += [model(torch.cat([v[..., 1:2], v[..., :-1]], dim=3)) for v in (x, x.flip(3))]
    torch.testing.assert_close(evaluate.tta_logits(model, x, 2, "none"), plain)
    torch.testing.assert_close(evaluate.tta_logits(model, x, 2, "flip"), (plain + mirrored) / 2)
    torch.testing.assert_close(evaluate.tta_logits(model, x, 2, "flip-shift"),
                               (plain + mirrored + sum(shifted)) / 6)
    # airbench: the pair unshifted (1/4 each), and one pixel up-left and down-right with reflected edges
    # (1/8 each for the view and its mirror). Row/column i of a shifted view is i -+ 1 of the image.
    up_left, down_right = torch.tensor([1, *range(31)]), torch.tensor([*range(1, 32), 30])
    with torch.no_grad():
        corners = [x[..., idx, :][..., idx] for idx in (up_left, down_right)]
        corner_logits = [model(v) + model(v.flip(3)) for v in corners]
    torch.testing.assert_close(evaluate.tta_logits(model, x, 2, "airbench"),
                               (plain + mirrored) / 4 + sum(corner_logits) / 8)


@pytest.mark.parametrize("tta, views", [("none", 1), ("flip", 2), ("flip-shift", 6), ("airbench", 6)])
def test_tta_view_weights_sum_to_one(tta, views):
    got = evaluate.tta_views(torch.zeros(1, 3, 32, 32), tta)
    assert len(got) == views and sum(w for w, _ in got) == pytest.approx(1.0)
    assert all(v.shape == (1, 3, 32, 32) for _, v in got)


def test_unknown_tta_is_named():
    with pytest.raises(ValueError, match=r"Invalid tta 'mirror'\. Only none, flip, flip-shift, airbench are supported"):
        evaluate.tta_views(torch.zeros(1, 3, 32, 32), "mirror")


def test_metric_keys_are_readable_unique_and_survive_dvcs_flattening():
    from dvc.utils.flatten import flatten, unflatten

    classes = ["St. Bernard", "St Bernard", "crème brûlée", "猫", "a.b", "a_b", "cat", "...", "air-plane"]
    keys = evaluate.metric_keys(classes)
    assert keys == ["St_Bernard", "St_Bernard_2", "crème_brûlée", "猫", "a_b", "a_b_2", "cat", "class", "air-plane"]
    metrics = {"per_class_accuracy": dict(zip(keys, range(len(keys))))}
    flat = flatten(metrics)  # what `dvc metrics diff` compares and shows
    assert len(flat) == len(classes) and all(k.count(".") == 1 for k in flat)
    assert unflatten(flat) == metrics  # one class per key, back and forth
    assert evaluate.metric_keys(list(CIFAR10_CLASSES)) == list(CIFAR10_CLASSES)  # today's keys unchanged


def test_the_grid_shows_fewer_images_of_each_class_when_there_are_many():
    assert [evaluate.grid_per_class(k) for k in (2, 10, 20, 25, 26, 100, 1000)] == [8, 8, 8, 8, 7, 2, 1]
    images = torch.rand(3, 3, 64, 64)
    grid = evaluate.prediction_grid(images, ["crème brûlée", "猫", "a very long class name indeed"],
                                    ["猫", "猫", "x"], columns=2)
    assert grid.size == (2 * (evaluate.GRID_CELL + 8), 2 * (evaluate.GRID_CELL + 30))
