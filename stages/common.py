"""What every stage shares: error reporting, atomic outputs, logging, device choice."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from .params import ParamsError, PrepareParams, channel_stats

T = TypeVar("T")
log = logging.getLogger("stages")


def file_md5(path: Path) -> str:
    """A file's md5, read in 1 MiB chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class StageError(RuntimeError):
    """A failure the user can act on; reported as one message, without a traceback."""


class DiskFull(StageError):
    """No room to write an output: the disk or a quota is full, or a file-size limit was hit."""


# Out of room: a full disk, a full quota, a file larger than ulimit -f (Python ignores SIGXFSZ: EFBIG).
DISK_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # Ctrl-C; kill, a cancelled CI job, a time limit
SIGNAL_NAMES = {signal.SIGINT: "SIGINT (Ctrl-C)", signal.SIGTERM: "SIGTERM"}


class Interrupted(BaseException):
    """SIGINT or SIGTERM, raised in the main thread by run_stage's handler. A BaseException, as
    KeyboardInterrupt is, so that no `except Exception` swallows it: it unwinds the stage, every
    atomic_path removes its temporary files, and run_stage ends it in one line and exit 128 + signal."""

    def __init__(self, signum: int):
        super().__init__(SIGNAL_NAMES.get(signum, f"signal {signum}"))
        self.signum = signum
        self.during: str | None = None  # where it struck ("in epoch 3/10"): the innermost note wins
        self.kept: str | None = None  # what survives it, where a stage knows better than "nothing new"
        self.quiet = False  # said already by another process (a torchrun worker)
        self.after_done = False  # held back by signals_deferred until its block had finished

    def note(self, during: str | None = None, kept: str | None = None) -> None:
        self.during = self.during or during
        self.kept = self.kept or kept


class _StopState:
    """Module state of the signal handler (signals are process-wide): deferral depth, a signal held
    back by signals_deferred, and whether Interrupted has been raised already."""

    depth = 0
    pending: int | None = None
    raised = False


def _on_stop_signal(signum: int, frame: Any) -> None:
    if _StopState.raised:
        return  # once: a second Ctrl-C while the stage cleans up must not leave its temporary files behind
    if _StopState.depth:
        _StopState.pending = _StopState.pending or signum
        return
    _StopState.raised = True
    raise Interrupted(signum)


def catch_stop_signals() -> None:
    """Turn SIGINT and SIGTERM into Interrupted, except where the parent set them to be ignored
    (a background job, nohup): that choice is the caller's."""
    for sig in STOP_SIGNALS:
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, _on_stop_signal)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back until the block ends, then raise Interrupted: for writes and
    cleanup that must not stop halfway (torch.save, interrupted inside, raises its own error instead)."""
    _StopState.depth += 1
    done = False
    try:
        yield
        done = True
    finally:
        _StopState.depth -= 1
        if not _StopState.depth and _StopState.pending is not None and not _StopState.raised:
            _StopState.raised = True
            err = Interrupted(_StopState.pending)
            err.after_done = done
            raise err


def run_stage(name: str, main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> None:
    """Run a stage's main with logging set up; expected failures end in one line, without a traceback.

    StageError and ParamsError exit 1. SIGINT and SIGTERM exit 130 and 143, after one line saying
    what was interrupted and what was kept. A full disk or running out of memory where no stage
    caught it still gets one line, naming what ran out.
    """
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {name}: %(message)s", datefmt="%H:%M:%S")
    catch_stop_signals()
    try:
        main(argv)
    except (StageError, ParamsError) as err:
        sys.exit(f"{name}: error: {err}")
    except BaseException as err:
        # An Interrupted may hide behind what cleanup code raised while it unwound (torch.save does).
        stop = in_chain(err, lambda e: isinstance(e, Interrupted))
        if stop is not None:
            # torchrun workers other than rank 0 leave the line to rank 0, which knows what it kept
            if not stop.quiet and os.environ.get("RANK", "0") == "0":
                log.warning("interrupted by %s%s; %s", stop, f" {stop.during}" if stop.during else "",
                            stop.kept or "no output of this run was finished; earlier outputs are left as they were")
            sys.exit(128 + stop.signum)
        full = disk_full(err)  # where no stage caught it with more to say (DVCLive's own writes)
        if full is not None:
            sys.exit(f"{name}: error: {os.strerror(full.errno)} writing {full.filename or 'a file'} "
                     f"({free_space(Path.cwd())} free on the disk of {Path.cwd()}); free some space and run again")
        if isinstance(err, Exception) and out_of_memory(err):
            sys.exit(f"{name}: error: out of memory ({first_line(err)})")
        raise


def in_chain(err: BaseException | None, match: Callable[[BaseException], bool]) -> Any:
    """The first exception in err's chain (itself, what it was raised from or while handling) that matches."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if match(err):
            return err
        err = err.__cause__ or err.__context__
    return None


