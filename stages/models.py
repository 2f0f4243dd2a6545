"""Models selected by `train.model`, built by name so evaluate can rebuild them from model.json."""
from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """The tutorial's network, attribute for attribute, so its state_dict loads into the tutorial's class."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear_relu_stack = nn.Sequential(
            nn.Linear(3 * 32 * 32, 1024), nn.ReLU(),
            nn.Linear(1024, 512), nn.ReLU(),
            nn.Linear(512, num_classes),
        )

    def forward(self, x):  # (N, 3, 32, 32) -> (N, num_classes) logits
        return self.linear_relu_stack(self.flatten(x))


MODELS = {"mlp": MLP}


def build_model(name: str, num_classes: int) -> nn.Module:
    if name not in MODELS:
        raise ValueError(f"Invalid model {name!r}. Only {', '.join(MODELS)} are supported.")
    return MODELS[name](num_classes=num_classes)


def predict_logits(model: nn.Module, images, batch_size: int):
    """Logits (N, num_classes) for images (N, 3, 32, 32) already on the model's device, in eval mode."""
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        logits = torch.cat([model(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])
    model.train(was_training)
    return logits
