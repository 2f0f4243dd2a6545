"""One typed, validated object for params.yaml.

Every stage loads the whole file through `load_params` before doing any work, so a
typo anywhere stops the run at once with the dotted key, the value found and what
is allowed. Values have no defaults here: params.yaml is the single source of
truth, and DVC tracks exactly what it holds.
"""
from __future__ import annotations

import re
import types
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

MD5_RE = re.compile(r"^[0-9a-f]{32}$")
DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class ParamsError(ValueError):
    """params.yaml is missing a key or holds a value that is not allowed."""


@dataclass(frozen=True)
class DataParams:
    # cifar10: the official cifar-10-python.tar.gz; cifar100: cifar-100-python.tar.gz; imagefolder:
    # train/<class>/* and test/<class>/* image files (stages/imagefolder.py), as an archive or a folder.
    source: Literal["cifar10", "cifar100", "imagefolder"]
    url: str  # http(s) URL, file:// URL or local path of the archive; imagefolder: or a folder under images/
    md5: str  # expected md5 of that archive, 32 lowercase hex digits; "" for an imagefolder folder
    labels: Literal["fine", "coarse"]  # cifar100 only: its 100 fine classes or 20 coarse superclasses


@dataclass(frozen=True)
class PrepareParams:
    # Per-channel normalization: one number for all channels, three (R, G, B),
    # or "train" (both mean and std) for statistics of the training split.
    mean: Union[float, list[float], Literal["train"]]
    std: Union[float, list[float], Literal["train"]]
    train_per_class: int  # class-balanced subset: first N training images of each class; 0 = all
    test_per_class: int  # the same for the test split; 0 = all
    val_size: int  # images held out of the (subset) training split for validation; 0 = none
    split_seed: int  # seed of the train/validation split
    image_size: int  # images are resized to image_size x image_size pixels (CIFAR: 32 = as they are)
    resample: Literal["nearest", "box", "bilinear", "hamming", "bicubic", "lanczos"]  # Pillow's resize filter
    test_fraction: float  # imagefolder without test/: fraction of each class held out as the test split
    test_seed: int  # seed of that stratified hold-out


@dataclass(frozen=True)
class ModelParams:
    name: Literal["mlp", "cnn", "resnet", "airbench"]
    width: int  # resnet: channels of the first block (then 2x, 4x, 8x)
    widths: list[int]  # airbench: channels of its 3 conv groups (airbench94: 64, 256, 256)
    activation: Literal["relu", "gelu", "celu"]  # resnet and airbench
    output_scale: float  # resnet and airbench: logits multiplier (Page 0.125, airbench 1/9)
    whiten: bool  # airbench: first layer a frozen 2x2 patch-whitening conv (stages/whitening.py)
    whiten_eps: float  # added to the patch covariance's eigenvalues before dividing by their root
    dirac_init: bool  # resnet and airbench: 3x3 convs start as identity maps on their first channels
    bn_momentum: float  # BatchNorm running-statistics momentum, PyTorch's meaning (airbench's 0.6 = 0.4 here)
    bn_eps: float
    bn_weight: Literal["train", "frozen"]  # frozen: every BatchNorm scale stays at 1


@dataclass(frozen=True)
class OptimParams:
    optimizer: Literal["sgd", "adamw"]
    # per-step: lr and weight_decay as torch.optim takes them. per-1024: airbench's units, stated per
    # 1,024 images and momentum-normalized, so changing batch_size or momentum keeps their meaning.
    units: Literal["per-step", "per-1024"]
    lr: float  # peak learning rate, in `units`
    momentum: float  # SGD momentum, 0 = plain SGD (adamw ignores it)
    nesterov: bool  # SGD Nesterov momentum (needs momentum > 0)
    weight_decay: float  # L2 (sgd) or decoupled (adamw) decay, in `units` (per-1024: shrink per 1,024 images)
    bn_bias_lr: float  # lr multiplier for BatchNorm biases (airbench: 64); their decay is divided by it
    muon: bool  # conv filters by Muon (stages/optimizers.py), the rest by `optimizer`
    muon_lr: float  # Muon's peak lr, per step (airbench94 Muon: 0.24)
    muon_momentum: float  # Muon's Nesterov momentum (airbench94 Muon: 0.6)
    label_smoothing: float  # cross-entropy label smoothing, 0 = off
    batch_size: int  # images per optimizer step
    epochs: int  # full passes over the training split
    schedule: Literal["constant", "linear", "cosine"]  # lr after warm-up: flat, or down to decay_to linearly/cosine
    warmup: float  # fraction of all steps spent ramping lr linearly from warmup_from x peak to the peak
    warmup_from: float  # lr factor at the first step (0 = from zero; airbench 0.2)
    decay_to: float  # lr factor at the last step of linear/cosine (0 = down to zero; airbench 0.07)
    whiten_bias_epochs: int  # airbench with whiten: epochs in which the whitening conv's bias trains
    # airbench: per conv group from the first, how many final epochs it stops training in (its filters and
    # BatchNorm biases), e.g. [3, 1]; backward then stops before the frozen groups. [] = none.
    freeze_last: list[int]
    # true: each group of freeze_last runs the whole lr schedule within the epochs it trains, so that
    # its lr has decayed to decay_to when it freezes (FreezeOut); false: the run's, cut off there
    freeze_anneal: bool