def first_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"


def disk_full(err: BaseException | None) -> OSError | None:
    """The out-of-room OSError behind err, if any (torch.save wraps a failed write in a RuntimeError;
    a stage may have re-raised it as its own error)."""
    return in_chain(err, lambda e: isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS)


def out_of_memory(err: BaseException) -> bool:
    """MemoryError, CUDA's torch.OutOfMemoryError, or torch's CPU allocator failing (a RuntimeError)."""
    return (isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError"
            or (isinstance(err, RuntimeError) and "can't allocate memory" in str(err)))


@contextlib.contextmanager
def out_of_memory_hint(what: str, batch_size: int, key: str) -> Iterator[None]:
    """Turn running out of memory in the block into one StageError naming the batch size and `key`."""
    try:
        yield
    except (MemoryError, RuntimeError) as err:
        if not out_of_memory(err):
            raise
        raise StageError(f"out of memory {what} at batch size {batch_size} ({first_line(err)}); set a smaller "
                         f"{key}, e.g. dvc exp run -S {key}={max(1, batch_size // 2)}") from None


def megabytes(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def free_space(path: Path) -> str:
    with contextlib.suppress(OSError):
        return megabytes(shutil.disk_usage(path).free)
    return "unknown space"


def size_on_disk(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def file_size_limit() -> int | None:
    """Bytes a process may write to one file (ulimit -f), None where unlimited or unknown (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if limit == resource.RLIM_INFINITY else limit


def disk_full_error(final: Path, what: str, needs: int | None, written: int, err: OSError) -> DiskFull:
    """One message: the path, what was being written, what it needs against what is free."""
    room = (f"it needs about {megabytes(needs)}" if needs else f"{megabytes(written)} written before it failed")
    limit = file_size_limit()
    if err.errno == errno.EFBIG and limit is not None:
        where = f"the file-size limit (ulimit -f) is {megabytes(limit)}"
    else:
        where = f"{free_space(final.parent)} free on the disk of {final.parent}"
    return DiskFull(f"{final}: cannot write {what}: {os.strerror(err.errno)} ({errno.errorcode[err.errno]}); "
                    f"{room}, {where}. Nothing was written at {final}: what was there is left as it was. "
                    "Free some space and run again")


@contextlib.contextmanager
def atomic_path(final: str | Path, what: str = "", needs: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it to `final` only if the block succeeds.

    DVC deletes a stage's outputs before running it and keeps whatever a failed
    command leaves, so nothing may ever sit at the final name half-written.
    Works for files and for directories (the block creates what it needs).
    A full disk while the block writes becomes one DiskFull error saying `what`
    was being written and roughly how much room it `needs` (bytes), where known.
    """
    final = Path(final)
    what = what or final.name
    tmp = None
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
        staged = tmp / final.name
        yield staged
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        os.replace(staged, final)
    except Interrupted as err:
        err.note(during=f"while writing {final}")
        raise
    except Exception as err:
        full = disk_full(err)
        if full is None or isinstance(err, DiskFull):
            raise
        written = size_on_disk(staged) if tmp is not None else 0
        if tmp is not None:
            with signals_deferred():
                shutil.rmtree(tmp, ignore_errors=True)  # first, so that the room free is the room there is
        raise disk_full_error(final, what, needs, written, full) from None
    finally:
        if tmp is not None:
            with signals_deferred():  # a Ctrl-C now would leave the temporary folder behind
                shutil.rmtree(tmp, ignore_errors=True)


def tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in a nested structure of dicts, lists and tuples: what torch.save writes, roughly."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def torch_save(obj: Any, path: Path) -> None:
    """torch.save through a Python file: a full disk then stays an OSError behind torch's RuntimeError
    (torch.save to a path reports only "unexpected pos ..."), so atomic_path can say what ran out.
    A stop signal waits until the file is complete."""
    import torch

    with signals_deferred(), open(path, "wb") as f:
        torch.save(obj, f)


def save_tensors(obj: Any, final: str | Path, what: str) -> None:
    """torch.save to `final` atomically; a stop signal waits until it is there (a checkpoint is kept)."""
    with signals_deferred(), atomic_path(final, what, needs=tensor_bytes(obj)) as tmp:
        torch_save(obj, tmp)


def require_file(path: Path, what: str) -> Path:
    """Return path if it is a file, else stop with a message saying which stage makes it."""
    if not path.is_file():
        raise StageError(f"{path}: {what} not found; run the earlier stages first (dvc repro)")
    return path


PREPARE_HINT = "rebuild it with `dvc repro -f prepare`"


def load_prepared(path: Path) -> dict:
    """A prepared split (stages/prepare.py's record), checked: a damaged file is named in one error."""
    import torch

    try:
        split = torch.load(require_file(path, "prepared split"), map_location="cpu", weights_only=True)
    except StageError:
        raise
    except Exception as err:  # noqa: BLE001 - whatever torch.load makes of a damaged file, one message
        raise StageError(f"{path}: damaged prepared split, unreadable ({first_line(err)}); {PREPARE_HINT}") from None
    images = split.get("images") if isinstance(split, dict) else None
    if isinstance(images, torch.Tensor) and images.is_floating_point():
        raise StageError(f"{path}: holds {images.dtype} images, written before prepare cached uint8 pixels; "
                         "run the prepare stage again (dvc repro)")
    problem = prepared_problem(split, torch)
    if problem:
        raise StageError(f"{path}: damaged prepared split: {problem}; {PREPARE_HINT}")
    return split


def prepared_problem(split: Any, torch: Any) -> str | None:
    """What is wrong with a loaded prepared split, or None."""
    keys = {"images", "labels", "classes", "mean", "std"}
    if not isinstance(split, dict) or not keys <= set(split):
        found = sorted(split) if isinstance(split, dict) else type(split).__name__
        return f"expected a dict with {sorted(keys)}, found {found}"
    images, labels, classes = split["images"], split["labels"], split["classes"]
    describe = lambda x: f"{getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}"  # noqa: E731
    if not (isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and images.dim() == 4
            and images.shape[1] == 3 and images.shape[2] == images.shape[3] > 0):
        return f"images must be a uint8 tensor (N, 3, S, S), found {describe(images)}"
    if not (isinstance(labels, torch.Tensor) and labels.dtype == torch.int64 and labels.shape == (len(images),)):
        return f"labels must be an int64 tensor ({len(images)},), found {describe(labels)}"
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        return "classes must be a list of names"
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < len(classes):
        return f"labels outside 0..{len(classes) - 1}"
    for key in ("mean", "std"):
        values = split[key]
        if not (isinstance(values, list) and len(values) == 3 and all(isinstance(v, (int, float)) for v in values)):
            return f"{key} must be 3 numbers, found {values!r:.60}"
    return None


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


def write_json(path: str | Path, data: Any, what: str = "") -> None:
    text = json.dumps(data, indent=2) + "\n"
    with atomic_path(path, what, needs=len(text)) as tmp:
        tmp.write_text(text, encoding="utf-8")


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
