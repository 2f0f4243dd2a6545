"""Per-epoch records that DVC, its VS Code extension and Studio can read while training runs.

After every epoch, rank 0 rewrites the per-epoch table (`--history`, a CSV: what `dvc plots
show` draws, train and validation columns side by side) and logs the same row with DVCLive into
`--live`: `metrics.json` there holds the latest epoch (`dvc exp show` and `dvc metrics show` read
it during the run) and `plots/metrics/**.tsv` one file per metric (Studio's live view reads them).

Both are a function of the history so far. After a crash, the resumed run starts DVCLive afresh
and replays the checkpoint's history, so the files end up as an uninterrupted run's: DVC deletes
a stage's outputs before it runs, so DVCLive's own `resume=True` would find nothing to resume,
and it appends, so an epoch logged just before a kill would appear twice.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd

from .common import atomic_path

log = logging.getLogger("stages")

# CSV column -> DVCLive metric name ("train/loss" is `train.loss` in `dvc metrics show`).
LIVE_NAMES = {"train_loss": "train/loss", "train_accuracy": "train/accuracy", "val_loss": "val/loss",
              "val_accuracy": "val/accuracy", "lr": "lr", "seconds": "seconds",
              "images_per_second": "images_per_second"}


def write_history(path: Path, history: list[dict]) -> None:
    with atomic_path(path) as tmp:
        pd.DataFrame(history).to_csv(tmp, index=False)


def log_epoch(live, row: dict) -> None:
    """Log one history row at step = its epoch number (1-based, as in the CSV); empty values are skipped."""
    live.step = row["epoch"]
    for column, name in LIVE_NAMES.items():
        if row.get(column) is not None:
            live.log_metric(name, row[column])
    live.next_step()  # writes metrics.json (with "step") and, if Studio is configured, posts the update


class EpochLog:
    """Keeps the history CSV and the DVCLive folder in step with a growing history."""

    def __init__(self, history_path: Path, live):
        self.history_path, self.live, self.logged = history_path, live, 0

    def __call__(self, history: list[dict]) -> None:
        for row in history[self.logged:]:
            log_epoch(self.live, row)
        self.logged = len(history)
        write_history(self.history_path, history)


@contextlib.contextmanager
def epoch_log(history_path: Path, live_dir: Path | None, enabled: bool = True
              ) -> Iterator[Callable[[list[dict]], None] | None]:
    """The per-epoch callback for `fit` (None where this process does not write, e.g. ranks > 0)."""
    if not enabled:
        yield None
        return
    try:
        from dvclive import Live
    except ImportError:  # the stage run by hand where only torch is installed (the GPU machines)
        if live_dir is not None:
            log.warning("DVCLive is not installed: writing %s only, not %s", history_path, live_dir)
        live_dir = None
    if live_dir is None:
        yield lambda history: write_history(history_path, history)
        return

    # dvcyaml=False: dvc.yaml declares the folder itself (DVCLive would rewrite it, `vars` and all).
    # save_dvc_exp=False: a pipeline stage never saves experiments; `dvc exp run` does that.
    # report=None: no HTML/Markdown report. Studio gets live updates only where the user has
    # configured it (`dvc studio login`, DVC_STUDIO_TOKEN); DVC_STUDIO_OFFLINE=1 turns that off.
    with Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None) as live:
        yield EpochLog(history_path, live)