@dataclass(frozen=True)
class AugmentParams:
    crop_pad: int  # random translation: reflect-pad by this many pixels and crop 32x32; 0 = off (airbench 2)
    flip: Literal["none", "random", "alternate"]  # alternate: each image flipped on every other epoch
    # airbench: in the first early_crop_epochs epochs, train on a random early_crop x early_crop window of
    # each (augmented) image instead of the whole image: fewer pixels, cheaper epochs. 0 = off.
    early_crop: int
    early_crop_epochs: int


@dataclass(frozen=True)
class AverageParams:
    ema: float  # per-step decay of an exponential moving average of the weights, saved instead; 0 = off
    # Lookahead (stages/averaging.py): every lookahead_every steps the weights are pulled to a slow copy,
    # with decay lookahead x (step / steps)^3, so early steps are free; the slow copy is saved. 0 = off.
    lookahead: float  # peak decay (airbench: 0.95^5 = 0.774)
    lookahead_every: int  # steps between lookahead updates (airbench: 5)


@dataclass(frozen=True)
class NumericsParams:
    # bf16 = autocast to bfloat16 (BatchNorm stays fp32); auto = bf16 where it runs natively
    # (stages/precision.py), else fp32
    precision: Literal["auto", "fp32", "bf16"]
    channels_last: bool  # NHWC memory layout: faster convolutions on GPUs, and on the CPU (BENCHMARKS.md 3n)
    compile: bool  # torch.compile the model (pays its warm-up once per run, before the first epoch)
    cudnn_benchmark: bool  # CUDA: let cuDNN time its kernels once and keep the fastest (fixed shapes)
    deterministic: bool  # deterministic algorithms only (CUDA: slower, bit-repeatable); CPU runs always are
    fused_sgd: bool  # plain SGD on Linear layers only: update inside the backward pass (stages/fused.py)
    seed: int  # weight init, shuffling and augmentation
    device: str  # auto (CUDA when available, else CPU), cpu, cuda, cuda:N, mps


@dataclass(frozen=True)
class TrainParams:
    """The effective train values: a recipe from `recipes`, with train.* overrides on top."""

    recipe: str  # name of the entry in `recipes` these values start from
    model: ModelParams
    optim: OptimParams
    augment: AugmentParams
    average: AverageParams
    numerics: NumericsParams


@dataclass(frozen=True)
class EvaluateParams:
    batch_size: int  # images per forward pass; does not change the metrics
    # Logits averaged over test views: flip (mirror), flip-shift (+-1 pixel horizontally, equal weights),
    # airbench (mirror x {unshifted 0.5, 1 pixel up-left 0.25, 1 pixel down-right 0.25}).
    tta: Literal["none", "flip", "flip-shift", "airbench"]
    device: str  # as train.device


@dataclass(frozen=True)
class GateParams:
    min_accuracy: float  # stages.gate fails below this test accuracy (fraction, 0..1)
    max_drop: float  # ...or when accuracy fell by more than this against a baseline (fraction)
    alpha: float  # ...or when the paired test finds a drop significant at this level (McNemar, Holm per class)


@dataclass(frozen=True)
class Params:
    data: DataParams
    prepare: PrepareParams
    train: TrainParams  # resolved: recipes[train.recipe] with the non-null train.* values on top
    evaluate: EvaluateParams
    gate: GateParams


TRAIN_GROUPS = [f.name for f in fields(TrainParams) if f.name != "recipe"]
TRAIN_KEYS = [f"{group}.{f.name}" for group in TRAIN_GROUPS
              for f in fields(get_type_hints(TrainParams)[group])]  # dotted, as in train.optim.lr


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; raise ParamsError listing every problem."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found (run from the project root or pass --params)") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from None
    return parse_params(raw, source=str(path))


