"""The seed-sweep summary on `dvc exp show --json` documents in DVC 3's format."""
from __future__ import annotations

import io
import json

import pytest

from stages import seeds
from stages.common import StageError
from stages.stats import t_quantile


def experiment(name, seed, lr, accuracy, cat, state="success"):
    """One entry of a baseline's "experiments" list, as DVC 3.67's `dvc exp show --json` writes it."""
    params = {"train": {"recipe": "tutorial", "optim": {"lr": lr, "epochs": 2}, "numerics": {"seed": seed}},
              "prepare": {"mean": [0.5] * 3}}
    return {"revs": [{"rev": f"{abs(hash(name)) % 16**7:07x}", "name": name, "error": None, "experiments": None,
                      "data": {"rev": "abc", "timestamp": "2026-11-28T07:00:00", "deps": {}, "outs": {}, "meta": {},
                               "params": {"params.yaml": {"data": params}},
                               "metrics": {"metrics/metrics.json": {"data": {
                                   "accuracy": accuracy, "loss": 1.5, "accuracy_low": accuracy - 0.03,
                                   "per_class_accuracy": {"cat": cat, "dog": 0.5}}},
                                   "metrics/train.json": {"data": {"seconds": 3.0}}}}}],
            "executor": {"state": state, "name": None, "local": None} if state != "success" else None,
            "name": name}


def shown_document(runs):
    return [{"rev": "workspace", "name": None, "error": None, "experiments": None,
             "data": {"params": {"params.yaml": {"data": {"train": {"numerics": {"seed": None}}}}},
                      "metrics": {"metrics/metrics.json": {"data": {"accuracy": 0.9}}}}},
            {"rev": "1234567abc", "name": "main", "error": None, "experiments": runs,
             "data": {"params": {}, "metrics": {"metrics/metrics.json": {"data": {"accuracy": 0.9}}}}}]


DOC = shown_document([
    experiment("a-0", 0, None, 0.30, 0.20), experiment("a-1", 1, None, 0.32, 0.24),
    experiment("a-2", 2, None, 0.34, 0.22),
    experiment("b-0", 0, 0.01, 0.40, 0.30), experiment("b-1", 1, 0.01, 0.44, 0.30),
    experiment("unseeded", None, 0.01, 0.40, 0.30),
    experiment("queued", 3, 0.01, 0.0, 0.0, state="queued"), experiment("failed", 4, 0.01, 0.0, 0.0, state="failed"),
])


def test_finished_runs_leave_out_baselines_queued_and_failed():
    runs = seeds.finished_runs(DOC, "metrics/metrics.json")
    assert [r.name for r in runs] == ["a-0", "a-1", "a-2", "b-0", "b-1", "unseeded"]
    assert runs[3].params["train.optim.lr"] == 0.01 and runs[3].params["train.numerics.seed"] == 0
    assert runs[3].params["prepare.mean"] == (0.5, 0.5, 0.5)
    assert runs[3].metrics["per_class_accuracy.cat"] == 0.30 and "seconds" not in runs[3].metrics


def test_the_train_stages_effective_params_file_is_left_out():
    doc = json.loads(json.dumps(DOC))
    for exp in doc[1]["experiments"]:  # as data/train_params.yaml adds them: the seed again, resolved
        data = exp["revs"][0]["data"]
        seed = data["params"]["params.yaml"]["data"]["train"]["numerics"]["seed"]
        data["params"]["data/train_params.yaml"] = {"data": {"numerics": {"seed": seed}, "optim": {"lr": 0.001}}}
    runs = seeds.finished_runs(doc, "metrics/metrics.json", derived=("data/train_params.yaml",))
    assert runs == seeds.finished_runs(DOC, "metrics/metrics.json")
    assert "data/train_params.yaml:numerics.seed" in seeds.finished_runs(doc, "metrics/metrics.json")[0].params


