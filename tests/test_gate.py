"""The CI quality gate on crafted metrics and confusion files."""
from __future__ import annotations

import json

import pytest

from stages import gate
from stages.common import StageError
from tests.conftest import write_params


def write_metrics(path, accuracy):
    path.write_text(json.dumps({"accuracy": accuracy, "loss": 1.0}))
    return path


@pytest.fixture
def params(tmp_path):
    return write_params(tmp_path / "params.yaml", **{"gate.min_accuracy": 0.5, "gate.max_drop": 0.02,
                                                     "gate.alpha": 0.05})


def test_passes_above_threshold_and_within_drop(tmp_path, params, capsys):
    gate.main(["--params", str(params), "--metrics", str(write_metrics(tmp_path / "m.json", 0.55)),
               "--baseline", str(write_metrics(tmp_path / "base.json", 0.56))])
    out = capsys.readouterr().out
    assert "PASS accuracy 0.5500 >= gate.min_accuracy 0.5000" in out
    assert "PASS accuracy change -0.0100 against baseline 0.5600 (within gate.max_drop 0.0200)" in out


def test_fails_below_threshold(tmp_path, params):
    with pytest.raises(StageError, match=r"accuracy 0\.4900 < gate\.min_accuracy 0\.5000"):
        gate.main(["--params", str(params), "--metrics", str(write_metrics(tmp_path / "m.json", 0.49))])


def test_fails_on_a_drop_beyond_tolerance(tmp_path, params):
    with pytest.raises(StageError, match=r"accuracy change -0\.0300 against baseline 0\.6000 \(beyond"):
        gate.main(["--params", str(params), "--metrics", str(write_metrics(tmp_path / "m.json", 0.57)),
                   "--baseline", str(write_metrics(tmp_path / "base.json", 0.60))])


def test_bad_metrics_files_are_named(tmp_path, params):
    (tmp_path / "m.json").write_text('{"loss": 1}')
    with pytest.raises(StageError, match=r"m\.json: expected JSON with a numeric 'accuracy'"):
        gate.main(["--params", str(params), "--metrics", str(tmp_path / "m.json")])
    with pytest.raises(StageError, match=r"nope\.json: metrics file not found"):
        gate.main(["--params", str(params), "--metrics", str(tmp_path / "nope.json")])


def test_run_stage_turns_a_failure_into_exit_1(tmp_path, params):
    from stages.common import run_stage

    argv = ["--params", str(params), "--metrics", str(write_metrics(tmp_path / "m.json", 0.1))]
    with pytest.raises(SystemExit) as exit_info:
        run_stage("gate", gate.main, argv)
    assert str(exit_info.value.code).startswith("gate: error: accuracy 0.1000 <")


CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def baseline_rows(per_class=100, right=80):
    """(actual, predicted) for 10 classes of `per_class` images, interleaved like a real test set;
    the first `right` of each class predicted right, the rest as the next class."""
    rows = []
    for i in range(per_class):
        for k, name in enumerate(CLASSES):
            rows.append([name, name if i < right else CLASSES[(k + 1) % 10]])
    return rows


def flip(rows, name, to_wrong, to_right):
    """A copy of rows where `to_wrong` right images of class `name` become wrong and `to_right` wrong ones right."""
    rows = [list(r) for r in rows]
    wrong_name = CLASSES[(CLASSES.index(name) + 1) % 10]
    ours = [r for r in rows if r[0] == name]
    for r in [r for r in ours if r[1] == name][:to_wrong]:
        r[1] = wrong_name
    for r in [r for r in ours if r[1] != name][-to_right or len(ours):][:to_right]:
        r[1] = name
    return rows


def write_confusion(path, rows):
    path.write_text("actual,predicted\n" + "".join(f"{a},{p}\n" for a, p in rows))
    return path


def run_paired(tmp_path, params, before, after):
    """Gate main with metrics matching the rows, baseline and paired test; returns what it printed."""
    accuracy = lambda rows: sum(a == p for a, p in rows) / len(rows)  # noqa: E731
    gate.main(["--params", str(params),
               "--metrics", str(write_metrics(tmp_path / "m.json", accuracy(after))),
               "--baseline", str(write_metrics(tmp_path / "base.json", accuracy(before))),
               "--confusion", str(write_confusion(tmp_path / "c.csv", after)),
               "--baseline-confusion", str(write_confusion(tmp_path / "base-c.csv", before))])


def test_significant_drop_in_one_class_fails_though_the_total_holds(tmp_path, params, capsys):
    before = baseline_rows()
    after = flip(before, "cat", to_wrong=20, to_right=0)  # cat 80% -> 60%: 20 lost, none gained
    for name in ("dog", "frog", "horse", "ship"):  # +5 points each elsewhere: the total does not move
        after = flip(after, name, to_wrong=0, to_right=5)
    with pytest.raises(StageError, match=r"paired test, cat \(100 images\): accuracy 0\.8000 -> 0\.6000"):
        run_paired(tmp_path, params, before, after)
    out = capsys.readouterr().out
    assert "PASS accuracy change +0.0000 against baseline 0.8000 (within gate.max_drop 0.0200)" in out
    assert ("PASS paired test, overall (1000 images): accuracy 0.8000 -> 0.8000 (+0.0000); right only before 20, "
            "right only now 20; McNemar p=1 (not significant at gate.alpha 0.05)") in out
    # 20 against 0: p = 2 / 2^20; Holm multiplies the smallest of ten p-values by 10
    assert ("FAIL paired test, cat (100 images): accuracy 0.8000 -> 0.6000 (-0.2000); right only before 20, "
            "right only now 0; McNemar p=1.907e-06, Holm p=1.907e-05 (significant drop at gate.alpha 0.05)") in out
    assert "PASS paired test, dog (100 images): accuracy 0.8000 -> 0.8500 (+0.0500); right only before 0" in out
    assert out.count("paired test, ") == 11