def parse_params(raw: Any, source: str = "params") -> Params:
    """Build Params from a plain dict (as read from YAML), checking every value.

    `train` names a recipe and may override any of its values (null = the recipe's).
    Every recipe is checked in full, so a broken one fails even while unused.
    """
    errors: list[str] = []
    overridden: set[str] = set()
    if isinstance(raw, dict):
        recipes = raw.get("recipes")
        errors.extend(_check_recipes(recipes))
        train = raw.get("train")
        if isinstance(train, dict) and isinstance(recipes, dict):
            overridden = {f"{group}.{k}" for group in TRAIN_GROUPS if isinstance(train.get(group), dict)
                          for k, v in train[group].items() if v is not None}
            train = _resolve_recipe(train, recipes, errors)
        raw = {k: v for k, v in raw.items() if k != "recipes"} | {"train": train}
    unknown_recipe = any(e.startswith("train.recipe:") for e in errors)
    params = _build(Params, raw, "", errors)
    if unknown_recipe:  # its keys were not filled in: one line for the name, not one per missing key
        errors = [e for e in errors if not e.startswith("train.") or e.startswith("train.recipe:")]
    if params is not None:
        errors.extend(_check_ranges(params, overridden))
    if errors:
        raise ParamsError(f"{source}: invalid params:\n  " + "\n  ".join(dict.fromkeys(errors)))
    return params


def _check_recipes(recipes: Any) -> list[str]:
    if not isinstance(recipes, dict) or not recipes:
        return [f"recipes: expected a mapping of recipe names to train values, got {_show(recipes)}"]
    errors: list[str] = []
    for name, values in recipes.items():
        prefix = f"recipes.{name}."
        values = {"recipe": name, **values} if isinstance(values, dict) else values
        recipe = _build(TrainParams, values, prefix, errors)
        if recipe is not None:
            errors.extend(_train_rules(recipe, prefix, set(TRAIN_KEYS)))
    return errors


def _resolve_recipe(train: dict, recipes: dict, errors: list[str]) -> dict:
    """The train section with its recipe's values filled in where train.* is null."""
    name = train.get("recipe")
    if name not in recipes:
        errors.append(f"train.recipe: got {_show(name)}; expected one of {', '.join(map(repr, recipes))}")
        return train
    base = recipes[name] if isinstance(recipes[name], dict) else {}
    resolved = {**base, "recipe": name}
    for key, value in train.items():
        if key in TRAIN_GROUPS and isinstance(value, dict) and isinstance(base.get(key), dict):
            resolved[key] = {**base[key], **{k: v for k, v in value.items() if v is not None}}
        elif key != "recipe":
            resolved[key] = value  # not a known group: _build names it
    return resolved


def _build(cls: type, raw: Any, prefix: str, errors: list[str]) -> Any:
    where = prefix.rstrip(".") or "top level"
    start = len(errors)
    if not isinstance(raw, dict):
        errors.append(f"{where}: expected a mapping of keys, got {_show(raw)}")
        return None
    hints = get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    for key in raw:
        if key not in names:
            errors.append(f"{prefix}{key}: unknown key; allowed keys in {where}: {', '.join(names)}")
    values = {}
    for name in names:
        key = prefix + name
        if name not in raw:
            errors.append(f"{key}: missing")
            continue
        hint = hints[name]
        if is_dataclass(hint):
            values[name] = _build(hint, raw[name], key + ".", errors)
        else:
            ok, value = _coerce(raw[name], hint)
            if not ok:
                errors.append(f"{key}: got {_show(raw[name])}; expected {_describe(hint)}")
            values[name] = value
    return cls(**values) if len(errors) == start else None


def _coerce(value: Any, hint: Any) -> tuple[bool, Any]:
    """Return (ok, value) with ints widened to floats where a float is expected."""
    origin = get_origin(hint)
    if origin is Literal:
        return value in get_args(hint) and isinstance(value, str), value
    if origin in (Union, types.UnionType):
        for option in get_args(hint):
            ok, coerced = _coerce(value, option)
            if ok:
                return True, coerced
        return False, value
    if origin is list:
        (item,) = get_args(hint)
        if not isinstance(value, list):
            return False, value
        pairs = [_coerce(v, item) for v in value]
        return all(ok for ok, _ in pairs), [v for _, v in pairs]
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    return isinstance(value, hint), value


def _describe(hint: Any) -> str:
    origin = get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(hint))
    if origin is list:
        item = _describe(get_args(hint)[0])
        return "a list of " + {"an integer": "integers", "a number": "numbers", "a string": "strings"}.get(item, item)
    return {float: "a number", int: "an integer", str: "a string", bool: "true or false"}.get(hint, str(hint))


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})" if value is not None else "nothing (null)"


