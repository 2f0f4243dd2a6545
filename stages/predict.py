"""Classify your own image files with the trained model (not a DVC stage).

    python -m stages.predict photo.jpg drawing.png [--top 3]

Any size and mode Pillow reads; each image is converted to RGB and resized to the
size the model was trained at, with prepare's filter (both from model.json; 32x32
for CIFAR, so expect low-resolution judgement), normalized as the model's training
data was, and its top classes are printed with probabilities.
The model's files default to the paths in dvc.yaml.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from .common import StageError, choose_device, default_path, require_file, run_stage
from .models import load_model, predict_logits


def load_image(path: Path, size: int = 32, resample: str = "bicubic") -> torch.Tensor:
    """(3, size, size) float pixels in 0..1 from any image file Pillow reads."""
    try:
        with Image.open(path) as img:
            small = img.convert("RGB").resize((size, size), getattr(Image.Resampling, resample.upper()))
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as err:
        raise StageError(f"{path}: cannot read as an image ({type(err).__name__}: {err}); "
                         "give a PNG, JPEG or other file Pillow opens") from None
    return torch.frombuffer(bytearray(small.tobytes()), dtype=torch.uint8).view(size, size, 3).permute(2, 0, 1) / 255


def top_classes(logits: torch.Tensor, classes: list[str], k: int) -> list[list[tuple[str, float]]]:
    """For each row of logits, the k most probable (class, probability) pairs."""
    probs = logits.softmax(1)
    values, indices = probs.topk(min(k, len(classes)), dim=1)
    return [[(classes[i], v) for i, v in zip(row_i.tolist(), row_v.tolist())] for row_i, row_v in zip(indices, values)]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("images", type=Path, nargs="+")
    ap.add_argument("--model", type=Path, default=default_path("model"), help="state_dict .pth")
    ap.add_argument("--model-meta", type=Path, default=default_path("model_meta"), help="its model.json")
    ap.add_argument("--top", type=int, default=3, help="how many classes to print per image")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    if args.model is None or args.model_meta is None:
        raise StageError("no dvc.yaml here to take the model's paths from; pass --model and --model-meta")

    with open(require_file(args.model_meta, "model metadata"), encoding="utf-8") as f:
        meta = json.load(f)
    pixels = []
    errors = []
    for path in args.images:
        try:
            pixels.append(load_image(path, meta.get("image_size", 32), meta.get("resample", "bicubic")))
        except StageError as err:
            errors.append(str(err))
    if errors:
        raise StageError("\n".join(errors))
    device = choose_device(args.device)
    model = load_model(args.model, meta, device)
    mean, std = (torch.tensor(meta[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    images = ((torch.stack(pixels) - mean) / std).to(device)  # (N, 3, S, S) as in training
    logits = predict_logits(model, images, batch_size=256).cpu()
    for path, best in zip(args.images, top_classes(logits, meta["classes"], args.top)):
        print(f"{path}: " + ", ".join(f"{name} {p:.1%}" for name, p in best))


if __name__ == "__main__":
    run_stage("predict", main)