def test_groups_by_params_other_than_the_seed_labelled_by_what_differs():
    groups = seeds.group_by_params(seeds.finished_runs(DOC, "metrics/metrics.json")[:5], "train.numerics.seed")
    assert {label: [r.name for r in runs] for label, runs in groups.items()} == {
        "train.optim.lr=null": ["a-0", "a-1", "a-2"], "train.optim.lr=0.01": ["b-0", "b-1"]}
    one = seeds.group_by_params(seeds.finished_runs(DOC, "metrics/metrics.json")[:3], "train.numerics.seed")
    assert list(one) == ["all runs"]


def test_summary_table_by_hand(capsys, tmp_path):
    path = tmp_path / "shown.json"
    path.write_text(json.dumps(DOC))
    seeds.main([str(path), "--metrics", "metrics/metrics.json"])
    out = capsys.readouterr().out
    # group a: 0.30, 0.32, 0.34 -> mean 0.32, sd 0.02, half-width t(0.975, 2) * 0.02 / sqrt(3) = 0.0497
    half = t_quantile(0.95, 2) * 0.02 / 3 ** 0.5
    assert f"| train.optim.lr=null | 3 | 0, 1, 2 | 0.3200 | 0.0200 | {0.32 - half:.4f} - {0.32 + half:.4f} |" in out
    half = t_quantile(0.95, 1) * (0.02 * 2 ** 0.5) / 2 ** 0.5  # 0.40, 0.44: sd 0.0283; t(0.975, 1) = 12.71
    assert f"| train.optim.lr=0.01 | 2 | 0, 1 | 0.4200 | 0.0283 | {0.42 - half:.4f} - {0.42 + half:.4f} |" in out
    assert out.startswith("5 runs in 2 group(s); metrics/metrics.json, grouped by every param but "
                          "train.numerics.seed\n"
                          "left out 1 experiment(s) that do not set train.numerics.seed: unseeded\n")
    assert "| runs with | n | train.numerics.seed | accuracy mean |" in out
    assert "| class | train.optim.lr=null | train.optim.lr=0.01 |" in out
    assert "| cat | 0.2200 ± 0.0200 (" in out
    assert "| dog | 0.5000 ± 0.0000 (0.5000 - 0.5000) | 0.5000 ± 0.0000 (0.5000 - 0.5000) |" in out


def test_one_run_has_no_spread_and_stdin_works(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(shown_document([experiment("x", 0, None, 0.5, 0.4)]))))
    seeds.main(["-", "--metrics", "metrics/metrics.json"])
    out = capsys.readouterr().out
    assert "| all runs | 1 | 0 | 0.5000 | - | - |" in out and "| cat | 0.4000 |" in out


def test_clear_errors(tmp_path):
    with pytest.raises(StageError, match=r"no finished experiment with metrics/metrics\.json in the input; run a "
                                         r"sweep first, e\.g\. dvc exp run --queue -S 'train\.numerics\.seed=range"):
        seeds.main([str(_write(tmp_path / "a.json", shown_document([]))), "--metrics", "metrics/metrics.json"])
    with pytest.raises(StageError, match=r"b\.json: not the JSON of `dvc exp show --json`"):
        seeds.main([str(_write(tmp_path / "b.json", "{oops")), "--metrics", "metrics/metrics.json"])
    with pytest.raises(StageError, match=r"expected the JSON list that `dvc exp show --json` prints, got dict"):
        seeds.main([str(_write(tmp_path / "c.json", {"rev": "x"})), "--metrics", "metrics/metrics.json"])
    with pytest.raises(StageError, match=r"no run in group 'train.optim.lr=null' has a numeric 'f1' metric"):
        seeds.main([str(_write(tmp_path / "d.json", DOC)), "--metrics", "metrics/metrics.json", "--metric", "f1"])
    with pytest.raises(StageError, match=r"no experiment sets 'train.nothing'; pass the param the sweep varies as"):
        seeds.main([str(tmp_path / "d.json"), "--metrics", "metrics/metrics.json", "--seed-key", "train.nothing"])
    with pytest.raises(StageError, match=r"nope\.json: cannot read"):
        seeds.main([str(tmp_path / "nope.json"), "--metrics", "metrics/metrics.json"])


def _write(path, doc):
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path
