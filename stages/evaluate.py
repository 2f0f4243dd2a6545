"""Stage 4: score the trained model on the test split.

Writes `--metrics` (accuracy, loss, per-class accuracy keyed by class name, so
`dvc metrics diff` shows each class) and `--confusion` (one row per test image,
actual and predicted class name, as DVC's confusion plot template reads).
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from .common import StageError, atomic_path, choose_device, require_file, run_stage, write_json
from .models import build_model, predict_logits
from .params import load_params

log = logging.getLogger("stages")


def load_model(weights: Path, meta: dict, device: torch.device) -> torch.nn.Module:
    model = build_model(meta["model"], num_classes=meta["num_classes"], width=meta["width"])
    try:
        model.load_state_dict(torch.load(require_file(weights, "model weights"), map_location="cpu",
                                         weights_only=True))
    except RuntimeError as err:
        raise StageError(f"{weights}: does not load into model {meta['model']!r}: {err}") from None
    return model.to(device)


def tta_logits(model: torch.nn.Module, images: torch.Tensor, batch_size: int, tta: str) -> torch.Tensor:
    """Mean logits over test-time views: the images, their mirror images ("flip"), and with
    "flip-shift" both of those shifted one pixel left and right (reflect padding)."""
    views = [images]
    if tta in ("flip", "flip-shift"):
        views.append(images.flip(3))
    if tta == "flip-shift":
        padded = [F.pad(v, (1, 1, 0, 0), mode="reflect") for v in views[:2]]
        views += [p[..., :-2] for p in padded] + [p[..., 2:] for p in padded]
    return torch.stack([predict_logits(model, v, batch_size) for v in views]).mean(0)


def per_class_accuracy(predicted: torch.Tensor, actual: torch.Tensor, classes: list[str]) -> dict[str, float]:
    """Accuracy on the images of each class, keyed by class name (NaN-free: 0 images -> 0.0)."""
    result = {}
    for index, name in enumerate(classes):
        mask = actual == index
        result[name] = (predicted[mask] == index).float().mean().item() if mask.any() else 0.0
    return result


def test_metrics(logits: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> dict:
    predicted = logits.argmax(1)
    return {
        "accuracy": (predicted == labels).float().mean().item(),
        "loss": F.cross_entropy(logits, labels).item(),
        "test_images": len(labels),
        "per_class_accuracy": per_class_accuracy(predicted, labels, classes),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--prepared", type=Path, required=True, help="folder with test.pt")
    ap.add_argument("--model", type=Path, required=True, help="state_dict .pth from the train stage")
    ap.add_argument("--model-meta", type=Path, required=True, help="JSON written beside the .pth")
    ap.add_argument("--metrics", type=Path, required=True, help="output: metrics JSON")
    ap.add_argument("--confusion", type=Path, required=True, help="output: CSV of actual,predicted")
    args = ap.parse_args(argv)
    p = load_params(args.params).evaluate

    device = choose_device(p.device)
    with open(require_file(args.model_meta, "model metadata"), encoding="utf-8") as f:
        meta = json.load(f)
    test = torch.load(require_file(args.prepared / "test.pt", "prepared split"), weights_only=True)
    if test["classes"] != meta["classes"]:
        raise StageError(f"{args.model_meta}: model classes {meta['classes']} differ from "
                         f"{args.prepared / 'test.pt'} classes {test['classes']}")
    model = load_model(args.model, meta, device)
    logits = tta_logits(model, test["images"].to(device), p.batch_size, p.tta).cpu()
    metrics = test_metrics(logits, test["labels"], test["classes"])
    log.info("test accuracy %.2f%% loss %.4f on %d images (tta: %s)", 100 * metrics["accuracy"], metrics["loss"],
             metrics["test_images"], p.tta)
    for name, acc in metrics["per_class_accuracy"].items():
        log.info("  %-12s %.1f%%", name, 100 * acc)

    classes = pd.Series(test["classes"])
    confusion = pd.DataFrame({"actual": classes[test["labels"].numpy()].to_numpy(),
                              "predicted": classes[logits.argmax(1).numpy()].to_numpy()})
    with atomic_path(args.confusion) as tmp:
        confusion.to_csv(tmp, index=False)
    write_json(args.metrics, metrics)
    log.info("wrote %s, %s", args.metrics, args.confusion)


if __name__ == "__main__":
    run_stage("evaluate", main)