def _check_ranges(p: Params, overridden: set[str]) -> list[str]:
    """Value checks that types cannot express; each message names key, value, rule."""
    rules = [
        ("data.url", p.data.url, bool(p.data.url.strip()), "a non-empty URL or path"),
        ("data.md5", p.data.md5, bool(MD5_RE.match(p.data.md5)) or (p.data.md5 == "" and p.data.source == "imagefolder"),
         "32 lowercase hex digits" + (' (or "" for a folder)' if p.data.source == "imagefolder" else "")),
        ("prepare.image_size", p.prepare.image_size, 8 <= p.prepare.image_size <= 1024, "in 8..1024 (pixels)"),
        ("prepare.test_fraction", p.prepare.test_fraction, 0 < p.prepare.test_fraction < 1, "in (0, 1)"),
        ("prepare.val_size", p.prepare.val_size, p.prepare.val_size >= 0, ">= 0"),
        ("prepare.train_per_class", p.prepare.train_per_class, p.prepare.train_per_class >= 0, ">= 0 (0 = all)"),
        ("prepare.test_per_class", p.prepare.test_per_class, p.prepare.test_per_class >= 0, ">= 0 (0 = all)"),
        ("evaluate.batch_size", p.evaluate.batch_size, p.evaluate.batch_size >= 1, ">= 1"),
        ("gate.min_accuracy", p.gate.min_accuracy, 0 <= p.gate.min_accuracy <= 1, "in [0, 1]"),
        ("gate.max_drop", p.gate.max_drop, 0 <= p.gate.max_drop <= 1, "in [0, 1]"),
        ("gate.alpha", p.gate.alpha, 0 < p.gate.alpha < 1, "in (0, 1), e.g. 0.05"),
        ("evaluate.device", p.evaluate.device, bool(DEVICE_RE.match(p.evaluate.device)),
         "auto, cpu, cuda, cuda:N or mps"),
    ]
    errors = [f"{key}: got {value!r}; must be {rule}" for key, value, ok, rule in rules if not ok]
    errors.extend(_check_stats("prepare.mean", p.prepare.mean, positive=False))
    errors.extend(_check_stats("prepare.std", p.prepare.std, positive=True))
    if (p.prepare.mean == "train") != (p.prepare.std == "train"):
        errors.append(f"prepare.mean/prepare.std: got {p.prepare.mean!r}/{p.prepare.std!r}; "
                      "'train' must be set on both or neither")
    return errors + _train_rules(p.train, "train.", overridden)


