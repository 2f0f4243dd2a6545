"""Models selected by `train.model`, built by name so evaluate can rebuild them from model.json.

- mlp: the tutorial's 3072-1024-512-10 ReLU network.
- cnn: the tutorial's "part 2" conv net (two 5x5 convs, three linear layers).
- resnet: a ResNet-9 in the style of David Page's fast CIFAR-10 trainer (94% in
  24 epochs at width 64), with BatchNorm; `width` sets the first block's channels
  and the others follow as 2x, 4x, 8x.
- airbench: the network of Keller Jordan's airbench94 (94% in about 3.8 s on an
  A100): a 2x2 patch-whitening conv, three conv-pool-BN-act-conv-BN-act groups,
  a max-pool, a linear head and a fixed output scale.

The train.model params (activation, BatchNorm settings, output scale, dirac init)
apply to resnet and airbench alike, so an ablation can switch one at a time;
mlp and cnn stay the tutorial's networks, attribute for attribute.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .common import StageError, progress, require_file
from .params import ModelParams

ACTIVATIONS = {"relu": lambda: nn.ReLU(inplace=True), "gelu": nn.GELU, "celu": lambda: nn.CELU(inplace=True)}


@dataclass(frozen=True)
class Blocks:
    """How the conv blocks of resnet and airbench are built (from train.model)."""

    activation: str = "relu"
    bn_momentum: float = 0.1
    bn_eps: float = 1e-5
    bn_weight: str = "train"  # "frozen": scales stay at 1 (not trained, not decayed)
    dirac_init: bool = False

    def act(self) -> nn.Module:
        return ACTIVATIONS[self.activation]()

    def norm(self, channels: int) -> nn.BatchNorm2d:
        bn = nn.BatchNorm2d(channels, eps=self.bn_eps, momentum=self.bn_momentum)
        bn.weight.requires_grad_(self.bn_weight == "train")
        return bn

    def conv(self, c_in: int, c_out: int) -> nn.Conv2d:
        conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        if self.dirac_init:
            # The first c_in filters pass their input through unchanged: a block starts near identity.
            nn.init.dirac_(conv.weight.data[:min(c_in, c_out)])
        return conv


def linear_by_columns(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x W^T + b for x (batch, in), taken as (W x^T)^T: the same product, rounded in another order.

    At the tutorial's batch of 4 a Linear layer only streams its weights, and the CPU's GEMM
    streams W (out, in) as the left operand faster than W^T as the right one: 1.3x per MLP
    training step on an AVX2 CPU (BENCHMARKS.md section 1). The result is a transposed view.
    """
    out = weight @ x.t() if bias is None else torch.addmm(bias.unsqueeze(1), weight, x.t())
    return out.t()


