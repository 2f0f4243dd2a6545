"""Models selected by `train.model`, built by name so evaluate can rebuild them from model.json.

- mlp: the tutorial's 3072-1024-512-10 ReLU network.
- cnn: the tutorial's "part 2" conv net (two 5x5 convs, three linear layers).
- resnet: a ResNet-9 in the style of David Page's fast CIFAR-10 trainer (94% in
  24 epochs at width 64), with BatchNorm; `width` sets the first block's channels
  and the others follow as 2x, 4x, 8x.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .common import StageError, progress, require_file


class MLP(nn.Module):
    """The tutorial's network, attribute for attribute, so its state_dict loads into the tutorial's class."""

    def __init__(self, num_classes: int = 10, width: int = 0):
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear_relu_stack = nn.Sequential(
            nn.Linear(3 * 32 * 32, 1024), nn.ReLU(),
            nn.Linear(1024, 512), nn.ReLU(),
            nn.Linear(512, num_classes),
        )

    def forward(self, x):  # (N, 3, 32, 32) -> (N, num_classes) logits
        return self.linear_relu_stack(self.flatten(x))


class CNN(nn.Module):
    """The tutorial's conv net, attribute for attribute (conv1, pool, conv2, fc1..fc3)."""

    def __init__(self, num_classes: int = 10, width: int = 0):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x):  # (N, 3, 32, 32)
        x = self.pool(torch.relu(self.conv1(x)))  # (N, 6, 14, 14)
        x = self.pool(torch.relu(self.conv2(x)))  # (N, 16, 5, 5)
        x = torch.flatten(x, 1)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def conv_bn(c_in: int, c_out: int, pool: bool = False) -> nn.Sequential:
    layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    if pool:
        layers.insert(1, nn.MaxPool2d(2))  # pool before BN: same result, 4x less BN work
    return nn.Sequential(*layers)


class Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn(channels, channels), conv_bn(channels, channels))

    def forward(self, x):
        return x + self.body(x)


class ResNet9(nn.Module):
    """prep -> (conv, pool, residual) -> (conv, pool) -> (conv, pool, residual) -> max-pool -> linear."""

    def __init__(self, num_classes: int = 10, width: int = 64):
        super().__init__()
        w = width
        self.net = nn.Sequential(
            conv_bn(3, w),                                   # (N, w, 32, 32)
            conv_bn(w, 2 * w, pool=True), Residual(2 * w),   # (N, 2w, 16, 16)
            conv_bn(2 * w, 4 * w, pool=True),                # (N, 4w, 8, 8)
            conv_bn(4 * w, 8 * w, pool=True), Residual(8 * w),  # (N, 8w, 4, 4)
            nn.AdaptiveMaxPool2d(1), nn.Flatten(),
            nn.Linear(8 * w, num_classes, bias=False),
        )

    def forward(self, x):
        # Page's 0.125 output scale: keeps early logits small so a high lr does not blow up.
        return self.net(x) * 0.125


MODELS = {"mlp": MLP, "cnn": CNN, "resnet": ResNet9}


def build_model(name: str, num_classes: int, width: int = 64) -> nn.Module:
    if name not in MODELS:
        raise ValueError(f"Invalid model {name!r}. Only {', '.join(MODELS)} are supported.")
    return MODELS[name](num_classes=num_classes, width=width)


def load_model(weights: Path, meta: dict, device: torch.device) -> nn.Module:
    """The model model.json describes, with the trained weights from `weights`, on `device`."""
    model = build_model(meta["model"], num_classes=meta["num_classes"], width=meta["width"])
    try:
        model.load_state_dict(torch.load(require_file(weights, "model weights"), map_location="cpu",
                                         weights_only=True))
    except RuntimeError as err:
        raise StageError(f"{weights}: does not load into model {meta['model']!r}: {err}") from None
    return model.to(device)


def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int, desc: str = "") -> torch.Tensor:
    """Logits (N, num_classes) for images (N, 3, 32, 32) already on the model's device, in eval mode."""
    was_training = model.training
    model.eval()
    starts = range(0, len(images), batch_size)
    with torch.inference_mode():
        logits = torch.cat([model(images[i:i + batch_size]).float()
                            for i in progress(starts, total=len(starts), desc=desc, unit="batch")])
    model.train(was_training)
    return logits
