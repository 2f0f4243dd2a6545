"""Stage 4: score the trained model on the test split.

Writes `--metrics` (accuracy, loss, macro F1, and per-class accuracy, precision,
recall and F1 keyed by class name, so `dvc metrics diff` shows each class; beside
each accuracy its Wilson 95% interval as `accuracy_low`/`accuracy_high` and
`per_class_accuracy_low`/`_high`, flat numbers that `dvc metrics diff` compares),
`--confusion` (one row per test image, actual and predicted class name, as DVC's
confusion plot template reads), `--per-class` (a row per class for the bar
chart) and `--grid` (a PNG with the first test images of each class, a row per
class, true and predicted labels under each, wrong ones framed in red).
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from .common import (StageError, atomic_path, check_normalization, choose_device, require_file, run_stage,
                     write_json)
from .flops import inference_flops
from .models import load_model, predict_logits
from .prepared import load_split
from .params import load_params
from .stats import wilson_interval

log = logging.getLogger("stages")
GRID_PER_CLASS = 8  # the grid shows the first 8 test images of each class: the same ones in every run


def tta_views(images: torch.Tensor, tta: str) -> list[tuple[float, torch.Tensor]]:
    """(weight, view) pairs whose weighted logits are averaged, for an evaluate.tta mode.

    flip: the images and their mirror images. flip-shift: those, and both shifted one pixel left
    and right (reflect padding), all weighted equally. airbench (airbench94's level 2): the mirror
    pair unshifted, weight 0.5 in all, and shifted one pixel up-left and one down-right, 0.25 each.
    """
    if tta == "none":
        return [(1.0, images)]
    pairs = [images, images.flip(3)]
    if tta == "flip":
        return [(0.5, v) for v in pairs]
    if tta == "flip-shift":
        padded = [F.pad(v, (1, 1, 0, 0), mode="reflect") for v in pairs]
        views = pairs + [p[..., :-2] for p in padded] + [p[..., 2:] for p in padded]
        return [(1 / len(views), v) for v in views]
    if tta == "airbench":
        padded = F.pad(images, (1,) * 4, mode="reflect")  # (N, C, 34, 34)
        shifted = [padded[..., :-2, :-2], padded[..., 2:, 2:]]
        return [(0.25, v) for v in pairs] + [(0.125, v) for s in shifted for v in (s, s.flip(3))]
    raise ValueError(f"Invalid tta {tta!r}. Only none, flip, flip-shift, airbench are supported.")


def tta_logits(model: torch.nn.Module, images: torch.Tensor, batch_size: int, tta: str) -> torch.Tensor:
    """Weighted mean of the logits over the test-time views of `tta` (tta_views)."""
    views = tta_views(images, tta)
    return sum(w * predict_logits(model, v, batch_size, desc=f"evaluate view {i + 1}/{len(views)}")
               for i, (w, v) in enumerate(views))


def per_class_accuracy(predicted: torch.Tensor, actual: torch.Tensor, classes: list[str]) -> dict[str, float]:
    """Accuracy on the images of each class, keyed by class name (NaN-free: 0 images -> 0.0)."""
    return class_report(predicted, actual, classes)["recall"]


def class_report(predicted: torch.Tensor, actual: torch.Tensor, classes: list[str]) -> dict[str, dict[str, float]]:
    """Per-class precision, recall (= per-class accuracy) and F1, each keyed by class name; 0.0 where undefined."""
    k = len(classes)
    counts = torch.bincount(actual * k + predicted, minlength=k * k).view(k, k).double()  # [actual, predicted]
    hits = counts.diag()
    safe = lambda num, den: torch.where(den > 0, num / den.clamp(min=1e-12), torch.zeros_like(num))  # noqa: E731
    precision, recall = safe(hits, counts.sum(0)), safe(hits, counts.sum(1))
    f1 = safe(2 * precision * recall, precision + recall)
    return {name: dict(zip(classes, values.tolist())) for name, values in
            (("precision", precision), ("recall", recall), ("f1", f1))}


def accuracy_intervals(predicted: torch.Tensor, actual: torch.Tensor, classes: list[str]) -> dict:
    """Wilson 95% bounds of the overall and each per-class accuracy, as flat keys beside the accuracies:
    how far the test set's size alone lets an accuracy move (1,000 images at 90%: about +-1.9 points)."""
    right = predicted == actual
    hits = torch.bincount(actual[right], minlength=len(classes)).tolist()
    totals = torch.bincount(actual, minlength=len(classes)).tolist()
    overall = wilson_interval(int(right.sum()), len(actual))
    per_class = [wilson_interval(h, n) for h, n in zip(hits, totals)]
    return {"accuracy_low": overall[0], "accuracy_high": overall[1],
            "per_class_accuracy_low": {c: low for c, (low, _) in zip(classes, per_class)},
            "per_class_accuracy_high": {c: high for c, (_, high) in zip(classes, per_class)}}


def test_metrics(logits: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> dict:
    predicted = logits.argmax(1)
    report = class_report(predicted, labels, classes)
    intervals = accuracy_intervals(predicted, labels, classes)
    return {
        "accuracy": (predicted == labels).float().mean().item(),
        "accuracy_low": intervals["accuracy_low"],
        "accuracy_high": intervals["accuracy_high"],
        "loss": F.cross_entropy(logits, labels).item(),
        "test_images": len(labels),
        "macro_f1": sum(report["f1"].values()) / len(classes),
        "per_class_accuracy": report["recall"],
        "per_class_accuracy_low": intervals["per_class_accuracy_low"],
        "per_class_accuracy_high": intervals["per_class_accuracy_high"],
        "per_class_precision": report["precision"],
        "per_class_recall": report["recall"],
        "per_class_f1": report["f1"],
    }


def per_class_table(metrics: dict, classes: list[str]) -> pd.DataFrame:
    """One row per class, for the bar chart: class, accuracy, precision, recall, f1."""
    return pd.DataFrame({"class": classes,
                         **{column: [metrics[f"per_class_{column}"][c] for c in classes]
                            for column in ("accuracy", "precision", "recall", "f1")}})


def grid_indices(labels: torch.Tensor, num_classes: int, per_class: int) -> list[int]:
    """The first `per_class` test images of each class, class by class: one row per class in the grid."""
    return [i for c in range(num_classes) for i in torch.nonzero(labels == c).flatten()[:per_class].tolist()]


def prediction_grid(images: torch.Tensor, actual: list[str], predicted: list[str], columns: int = 8,
                    scale: int = 3) -> Image.Image:
    """A picture of images (N, 3, 32, 32) in 0..1 with "true / predicted" under each; wrong ones framed red."""
    cell_w, cell_h, caption = 32 * scale + 8, 32 * scale + 30, 32 * scale + 4
    rows = -(-len(images) // columns)
    grid = Image.new("RGB", (columns * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default()
    pixels = (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()  # (N, 32, 32, 3) uint8
    for i, (img, truth, guess) in enumerate(zip(pixels, actual, predicted)):
        x, y = (i % columns) * cell_w + 4, (i // columns) * cell_h + 4
        wrong = truth != guess
        if wrong:
            draw.rectangle([x - 3, y - 3, x + 32 * scale + 2, y + 32 * scale + 2], outline=(220, 0, 0), width=3)
        grid.paste(Image.fromarray(img).resize((32 * scale, 32 * scale), Image.NEAREST), (x, y))
        draw.text((x, y + caption), truth, fill=(0, 0, 0), font=font)
        draw.text((x, y + caption + 11), guess, fill=(220, 0, 0) if wrong else (0, 128, 0), font=font)
    return grid


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--prepared", type=Path, required=True, help="folder with test.pt")
    ap.add_argument("--model", type=Path, required=True, help="state_dict .pth from the train stage")
    ap.add_argument("--model-meta", type=Path, required=True, help="JSON written beside the .pth")
    ap.add_argument("--metrics", type=Path, required=True, help="output: metrics JSON")
    ap.add_argument("--confusion", type=Path, required=True, help="output: CSV of actual,predicted")
    ap.add_argument("--per-class", type=Path, required=True, help="output: CSV of per-class figures")
    ap.add_argument("--grid", type=Path, required=True, help="output: PNG of test images with predictions")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    p = params.evaluate

    device = choose_device(p.device)
    with open(require_file(args.model_meta, "model metadata"), encoding="utf-8") as f:
        meta = json.load(f)
    test = load_split(args.prepared / "test.pt", device)
    check_normalization(test, params.prepare, args.prepared / "test.pt")
    if test["classes"] != meta["classes"]:
        raise StageError(f"{args.model_meta}: model classes {meta['classes']} differ from "
                         f"{args.prepared / 'test.pt'} classes {test['classes']}")
    model = load_model(args.model, meta, device)
    images = test["images"]
    logits = tta_logits(model, images, p.batch_size, p.tta).cpu()
    labels = test["labels"].cpu()
    views = len(tta_views(images[:1], p.tta))
    metrics = {**test_metrics(logits, labels, test["classes"]), "tta_views": views,
               "eval_flops": inference_flops(model, images[:2], views * len(images))}
    log.info("test accuracy %.2f%% (95%% interval %.2f-%.2f) loss %.4f on %d images (tta: %s)",
             100 * metrics["accuracy"], 100 * metrics["accuracy_low"], 100 * metrics["accuracy_high"],
             metrics["loss"], metrics["test_images"], p.tta)
    for name, acc in metrics["per_class_accuracy"].items():
        log.info("  %-12s %.1f%% (%.1f-%.1f)", name, 100 * acc, 100 * metrics["per_class_accuracy_low"][name],
                 100 * metrics["per_class_accuracy_high"][name])

    classes = pd.Series(test["classes"])
    actual, predicted = classes[labels.numpy()].tolist(), classes[logits.argmax(1).numpy()].tolist()
    with atomic_path(args.confusion) as tmp:
        pd.DataFrame({"actual": actual, "predicted": predicted}).to_csv(tmp, index=False)
    with atomic_path(args.per_class) as tmp:
        per_class_table(metrics, test["classes"]).to_csv(tmp, index=False)
    picks = grid_indices(labels, len(test["classes"]), GRID_PER_CLASS)
    std, mean = (torch.tensor(meta[k]).view(3, 1, 1) for k in ("std", "mean"))
    shown = images[picks].cpu() * std + mean  # back to 0..1 pixels
    with atomic_path(args.grid) as tmp:
        prediction_grid(shown, [actual[i] for i in picks], [predicted[i] for i in picks],
                        columns=GRID_PER_CLASS).save(tmp, format="PNG")
    write_json(args.metrics, metrics)
    log.info("wrote %s, %s, %s, %s", args.metrics, args.confusion, args.per_class, args.grid)


if __name__ == "__main__":
    run_stage("evaluate", main)