class ColumnLinear(nn.Linear):
    """nn.Linear with its product taken by linear_by_columns; parameters and state_dict unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:  # (..., in): nn.Linear's own product
            return super().forward(x)
        return linear_by_columns(x, self.weight, self.bias)


class MLP(nn.Module):
    """The tutorial's network, attribute for attribute, so its state_dict loads into the tutorial's class."""

    def __init__(self, num_classes: int = 10, width: int = 0, image_size: int = 32):
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear_relu_stack = nn.Sequential(
            ColumnLinear(3 * image_size * image_size, 1024), nn.ReLU(),
            ColumnLinear(1024, 512), nn.ReLU(),
            ColumnLinear(512, num_classes),
        )

    def forward(self, x):  # (N, 3, 32, 32) -> (N, num_classes) logits
        return self.linear_relu_stack(self.flatten(x))


class CNN(nn.Module):
    """The tutorial's conv net, attribute for attribute (conv1, pool, conv2, fc1..fc3)."""

    def __init__(self, num_classes: int = 10, width: int = 0, image_size: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        side = ((image_size - 4) // 2 - 4) // 2  # 5 at 32 pixels
        self.fc1 = nn.Linear(16 * side * side, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x):  # (N, 3, 32, 32)
        x = self.pool(torch.relu(self.conv1(x)))  # (N, 6, 14, 14)
        x = self.pool(torch.relu(self.conv2(x)))  # (N, 16, 5, 5)
        x = torch.flatten(x, 1)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def conv_bn(c_in: int, c_out: int, blocks: Blocks, pool: bool = False) -> nn.Sequential:
    layers = [blocks.conv(c_in, c_out), blocks.norm(c_out), blocks.act()]
    if pool:
        layers.insert(1, nn.MaxPool2d(2))  # pool before BN: same result, 4x less BN work
    return nn.Sequential(*layers)


class Residual(nn.Module):
    def __init__(self, channels: int, blocks: Blocks):
        super().__init__()
        self.body = nn.Sequential(conv_bn(channels, channels, blocks), conv_bn(channels, channels, blocks))

    def forward(self, x):
        return x + self.body(x)


class ResNet9(nn.Module):
    """prep -> (conv, pool, residual) -> (conv, pool) -> (conv, pool, residual) -> max-pool -> linear."""

    def __init__(self, num_classes: int = 10, width: int = 64, blocks: Blocks = Blocks(), output_scale: float = 0.125,
                 image_size: int = 32):
        super().__init__()
        w, b = width, blocks
        self.net = nn.Sequential(
            conv_bn(3, w, b),                                      # (N, w, 32, 32)
            conv_bn(w, 2 * w, b, pool=True), Residual(2 * w, b),   # (N, 2w, 16, 16)
            conv_bn(2 * w, 4 * w, b, pool=True),                   # (N, 4w, 8, 8)
            conv_bn(4 * w, 8 * w, b, pool=True), Residual(8 * w, b),  # (N, 8w, 4, 4)
            # MaxPool2d(4) (at 32 pixels), not AdaptiveMaxPool2d(1): the same on 4x4 maps, and its CUDA backward
            # has a deterministic implementation (train.numerics.deterministic), which the adaptive one lacks.
            nn.MaxPool2d(image_size // 8), nn.Flatten(),
            nn.Linear(8 * w, num_classes, bias=False),
        )
        # Page's 0.125: keeps early logits small so a high lr does not blow up.
        self.output_scale = output_scale

    def forward(self, x):
        return self.net(x) * self.output_scale


class ConvGroup(nn.Module):
    """airbench's block: conv, 2x2 max-pool, BN, act, conv, BN, act (pooling first: 4x less work after it)."""

    def __init__(self, c_in: int, c_out: int, blocks: Blocks):
        super().__init__()
        self.conv1, self.pool, self.norm1 = blocks.conv(c_in, c_out), nn.MaxPool2d(2), blocks.norm(c_out)
        self.conv2, self.norm2, self.act = blocks.conv(c_out, c_out), blocks.norm(c_out), blocks.act()

    def forward(self, x):
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        return self.act(self.norm2(self.conv2(x)))


class Airbench(nn.Module):
    """airbench94's network: whiten (2x2 conv, 24 channels) -> act -> 3 ConvGroups -> global max-pool -> linear.

    With `whiten`, the first conv's weights are set from training patches by
    stages.whitening.init_whitening and stay frozen; only its bias trains (for
    optim.whiten_bias_epochs). Without it, it is an ordinary trained conv.
    """

    WHITEN_WIDTH = 2 * 3 * 2 * 2  # 12 eigen-patches of 2x2x3 pixels, and their negatives

    def __init__(self, num_classes: int = 10, widths: tuple[int, int, int] = (64, 256, 256),
                 blocks: Blocks = Blocks(), output_scale: float = 1 / 9, whiten: bool = True):
        super().__init__()
        self.whiten = nn.Conv2d(3, self.WHITEN_WIDTH, 2, padding=0, bias=True)  # (N, 24, 31, 31)
        self.whiten.weight.requires_grad_(not whiten)
        self.act = blocks.act()
        w1, w2, w3 = widths
        self.groups = nn.Sequential(ConvGroup(self.WHITEN_WIDTH, w1, blocks),  # (N, w1, 15, 15)
                                    ConvGroup(w1, w2, blocks),                 # (N, w2, 7, 7)
                                    ConvGroup(w2, w3, blocks))                 # (N, w3, 3, 3)
        self.head = nn.Linear(w3, num_classes, bias=False)
        self.output_scale = output_scale

    def forward(self, x):  # (N, 3, 32, 32)
        x = self.groups(self.act(self.whiten(x)))
        # The max over the whole last map: 3x3 at 32 pixels, smaller on train.augment.early_crop's crops.
        x = F.max_pool2d(x, x.shape[-2:])
        return self.head(x.flatten(1)) * self.output_scale  # (N, w3) -> (N, classes)


MODELS = {"mlp": MLP, "cnn": CNN, "resnet": ResNet9, "airbench": Airbench}
# The image sizes each network takes (its pooling must leave at least one pixel): (rule, test).
IMAGE_SIZES = {
    "mlp": ("any size", lambda s: True),
    "cnn": ("at least 16 pixels", lambda s: s >= 16),
    "resnet": ("a multiple of 8 pixels", lambda s: s % 8 == 0),
    "airbench": ("at least 9 pixels", lambda s: s >= 9),
}


def image_size_error(name: str, image_size: int) -> str | None:
    """Why model `name` cannot take square images of `image_size` pixels; None when it can."""
    rule, ok = IMAGE_SIZES[name]
    if ok(image_size):
        return None
    return (f"train.model.name {name!r} cannot take {image_size}x{image_size} images (prepare.image_size "
            f"{image_size}): it needs {rule}")


def build_model(spec: ModelParams, num_classes: int, image_size: int = 32) -> nn.Module:
    """The network train.model describes for images of image_size pixels (unfitted: airbench's whitening is
    set by the train stage)."""
    if spec.name not in MODELS:
        raise ValueError(f"Invalid model {spec.name!r}. Only {', '.join(MODELS)} are supported.")
    error = image_size_error(spec.name, image_size)
    if error:
        raise ValueError(error)
    blocks = Blocks(spec.activation, spec.bn_momentum, spec.bn_eps, spec.bn_weight, spec.dirac_init)
    if spec.name == "resnet":
        return ResNet9(num_classes, spec.width, blocks, spec.output_scale, image_size)
    if spec.name == "airbench":
        return Airbench(num_classes, tuple(spec.widths), blocks, spec.output_scale, spec.whiten)  # any size
    return MODELS[spec.name](num_classes=num_classes, image_size=image_size)


def model_spec(meta: dict) -> ModelParams:
    """train.model as model.json records it; model.json files from before train.model was a group
    (only "model" and "width") load as the resnet/mlp/cnn they were."""
    recorded = meta.get("train_params", {}).get("model")
    if isinstance(recorded, dict):
        return ModelParams(**recorded)
    defaults = {"widths": [64, 256, 256], "activation": "relu", "output_scale": 0.125, "whiten": False,
                "whiten_eps": 5e-4, "dirac_init": False, "bn_momentum": 0.1, "bn_eps": 1e-5, "bn_weight": "train"}
    return ModelParams(name=meta["model"], width=meta["width"], **defaults)


def load_model(weights: Path, meta: dict, device: torch.device) -> nn.Module:
    """The model model.json describes, with the trained weights from `weights`, on `device`."""
    model = build_model(model_spec(meta), num_classes=meta["num_classes"], image_size=meta.get("image_size", 32))
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
