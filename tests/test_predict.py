"""Inference on the user's own image files."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from stages import predict, train
from stages.common import StageError
from stages.evaluate import tta_logits
from stages.models import build_model, model_spec
from stages.prepared import load_split
from tests.conftest import write_params


@pytest.fixture(scope="module")
def model_files(tmp_path_factory, prepared):
    root = tmp_path_factory.mktemp("model")
    params = write_params(root / "params.yaml", **{"train.optim.epochs": 2, "train.optim.lr": 0.01,
                                                   "train.optim.momentum": 0.9, "train.numerics.device": "cpu"})
    train.main(["--params", str(params), "--prepared", str(prepared), "--model", str(root / "model.pth"),
                "--model-meta", str(root / "model.json"), "--metrics", str(root / "train.json"),
                "--history", str(root / "log.csv")])
    return root


def run_predict(model_files, *images, capsys, top=3):
    predict.main([*map(str, images), "--model", str(model_files / "model.pth"),
                  "--model-meta", str(model_files / "model.json"), "--top", str(top), "--device", "cpu"])
    return capsys.readouterr().out.splitlines()


def test_png_of_a_test_image_gets_the_models_prediction(tmp_path, model_files, prepared, capsys):
    test = torch.load(prepared / "test.pt", weights_only=True)
    meta = json.loads((model_files / "model.json").read_text())
    paths = []
    for i, img in enumerate(test["images"][:4].permute(0, 2, 3, 1).numpy()):  # uint8 pixels
        # A bigger picture of the same image: predict must resize it back to 32x32.
        Image.fromarray(img).resize((96, 96), Image.NEAREST).save(tmp_path / f"img{i}.png")
        paths.append(tmp_path / f"img{i}.png")
    lines = run_predict(model_files, *paths, capsys=capsys)
    model = build_model(model_spec(meta), 10)
    assert type(model).__name__ == "MLP"
    model.load_state_dict(torch.load(model_files / "model.pth", weights_only=True))
    normalized = load_split(prepared / "test.pt", torch.device("cpu"))["images"][:4]
    expected = tta_logits(model, normalized, 4, "none").argmax(1)
    assert len(lines) == 4
    for line, path, index in zip(lines, paths, expected):
        name, rest = line.split(": ", 1)
        assert name == str(path)
        assert rest.split(" ")[0] == meta["classes"][index]
        probabilities = [float(part.rstrip("%,")) for part in rest.split(" ")[1::2]]
        assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)


def test_any_mode_and_size_is_read(tmp_path, model_files, capsys):
    Image.fromarray(np.full((300, 200), 128, np.uint8), mode="L").save(tmp_path / "gray.jpg")
    (line,) = run_predict(model_files, tmp_path / "gray.jpg", capsys=capsys, top=1)
    assert line.startswith(f"{tmp_path / 'gray.jpg'}: ") and line.endswith("%")


def test_unreadable_files_are_all_named(tmp_path, model_files, capsys):
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(StageError) as err:
        run_predict(model_files, tmp_path / "notes.png", tmp_path / "missing.jpg", capsys=capsys)
    message = str(err.value)
    assert "notes.png: cannot read as an image (UnidentifiedImageError" in message
    assert "missing.jpg: cannot read as an image (FileNotFoundError" in message


def test_top_classes_sorted_and_capped():
    logits = torch.tensor([[0.0, 2.0, 1.0]])
    (best,) = predict.top_classes(logits, ["a", "b", "c"], 5)
    assert [name for name, _ in best] == ["b", "c", "a"]
    assert sum(p for _, p in best) == pytest.approx(1.0)
