"""The train stage: batching, learning, determinism, outputs that load into the tutorial's class."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from stages import train
from stages.common import StageError, choose_device
from stages.models import MLP
from stages.params import parse_params
from tests.conftest import params_dict, write_params


class TutorialNet(nn.Module):
    """The tutorial's own class, written independently of stages.models."""

    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear_relu_stack = nn.Sequential(
            nn.Linear(3072, 1024), nn.ReLU(), nn.Linear(1024, 512), nn.ReLU(), nn.Linear(512, 10))

    def forward(self, x):
        return self.linear_relu_stack(self.flatten(x))


def run_train(tmp_path, prepared, **dotted):
    tmp_path.mkdir(exist_ok=True)
    params = write_params(tmp_path / "params.yaml", **{"train.epochs": 2, "train.device": "cpu", **dotted})
    out = {name: tmp_path / name for name in ("model.pth", "model.json", "train.json")}
    train.main(["--params", str(params), "--prepared", str(prepared), "--model", str(out["model.pth"]),
                "--model-meta", str(out["model.json"]), "--metrics", str(out["train.json"])])
    return out


def test_every_image_is_used_once_per_epoch_including_the_last_partial_batch():
    seen = []
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    model.register_forward_hook(lambda m, args, out: seen.append(args[0][:, 0, 0, 0].clone()))
    images = torch.arange(10, dtype=torch.float32).view(10, 1, 1, 1).expand(10, 3, 32, 32).contiguous()
    labels = torch.arange(10) % 3
    train.train_epoch(model, torch.optim.SGD(model.parameters(), lr=0.0), images, labels, 4,
                      torch.Generator().manual_seed(0))
    assert [len(batch) for batch in seen] == [4, 4, 2]
    assert sorted(torch.cat(seen).tolist()) == list(range(10))


def test_shuffle_keeps_images_and_labels_aligned(monkeypatch):
    seen_x, seen_y = [], []
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    model.register_forward_hook(lambda m, args, out: seen_x.append(args[0][:, 0, 0, 0].clone()))
    cross_entropy = train.F.cross_entropy
    monkeypatch.setattr(train.F, "cross_entropy", lambda logits, y: seen_y.append(y.clone()) or cross_entropy(logits, y))
    images = torch.arange(12, dtype=torch.float32).view(12, 1, 1, 1).expand(12, 3, 32, 32).contiguous()
    labels = torch.arange(12) % 10  # label == image value mod 10
    train.train_epoch(model, torch.optim.SGD(model.parameters(), lr=0.0), images, labels, 5,
                      torch.Generator().manual_seed(3))
    x, y = torch.cat(seen_x), torch.cat(seen_y)
    assert (x.long() % 10 == y).all()
    assert x.tolist() != list(range(12))  # actually shuffled


def test_training_learns_the_synthetic_pattern_and_writes_outputs(tmp_path, prepared):
    out = run_train(tmp_path, prepared, **{"train.epochs": 3, "train.lr": 0.01, "train.momentum": 0.9})
    metrics = json.loads(out["train.json"].read_text())
    assert metrics["epochs"] == 3 and metrics["device"] == "cpu"
    assert metrics["val_accuracy"] > 0.5  # chance is 0.1
    assert metrics["train_seconds"] > 0 and metrics["images_per_second"] > 0
    meta = json.loads(out["model.json"].read_text())
    assert meta["model"] == "mlp" and meta["num_classes"] == 10
    assert meta["classes"][:2] == ["airplane", "automobile"] and meta["mean"] == [0.5] * 3
    assert meta["train_params"]["lr"] == 0.01
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_pth_is_a_plain_state_dict_that_loads_into_the_tutorial_class(tmp_path, prepared):
    out = run_train(tmp_path, prepared, **{"train.epochs": 1})
    state = torch.load(out["model.pth"], weights_only=True)
    net = TutorialNet()
    net.load_state_dict(state)  # strict: same keys and shapes
    assert set(state) == set(MLP().state_dict())


def test_same_seed_gives_identical_weights_and_another_seed_does_not(tmp_path, prepared):
    first = torch.load(run_train(tmp_path / "a", prepared)["model.pth"], weights_only=True)
    second = torch.load(run_train(tmp_path / "b", prepared)["model.pth"], weights_only=True)
    third = torch.load(run_train(tmp_path / "c", prepared, **{"train.seed": 1})["model.pth"], weights_only=True)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], third[k]) for k in first)


@pytest.mark.parametrize("optimizer, expected", [("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW)])
def test_make_optimizer_uses_params(optimizer, expected):
    p = parse_params(params_dict(**{"train.optimizer": optimizer, "train.lr": 0.05, "train.weight_decay": 0.01}))
    opt = train.make_optimizer(p.train, MLP())
    assert isinstance(opt, expected)
    assert opt.param_groups[0]["lr"] == 0.05 and opt.param_groups[0]["weight_decay"] == 0.01


def test_missing_prepared_split_is_a_clear_error(tmp_path):
    with pytest.raises(StageError, match=r"train\.pt: prepared split not found; run the earlier stages first"):
        run_train(tmp_path, tmp_path / "nowhere")


class _NoCuda:
    class cuda:
        is_available = staticmethod(lambda: False)
        device_count = staticmethod(lambda: 0)

    class backends:
        class mps:
            is_available = staticmethod(lambda: False)


class _OneCuda(_NoCuda):
    class cuda:
        is_available = staticmethod(lambda: True)
        device_count = staticmethod(lambda: 1)


def test_device_choice():
    assert choose_device("auto", _NoCuda).type == "cpu"
    assert choose_device("auto", _OneCuda).type == "cuda"
    assert choose_device("cpu", _OneCuda).type == "cpu"
    with pytest.raises(StageError, match=r"device 'cuda' asked for, but torch finds no CUDA GPU here"):
        choose_device("cuda", _NoCuda)
    with pytest.raises(StageError, match=r"device 'cuda:1' asked for, but only 1 CUDA device"):
        choose_device("cuda:1", _OneCuda)
    with pytest.raises(StageError, match=r"device 'mps' asked for"):
        choose_device("mps", _NoCuda)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_param_without_cuda_stops_before_training(tmp_path, prepared):
    with pytest.raises(StageError, match="no CUDA GPU"):
        run_train(tmp_path, prepared, **{"train.device": "cuda"})
    assert not (tmp_path / "model.pth").exists()
