"""dvc.yaml stays honest: each stage's deps are exactly the modules it imports, its params its section."""
from __future__ import annotations

import ast
import re

import pytest
import yaml

from tests.conftest import PROJECT

SPEC = yaml.safe_load((PROJECT / "dvc.yaml").read_text())
PATHS = {k: v for var in SPEC["vars"] for k, v in var["paths"].items()}


def fill(text: str) -> str:
    return re.sub(r"\$\{paths\.(\w+)\}", lambda m: PATHS[m.group(1)], text)


def local_imports(module: str) -> set[str]:
    """stages/*.py files that `python -m stages.<module>` loads, transitively (package __init__ included)."""
    found, todo = {"stages/__init__.py"}, [f"stages/{module}.py"]
    while todo:
        path = todo.pop()
        if path in found:
            continue
        found.add(path)
        for node in ast.walk(ast.parse((PROJECT / path).read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                todo.append(f"stages/{node.module}.py")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("stages."):
                todo.append(node.module.replace(".", "/") + ".py")
            elif isinstance(node, ast.Import):
                todo.extend(a.name.replace(".", "/") + ".py" for a in node.names if a.name.startswith("stages."))
    return found


@pytest.mark.parametrize("name", list(SPEC["stages"]))
def test_code_deps_are_exactly_the_imported_modules(name):
    stage = SPEC["stages"][name]
    module = re.match(r"python -m stages\.(\w+)", stage["cmd"]).group(1)
    assert module == name  # module names match stage names
    code_deps = {d for d in stage["deps"] if d.startswith("stages/")}
    assert code_deps == local_imports(module)


def entries(stage: dict, kind: str) -> dict[str, dict]:
    """A stage's outs, metrics or plots: {path as written: its options ({} for none)}."""
    return {next(iter(o)) if isinstance(o, dict) else o: next(iter(o.values())) if isinstance(o, dict) else {}
            for o in stage.get(kind, [])}


def outputs(stage: dict) -> dict[str, dict]:
    return {**entries(stage, "outs"), **entries(stage, "metrics"), **entries(stage, "plots")}


@pytest.mark.parametrize("name", list(SPEC["stages"]))
def test_every_path_in_the_command_is_a_dep_or_an_out(name):
    stage = SPEC["stages"][name]
    declared = {fill(d) for d in stage.get("deps", [])} | {fill(o) for o in outputs(stage)}
    args = re.findall(r"--[\w-]+ (\S+)", fill(stage["cmd"]))
    unmanaged = {PATHS["checkpoint"]}  # resume state: deliberately neither a dep nor an out
    # a folder whose contents are the outputs (DVCLive's: metrics.json and plots/, test_tracking.py)
    folders = {arg for arg in args if any(path.startswith(f"{arg}/") for path in declared)}
    assert args and set(args) <= declared | unmanaged | folders
    assert not unmanaged & declared


def test_stage_params_are_the_sections_it_reads():
    assert {name: stage["params"] for name, stage in SPEC["stages"].items()} == {
        "download": ["data.source", "data.url", "data.md5"], "prepare": ["prepare", "data.source", "data.labels"],
        "train": ["train", "recipes"], "evaluate": ["evaluate"]}


def test_small_metrics_files_are_in_git_and_the_run_cache_stays_on():
    # DVC 3.67 run-caches a stage unless it has a persist: true output or a plain outs entry with
    # cache: false; cache: false under the stage's own metrics:/plots: keeps the run cache on.
    for name, stage in SPEC["stages"].items():
        assert not any(o.get("persist") or o.get("cache") is False for o in entries(stage, "outs").values()), name
    in_git = {fill(path) for stage in SPEC["stages"].values() for kind in ("metrics", "plots")
              for path, options in entries(stage, kind).items() if options.get("cache") is False}
    assert in_git == {PATHS[k] for k in ("metrics", "train_metrics", "confusion", "per_class", "train_log")} | {
        f"{PATHS['live']}/metrics.json"}


def test_plots_name_files_the_stages_write_and_their_columns():
    plots = {fill(path): options for path, options in entries(SPEC, "plots").items()}
    for stage in SPEC["stages"].values():  # a stage's own plots: the file, drawn with its options
        plots |= {fill(path): {k: v for k, v in options.items() if k != "cache"}
                  for path, options in entries(stage, "plots").items()}
    assert plots[PATHS["confusion"]] == {"template": "confusion", "x": "actual", "y": "predicted",
                                         "title": "Test confusion matrix"}
    assert (plots[PATHS["per_class"]]["x"], plots[PATHS["per_class"]]["y"]) == ("accuracy", "class")
    assert PATHS["grid"] in plots
    curves = [spec for spec in plots.values() if isinstance(spec.get("y"), dict)]
    assert curves and all(spec["x"] == "epoch" and list(spec["y"]) == ["${paths.train_log}"] for spec in curves)
    columns = {c for spec in curves for c in spec["y"]["${paths.train_log}"]}
    assert plots[PATHS["train_log"]]["x"] == "epoch"  # the file's own plot: one more column
    columns.add(plots[PATHS["train_log"]]["y"])
    assert columns == {"train_loss", "val_loss", "train_accuracy", "val_accuracy", "lr", "images_per_second"}