def test_noise_of_the_size_of_todays_drops_passes(tmp_path, params, capsys):
    before = baseline_rows()
    after = before
    for name in CLASSES:  # churn: each class loses 10 right answers and gains 8 or 9 (-1.9 points in all)
        after = flip(after, name, to_wrong=10, to_right=8 if name in CLASSES[:9] else 9)
    run_paired(tmp_path, params, before, after)
    out = capsys.readouterr().out
    assert "PASS accuracy change -0.0190 against baseline 0.8000 (within gate.max_drop 0.0200)" in out
    assert "PASS paired test, overall (1000 images): accuracy 0.8000 -> 0.7810 (-0.0190); right only before 100, " \
           "right only now 81; McNemar p=0.1808 (not significant at gate.alpha 0.05)" in out
    assert "FAIL" not in out and out.count("not significant") == 11

    # 8 lost, 0 gained in one class (8 gained elsewhere): p = 2/256 = 0.0078 alone, but one of ten tests: Holm p = 0.078
    after = flip(flip(flip(before, "cat", to_wrong=8, to_right=0), "dog", 0, 4), "frog", 0, 4)
    run_paired(tmp_path, params, before, after)
    out = capsys.readouterr().out
    assert "PASS paired test, cat (100 images): accuracy 0.8000 -> 0.7200 (-0.0800); right only before 8, " \
           "right only now 0; McNemar p=0.007812, Holm p=0.07812 (not significant at gate.alpha 0.05)" in out
    assert "FAIL" not in out


def test_significant_overall_drop_fails_and_a_significant_gain_passes(tmp_path, params, capsys):
    before = baseline_rows()
    worse = before
    for name in CLASSES:  # 3 lost in every class, none gained: no class alone is significant, the total is
        worse = flip(worse, name, to_wrong=3, to_right=0)
    with pytest.raises(StageError, match=r"paired test, overall .*significant drop"):
        run_paired(tmp_path, write_params(tmp_path / "p.yaml", **{"gate.max_drop": 0.5}), before, worse)
    out = capsys.readouterr().out
    assert "right only before 30, right only now 0; McNemar p=1.863e-09 (significant drop" in out
    assert "FAIL paired test, cat" not in out
    run_paired(tmp_path, params, worse, before)
    assert "PASS paired test, overall (1000 images): accuracy 0.7700 -> 0.8000 (+0.0300); right only before 0, " \
           "right only now 30; McNemar p=1.863e-09 (significant gain at gate.alpha 0.05)" in capsys.readouterr().out


@pytest.mark.parametrize("change, message", [
    (lambda rows: rows[:-10], "the baseline has 1000 test images, this run 990"),
    (lambda rows: [["dog", rows[0][1]]] + rows[1:], "row 2 is 'airplane' in the baseline but 'dog' here"),
])
def test_different_test_sets_are_never_paired(tmp_path, params, capsys, change, message):
    before = baseline_rows()
    run_paired(tmp_path, params, before, change(before))
    out = capsys.readouterr().out
    assert f"SKIP paired test: {tmp_path / 'base-c.csv'} and {tmp_path / 'c.csv'} list different test images " \
           f"({message}; other prepare params or other data?), so no image is paired" in out
    assert "paired test, overall" not in out and "PASS accuracy change" in out


def test_without_a_baseline_confusion_it_says_there_is_no_paired_test(tmp_path, params, capsys):
    gate.main(["--params", str(params), "--metrics", str(write_metrics(tmp_path / "m.json", 0.55)),
               "--confusion", str(tmp_path / "absent.csv")])
    assert "SKIP paired test: no --baseline-confusion given" in capsys.readouterr().out


def test_bad_confusion_files_are_named(tmp_path, params):
    args = ["--params", str(params), "--metrics", str(write_metrics(tmp_path / "m.json", 0.55)),
            "--baseline-confusion", str(write_confusion(tmp_path / "base.csv", baseline_rows()))]
    with pytest.raises(StageError, match=r"nope\.csv: confusion file not found"):
        gate.main(args + ["--confusion", str(tmp_path / "nope.csv")])
    (tmp_path / "odd.csv").write_text("label,guess\ncat,cat\n")
    with pytest.raises(StageError, match=r"odd\.csv: expected a CSV with columns actual,predicted .*'label', 'guess'"):
        gate.main(args + ["--confusion", str(tmp_path / "odd.csv")])
    (tmp_path / "empty.csv").write_text("actual,predicted\n")
    with pytest.raises(StageError, match=r"empty\.csv: no test images"):
        gate.main(args + ["--confusion", str(tmp_path / "empty.csv")])


def test_alpha_is_validated(tmp_path):
    from stages.params import ParamsError, load_params

    with pytest.raises(ParamsError, match=r"gate\.alpha: got 0\.0; must be in \(0, 1\), e\.g\. 0\.05"):
        load_params(write_params(tmp_path / "params.yaml", **{"gate.alpha": 0.0}))
    with pytest.raises(ParamsError, match=r"gate\.alpha: got 'high' \(str\); expected a number"):
        load_params(write_params(tmp_path / "params.yaml", **{"gate.alpha": "high"}))
