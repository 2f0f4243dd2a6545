"""Stage 4: score the trained model on the test split.

Writes `--metrics` (accuracy, loss, macro F1, and per-class accuracy, precision,
recall and F1 keyed by class name (metric_keys: a dot or space becomes '_', so that
`dvc metrics diff`'s dotted flattening keeps one key per class) so it shows each class; beside
each accuracy its Wilson 95% interval as `accuracy_low`/`accuracy_high` and
`per_class_accuracy_low`/`_high`, flat numbers that `dvc metrics diff` compares;
`data_official` and `data_files_differing`, from prepare: whether the test figures
were measured on the official CIFAR-10 batch files),
`--confusion` (one row per test image, actual and predicted class name, as DVC's
confusion plot template reads), `--per-class` (a row per class for the bar
chart) and `--grid` (a PNG with the first 8 test images of each class, a row per
class, fewer each for many classes (CIFAR-100: 2), true and predicted labels under
each, wrong ones framed in red).
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import unicodedata
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from .common import (StageError, atomic_path, check_normalization, choose_device, out_of_memory_hint, require_file,
                     run_stage, signals_deferred, write_json)
from .flops import inference_flops
from .models import load_model, predict_logits
from .prepared import load_split
from .params import load_params
from .stats import wilson_interval

log = logging.getLogger("stages")
GRID_PER_CLASS = 8  # the grid shows the first 8 test images of each class: the same ones in every run...
GRID_MAX_IMAGES = 200  # ...and fewer of each where there are many classes: CIFAR-100's 100 get 2 each
GRID_CELL = 96  # pixels each image is shown at, whatever its size
CAPTION_CHARS = 16  # longer class names are cut to fit under an image


def metric_keys(classes: list[str]) -> list[str]:
    """Class names as metric keys that `dvc metrics diff` flattens unambiguously ("per_class_accuracy.<key>"):
    each run of characters other than letters and digits (of any script), '_' and '-' becomes one '_'
    ("St. Bernard" -> "St_Bernard", "crème brûlée" stays readable); a key already taken gets _2, _3, ..."""
    keys: list[str] = []
    for name in classes:
        base = re.sub(r"[^\w-]+", "_", unicodedata.normalize("NFC", name)).strip("_") or "class"
        key, n = base, 2
        while key in keys:
            key, n = f"{base}_{n}", n + 1
        keys.append(key)
    return keys


def grid_per_class(num_classes: int) -> int:
    """Images of each class in the prediction grid: 8, or fewer (at least 1) to stay near GRID_MAX_IMAGES."""
    return max(1, min(GRID_PER_CLASS, GRID_MAX_IMAGES // num_classes))


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


def per_class_table(metrics: dict, classes: list[str], keys: list[str] | None = None) -> pd.DataFrame:
    """One row per class, for the bar chart: class (its name), accuracy, precision, recall, f1 (by its metric key)."""
    keys = keys or classes
    return pd.DataFrame({"class": classes,
                         **{column: [metrics[f"per_class_{column}"][k] for k in keys]
                            for column in ("accuracy", "precision", "recall", "f1")}})


def grid_indices(labels: torch.Tensor, num_classes: int, per_class: int) -> list[int]:
    """The first `per_class` test images of each class, class by class: one row per class in the grid."""
    return [i for c in range(num_classes) for i in torch.nonzero(labels == c).flatten()[:per_class].tolist()]


def prediction_grid(images: torch.Tensor, actual: list[str], predicted: list[str], columns: int = 8,
                    cell: int = GRID_CELL) -> Image.Image:
    """A picture of images (N, 3, H, W) in 0..1, each shown at cell x cell pixels, with "true / predicted"
    under each; wrong ones framed red."""
    cell_w, cell_h, caption = cell + 8, cell + 30, cell + 4
    rows = -(-len(images) // columns)
    grid = Image.new("RGB", (columns * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default()
    pixels = (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()  # (N, H, W, 3) uint8
    for i, (img, truth, guess) in enumerate(zip(pixels, actual, predicted)):
        x, y = (i % columns) * cell_w + 4, (i // columns) * cell_h + 4
        wrong = truth != guess
        if wrong:
            draw.rectangle([x - 3, y - 3, x + cell + 2, y + cell + 2], outline=(220, 0, 0), width=3)
        small = img.shape[0] < cell  # small images are enlarged pixel by pixel, large ones filtered down
        grid.paste(Image.fromarray(img).resize((cell, cell), Image.NEAREST if small else Image.BILINEAR), (x, y))
        caption_text(draw, (x, y + caption), truth, (0, 0, 0), font)
        caption_text(draw, (x, y + caption + 11), guess, (220, 0, 0) if wrong else (0, 128, 0), font)
    return grid


def caption_text(draw: ImageDraw.ImageDraw, at: tuple[int, int], name: str, fill: tuple, font) -> None:
    """A class name under an image, cut to CAPTION_CHARS; letters the font lacks drawn as '?'."""
    text = name if len(name) <= CAPTION_CHARS else name[:CAPTION_CHARS - 1] + "~"
    try:
        draw.text(at, text, fill=fill, font=font)
    except UnicodeEncodeError:  # Pillow's bitmap fallback font is Latin-1 only
        draw.text(at, text.encode("latin-1", "replace").decode("latin-1"), fill=fill, font=font)


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
    if test["images"].shape[-1] != meta.get("image_size", 32):
        raise StageError(f"{args.model_meta}: the model takes {meta.get('image_size', 32)}-pixel images, but "
                         f"{args.prepared / 'test.pt'} holds {test['images'].shape[-1]}-pixel ones; "
                         "run train again (dvc repro)")
    model = load_model(args.model, meta, device)
    images = test["images"]
    with out_of_memory_hint(f"scoring {len(images)} test images on {device}", p.batch_size, "evaluate.batch_size"):
        logits = tta_logits(model, images, p.batch_size, p.tta).cpu()
    labels = test["labels"].cpu()
    views = len(tta_views(images[:1], p.tta))
    keys = metric_keys(test["classes"])
    metrics = {**test_metrics(logits, labels, keys), "tta_views": views,
               "eval_flops": inference_flops(model, images[:2], views * len(images))}
    if "data_official" in test:  # not in tensors prepared before prepare recorded it
        metrics |= {"data_official": test["data_official"], "data_files_differing": len(test["data_differing"])}
    log.info("test accuracy %.2f%% (95%% interval %.2f-%.2f) loss %.4f on %d images (tta: %s)",
             100 * metrics["accuracy"], 100 * metrics["accuracy_low"], 100 * metrics["accuracy_high"],
             metrics["loss"], metrics["test_images"], p.tta)
    for name, key in zip(test["classes"], keys):
        log.info("  %-12s %.1f%% (%.1f-%.1f)", name, 100 * metrics["per_class_accuracy"][key],
                 100 * metrics["per_class_accuracy_low"][key], 100 * metrics["per_class_accuracy_high"][key])

    classes = pd.Series(test["classes"])
    actual, predicted = classes[labels.numpy()].tolist(), classes[logits.argmax(1).numpy()].tolist()
    with signals_deferred():  # a stop signal waits until all four are written: the set stays consistent
        with atomic_path(args.confusion) as tmp:
            pd.DataFrame({"actual": actual, "predicted": predicted}).to_csv(tmp, index=False)
        with atomic_path(args.per_class) as tmp:
            per_class_table(metrics, test["classes"], keys).to_csv(tmp, index=False)
        per_class = grid_per_class(len(test["classes"]))
        picks = grid_indices(labels, len(test["classes"]), per_class)
        std, mean = (torch.tensor(meta[k]).view(3, 1, 1) for k in ("std", "mean"))
        shown = images[picks].cpu() * std + mean  # back to 0..1 pixels
        with atomic_path(args.grid) as tmp:
            prediction_grid(shown, [actual[i] for i in picks], [predicted[i] for i in picks],
                            columns=GRID_PER_CLASS).save(tmp, format="PNG")  # a class per row, or several
        write_json(args.metrics, metrics)
    log.info("wrote %s, %s, %s, %s", args.metrics, args.confusion, args.per_class, args.grid)


if __name__ == "__main__":
    run_stage("evaluate", main)
