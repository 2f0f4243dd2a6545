"""What every stage shares: error reporting, atomic outputs, logging, device choice."""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from .params import ParamsError, PrepareParams, channel_stats

T = TypeVar("T")
log = logging.getLogger("stages")


class StageError(RuntimeError):
    """A failure the user can act on; reported as one message, without a traceback."""


def run_stage(name: str, main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> None:
    """Run a stage's main with logging set up; turn expected failures into exit code 1."""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {name}: %(message)s", datefmt="%H:%M:%S")
    try:
        main(argv)
    except (StageError, ParamsError) as err:
        sys.exit(f"{name}: error: {err}")


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it to `final` only if the block succeeds.

    DVC deletes a stage's outputs before running it and keeps whatever a failed
    command leaves, so nothing may ever sit at the final name half-written.
    Works for files and for directories (the block creates what it needs).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    staged = tmp / final.name
    try:
        yield staged
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        os.replace(staged, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def require_file(path: Path, what: str) -> Path:
    """Return path if it is a file, else stop with a message saying which stage makes it."""
    if not path.is_file():
        raise StageError(f"{path}: {what} not found; run the earlier stages first (dvc repro)")
    return path


def default_path(key: str, dvc_yaml: Path = Path("dvc.yaml")) -> Path | None:
    """A path from dvc.yaml's vars (where every path is written once), for commands outside the
    pipeline; None when there is no such dvc.yaml or key."""
    import yaml

    try:
        spec = yaml.safe_load(dvc_yaml.read_text())
        return Path(next(v["paths"][key] for v in spec["vars"] if "paths" in v))
    except (OSError, KeyError, StopIteration, TypeError, yaml.YAMLError):
        return None


def check_normalization(split: dict, prepare: PrepareParams, path: Path) -> None:
    """Stop when a prepared split was normalized with other mean/std than params.yaml now asks for
    (a stale cache, e.g. stages run by hand out of order); 'train' statistics cannot be compared."""
    for key in ("mean", "std"):
        wanted = getattr(prepare, key)
        if wanted != "train" and not all(math.isclose(a, b, rel_tol=1e-6)
                                         for a, b in zip(split[key], channel_stats(wanted))):
            raise StageError(f"{path}: prepared with {key} {split[key]}, but params.yaml has prepare.{key} "
                             f"{wanted!r}; run the prepare stage again (dvc repro)")


def write_json(path: str | Path, data: Any) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")


def choose_device(name: str, torch_module: Any = None) -> Any:
    """Resolve a device param ('auto', 'cpu', 'cuda', 'cuda:N', 'mps') to a torch.device."""
    import torch

    torch_module = torch_module or torch
    # torch says why CUDA is unusable (e.g. a driver older than its CUDA build) only as a
    # warning from the first is_available(); catch it so that `auto` can say why it chose the CPU.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cuda_ok = torch_module.cuda.is_available()
    for warning in caught:
        if not (name == "auto" and str(warning.message).startswith("CUDA initialization")):
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    if name == "auto":
        built_for = getattr(getattr(torch_module, "version", None), "cuda", None)
        if not cuda_ok and built_for:
            log.warning("device auto: using the CPU, although torch %s is built for CUDA %s: %s",
                        getattr(torch_module, "__version__", "?"), built_for, cuda_unavailable_reason(caught))
        return torch.device("cuda" if cuda_ok else "cpu")
    if name.startswith("cuda"):
        if not cuda_ok:
            raise StageError(f"device {name!r} asked for, but torch finds no CUDA GPU here "
                             f"(torch {torch.__version__}); use 'auto' or 'cpu'")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch_module.cuda.device_count():
            raise StageError(f"device {name!r} asked for, but only {torch_module.cuda.device_count()} "
                             "CUDA device(s) exist here")
    if name == "mps" and not torch_module.backends.mps.is_available():
        raise StageError("device 'mps' asked for, but torch finds no Apple MPS device here; use 'auto' or 'cpu'")
    return torch.device(name)


def cuda_unavailable_reason(caught: list[warnings.WarningMessage]) -> str:
    """One line on why a CUDA build of torch found no GPU: torch's own warning when it gave one."""
    for warning in caught:
        text = str(warning.message)
        if text.startswith("CUDA initialization"):
            return " ".join(text.split(":", 1)[1].split()).split(". Please")[0].rstrip(".")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return f"no GPU visible (CUDA_VISIBLE_DEVICES={visible!r})"
    return "no NVIDIA GPU or driver found"


def progress(items: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it") -> Iterable[T]:
    """A progress bar on an interactive terminal; the plain iterable in logs and CI."""
    if not sys.stderr.isatty():
        return items
    from tqdm import tqdm

    return tqdm(items, total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)