def _train_rules(t: TrainParams, prefix: str, keys: set[str]) -> list[str]:
    """Range errors among dotted `keys` of a train section (recipes are checked on their own)."""
    m, o, a, v, n = t.model, t.optim, t.augment, t.average, t.numerics
    rules = [
        ("model.width", m.width, m.width >= 1, ">= 1"),
        ("model.widths", m.widths, len(m.widths) == 3 and min(m.widths) >= 1, "3 channel counts, each >= 1"),
        ("model.output_scale", m.output_scale, m.output_scale > 0, "> 0"),
        ("model.whiten_eps", m.whiten_eps, m.whiten_eps > 0, "> 0"),
        ("model.bn_momentum", m.bn_momentum, 0 < m.bn_momentum <= 1, "in (0, 1]"),
        ("model.bn_eps", m.bn_eps, m.bn_eps > 0, "> 0"),
        ("optim.lr", o.lr, o.lr > 0, "> 0"),
        ("optim.momentum", o.momentum, 0 <= o.momentum < 1, "in [0, 1)"),
        (("optim.nesterov", "optim.momentum"), o.nesterov, not o.nesterov or o.momentum > 0,
         "false unless momentum > 0"),
        (("optim.units", "optim.optimizer"), o.units, o.units == "per-step" or o.optimizer == "sgd",
         "per-step unless optimizer is sgd"),
        ("optim.weight_decay", o.weight_decay, o.weight_decay >= 0, ">= 0"),
        ("optim.bn_bias_lr", o.bn_bias_lr, o.bn_bias_lr > 0, "> 0"),
        ("optim.muon_lr", o.muon_lr, o.muon_lr > 0, "> 0"),
        ("optim.muon_momentum", o.muon_momentum, 0 <= o.muon_momentum < 1, "in [0, 1)"),
        ("optim.label_smoothing", o.label_smoothing, 0 <= o.label_smoothing < 1, "in [0, 1)"),
        ("optim.batch_size", o.batch_size, o.batch_size >= 1, ">= 1"),
        ("optim.epochs", o.epochs, o.epochs >= 1, ">= 1"),
        ("optim.warmup", o.warmup, 0 <= o.warmup < 1, "in [0, 1)"),
        ("optim.warmup_from", o.warmup_from, 0 <= o.warmup_from <= 1, "in [0, 1]"),
        ("optim.decay_to", o.decay_to, 0 <= o.decay_to <= 1, "in [0, 1]"),
        ("optim.whiten_bias_epochs", o.whiten_bias_epochs, o.whiten_bias_epochs >= 0, ">= 0"),
        (("optim.freeze_last", "optim.epochs"), o.freeze_last,
         len(o.freeze_last) <= 3 and all(0 <= k <= o.epochs for k in o.freeze_last)
         and all(a >= b for a, b in zip(o.freeze_last, o.freeze_last[1:])),
         f"[] or up to 3 epoch counts, one per conv group from the first, each in 0..epochs ({o.epochs}) "
         "and none above the one before (a group freezes no later than the groups after it), e.g. [3, 1]"),
        (("optim.freeze_last", "model.name"), o.freeze_last, not any(o.freeze_last) or m.name == "airbench",
         "[] unless model.name is airbench (its conv groups are what freeze)"),
        (("optim.freeze_anneal", "optim.freeze_last"), o.freeze_anneal,
         not o.freeze_anneal or any(0 < k < o.epochs for k in o.freeze_last),
         "false unless freeze_last freezes a group after it has trained (a count in 1..epochs - 1): "
         "it sets the lr schedule of the groups that freeze"),
        (("optim.freeze_anneal", "optim.schedule"), o.freeze_anneal,
         not o.freeze_anneal or o.schedule != "constant",
         "false unless schedule is linear or cosine (a constant lr has nothing to anneal)"),
        ("augment.crop_pad", a.crop_pad, 0 <= a.crop_pad <= 16, "in 0..16"),
        ("augment.early_crop", a.early_crop, a.early_crop == 0 or a.early_crop >= 9,
         "0 (off) or at least 9 pixels (airbench's three 2x2 poolings need 9)"),
        (("augment.early_crop", "model.name"), a.early_crop, not a.early_crop or m.name == "airbench",
         "0 unless model.name is airbench (its last max-pool takes any map size)"),
        (("augment.early_crop_epochs", "optim.epochs", "augment.early_crop"), a.early_crop_epochs,
         0 <= a.early_crop_epochs <= o.epochs and (a.early_crop_epochs > 0) == (a.early_crop > 0),
         f"in 1..epochs ({o.epochs}) when early_crop is set, 0 when it is 0"),
        ("average.ema", v.ema, 0 <= v.ema < 1, "in [0, 1)"),
        ("average.lookahead", v.lookahead, 0 <= v.lookahead < 1, "in [0, 1)"),
        ("average.lookahead_every", v.lookahead_every, v.lookahead_every >= 1, ">= 1"),
        (("average.ema", "average.lookahead"), v.ema, not (v.ema and v.lookahead),
         "0 when average.lookahead is on (one average at a time)"),
        ("numerics.device", n.device, bool(DEVICE_RE.match(n.device)), "auto, cpu, cuda, cuda:N or mps"),
    ]
    # A rule over several keys (first named in the message) applies when any of them was set.
    return [f"{prefix}{_first(key)}: got {value!r}; must be {rule}"
            for key, value, ok, rule in rules if not ok and set(_all(key)) & keys]


def _first(key: str | tuple[str, ...]) -> str:
    return key if isinstance(key, str) else key[0]


def _all(key: str | tuple[str, ...]) -> tuple[str, ...]:
    return (key,) if isinstance(key, str) else key


def _check_stats(key: str, value: Any, positive: bool) -> list[str]:
    if value == "train":
        return []
    values = value if isinstance(value, list) else [value]
    if len(values) not in (1, 3):
        return [f"{key}: got {value!r}; must be one number or a list of 3 (R, G, B)"]
    if positive and min(values) <= 0:
        return [f"{key}: got {value!r}; every value must be > 0"]
    return []


def set_dotted(raw: dict, dotted: dict[str, Any]) -> dict:
    """Set values of a params dict by dotted key ({"train.lr": 0.1}), in place; return the dict."""
    for key, value in dotted.items():
        *parents, leaf = key.split(".")
        node = raw
        for part in parents:
            node = node[part]
        node[leaf] = value
    return raw


def channel_stats(value: float | list[float]) -> list[float]:
    """A mean/std param as three per-channel floats."""
    return [float(v) for v in value] * (3 // len(value)) if isinstance(value, list) else [float(value)] * 3
