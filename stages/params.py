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
    url: str  # http(s) URL, file:// URL or local path of cifar-10-python.tar.gz
    md5: str  # expected md5 of that archive, 32 lowercase hex digits


@dataclass(frozen=True)
class PrepareParams:
    # Per-channel normalization: one number for all channels, three (R, G, B),
    # or "train" (both mean and std) for statistics of the training split.
    mean: Union[float, list[float], Literal["train"]]
    std: Union[float, list[float], Literal["train"]]
    val_size: int  # images held out of the training split for validation; 0 = none
    split_seed: int  # seed of the train/validation split


@dataclass(frozen=True)
class TrainParams:
    model: Literal["mlp"]
    optimizer: Literal["sgd", "adamw"]
    lr: float  # learning rate per step
    momentum: float  # SGD momentum, 0 = plain SGD (ignored by adamw)
    weight_decay: float  # L2 (sgd) or decoupled (adamw) weight decay
    batch_size: int  # images per optimizer step
    epochs: int  # full passes over the training split
    seed: int  # weight init and per-epoch shuffling
    device: str  # auto (CUDA when available, else CPU), cpu, cuda, cuda:N, mps


@dataclass(frozen=True)
class EvaluateParams:
    batch_size: int  # images per forward pass; does not change the metrics
    device: str  # as train.device


@dataclass(frozen=True)
class Params:
    data: DataParams
    prepare: PrepareParams
    train: TrainParams
    evaluate: EvaluateParams


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
    """Build Params from a plain dict (as read from YAML), checking every value."""
    errors: list[str] = []
    params = _build(Params, raw, "", errors)
    if not errors:
        errors.extend(_check_ranges(params))
    if errors:
        raise ParamsError(f"{source}: invalid params:\n  " + "\n  ".join(errors))
    return params


def _build(cls: type, raw: Any, prefix: str, errors: list[str]) -> Any:
    where = prefix.rstrip(".") or "top level"
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
    return cls(**values) if len(values) == len(names) else None


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
        return f"a list of {_describe(get_args(hint)[0])}s"
    return {float: "a number", int: "an integer", str: "a string", bool: "true or false"}.get(hint, str(hint))


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})" if value is not None else "nothing (null)"


def _check_ranges(p: Params) -> list[str]:
    """Value checks that types cannot express; each message names key, value, rule."""
    rules = [
        ("data.url", p.data.url, bool(p.data.url.strip()), "a non-empty URL or path"),
        ("data.md5", p.data.md5, bool(MD5_RE.match(p.data.md5)), "32 lowercase hex digits"),
        ("prepare.val_size", p.prepare.val_size, p.prepare.val_size >= 0, ">= 0"),
        ("train.lr", p.train.lr, p.train.lr > 0, "> 0"),
        ("train.momentum", p.train.momentum, 0 <= p.train.momentum < 1, "in [0, 1)"),
        ("train.weight_decay", p.train.weight_decay, p.train.weight_decay >= 0, ">= 0"),
        ("train.batch_size", p.train.batch_size, p.train.batch_size >= 1, ">= 1"),
        ("train.epochs", p.train.epochs, p.train.epochs >= 1, ">= 1"),
        ("train.device", p.train.device, bool(DEVICE_RE.match(p.train.device)), "auto, cpu, cuda, cuda:N or mps"),
        ("evaluate.batch_size", p.evaluate.batch_size, p.evaluate.batch_size >= 1, ">= 1"),
        ("evaluate.device", p.evaluate.device, bool(DEVICE_RE.match(p.evaluate.device)),
         "auto, cpu, cuda, cuda:N or mps"),
    ]
    errors = [f"{key}: got {value!r}; must be {rule}" for key, value, ok, rule in rules if not ok]
    errors.extend(_check_stats("prepare.mean", p.prepare.mean, positive=False))
    errors.extend(_check_stats("prepare.std", p.prepare.std, positive=True))
    if (p.prepare.mean == "train") != (p.prepare.std == "train"):
        errors.append(f"prepare.mean/prepare.std: got {p.prepare.mean!r}/{p.prepare.std!r}; "
                      "'train' must be set on both or neither")
    return errors


def _check_stats(key: str, value: Any, positive: bool) -> list[str]:
    if value == "train":
        return []
    values = value if isinstance(value, list) else [value]
    if len(values) not in (1, 3):
        return [f"{key}: got {value!r}; must be one number or a list of 3 (R, G, B)"]
    if positive and min(values) <= 0:
        return [f"{key}: got {value!r}; every value must be > 0"]
    return []


def channel_stats(value: float | list[float]) -> list[float]:
    """A mean/std param as three per-channel floats."""
    return [float(v) for v in value] * (3 // len(value)) if isinstance(value, list) else [float(value)] * 3
