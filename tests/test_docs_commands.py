"""Every command the docs show runs as written: DVC's own parser accepts each `dvc ...` line of the
Markdown docs (README.md, every docs/*.md page and BENCHMARKS.md; code blocks and inline code) and
of the modules' docstrings, each `python -m stages.X`
line parses with that module's own argument parser, and every params override they show
(`-S key=value`, `--set key=value`) names a key of params.yaml with a value its checks accept."""
from __future__ import annotations

import argparse
import ast
import importlib
import logging
import re
import shlex
from pathlib import Path

import pytest
import yaml

from stages.params import ParamsError, parse_params
from tests.conftest import DEFAULT_PARAMS, PROJECT, params_dict



def markdown_pages(root: Path = PROJECT) -> list[Path]:
    """The Markdown files the project documents itself in: the front page, its docs/ pages, the benchmarks."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md")), root / "BENCHMARKS.md"]


DOCUMENTED = [page.relative_to(PROJECT).as_posix() for page in markdown_pages()]
PLACEHOLDER = re.compile(r"<[^<>\n]+>")  # <its md5>, <repo>: stand for one argument
COMMAND = re.compile(r"^(dvc|python -m stages\.\w+)\s")
OVERRIDE_FLAGS = ("-S", "--set-param", "--set")  # dvc exp run's, and benchmarks/*.py's
GENERIC = {"key=value", "KEY=VALUE"}  # prose naming the syntax itself


def code_texts(markdown: str) -> list[str]:
    """Lines of fenced code blocks (continuations joined) and inline code spans of a Markdown text."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", markdown, flags=re.S | re.M)
    prose = re.sub(r"^```[^\n]*\n.*?^```", "", markdown, flags=re.S | re.M)
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    return lines + [span.replace("\n", " ") for span in re.findall(r"`([^`]+)`", prose)]


def docstring_texts(path) -> list[str]:
    tree = ast.parse(path.read_text())
    docs = [ast.get_docstring(node) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef))]
    # A usage line's [--optional args] are shown with their brackets: check them as if given.
    return [line.replace("[", "").replace("]", "")
            for doc in docs if doc for line in doc.replace("\\\n", " ").splitlines()]


def commands(texts: list[str]) -> list[list[str]]:
    """Each shell command in the texts that starts with `dvc` or `python -m stages.X`, as argv."""
    found = []
    for text in texts:
        text = PLACEHOLDER.sub("PLACEHOLDER", text.strip().lstrip("$ "))
        for part in re.split(r"&&|;|\|\|?", text):
            part = re.sub(r"^\s*(\w+=\S+\s+)+", "", part.strip())  # VAR=value prefixes
            if COMMAND.match(part + " "):
                found.append(shlex.split(part, comments=True))
    return found


def documented_texts() -> list[tuple[str, list[str]]]:
    """(where, code texts) of the Markdown docs and of the docstrings of stages/ and benchmarks/."""
    out = [(name, code_texts((PROJECT / name).read_text())) for name in DOCUMENTED]
    for path in sorted([*PROJECT.glob("stages/*.py"), *PROJECT.glob("benchmarks/*.py")]):
        out.append((path.relative_to(PROJECT).as_posix(), docstring_texts(path)))
    return out


def documented_commands() -> list[tuple[str, list[str]]]:
    return [(where, argv) for where, texts in documented_texts() for argv in commands(texts)]


def override_groups(texts: list[str]) -> list[list[str]]:
    """Per text (one command line), the KEY=VALUE after each -S / --set-param / --set, quotes removed."""
    groups = []
    for text in texts:
        text = PLACEHOLDER.sub("PLACEHOLDER", text)
        try:
            words = shlex.split(text, comments=True)
        except ValueError:  # prose with an apostrophe
            words = text.split()
        found = [value for flag, value in zip(words, words[1:]) if flag in OVERRIDE_FLAGS and value not in GENERIC]
        # benchmarks' --recipe NAME (not a placeholder such as RECIPE) is the recipe the --set values apply to
        found += [f"train.recipe={value}" for flag, value in zip(words, words[1:])
                  if flag == "--recipe" and re.fullmatch(r"[a-z0-9-]+", value) and found]
        if found:
            groups.append(found)
    return groups


def overrides(texts: list[str]) -> list[str]:
    return [override for group in override_groups(texts) for override in group]


def sweep_values(value: str) -> list:
    """The values of a `-S` value as DVC reads them (YAML), a Hydra sweep (a,b / range(a,b) / choice(a,b))
    expanded."""
    if m := re.fullmatch(r"range\((-?\d+),\s*(-?\d+)(?:,\s*(-?\d+))?\)", value):
        return list(range(int(m[1]), int(m[2]), int(m[3] or 1)))
    inner = m[1] if (m := re.fullmatch(r"choice\((.*)\)", value)) else value
    return [yaml.safe_load(inner)] if inner.startswith("[") else [yaml.safe_load(v) for v in inner.split(",")]


def key_problem(override: str) -> tuple[str, str, str | None]:
    """(key, value, what is wrong with the key or None) of KEY=VALUE, KEY dotted, optionally
    `params.yaml:KEY`, naming a value (not a group) of params.yaml."""
    key, sep, value = override.partition("=")
    if not sep:
        return key, value, "not KEY=VALUE"
    file, _, key = key.rpartition(":")
    if file not in ("", "params.yaml"):
        return key, value, f"{file}: not this project's params file"
    node = DEFAULT_PARAMS
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return key, value, f"{key}: no such key in params.yaml"
        node = node[part]
    return key, value, f"{key}: a group of params.yaml, not a value" if isinstance(node, dict) else None


def override_problem(override: str, along: list[str] = ()) -> str | None:
    """None when KEY=VALUE sets a value of params.yaml that parses and validates, each value of a
    sweep on its own, with the command's other valid-keyed overrides `along` applied too (keys that
    go in pairs, such as prepare.mean/std=train); else what is wrong."""
    context = {}
    for other in along:
        other_key, other_value, wrong = key_problem(other)
        if wrong is None and "PLACEHOLDER" not in other_value:
            context[other_key] = sweep_values(other_value)[0]
    key, value, wrong = key_problem(override)
    if wrong:
        return wrong
    if "PLACEHOLDER" in value:
        return None
    for one in sweep_values(value):
        try:
            parse_params(params_dict(**{**context, key: one}))
        except ParamsError as err:
            return f"{key}={one!r}: {str(err).splitlines()[1].strip()}"
    return None


class Parsed(Exception):
    """Raised in place of running a stage once its parser accepted the arguments."""


def dvc_accepts(argv: list[str]) -> str | None:
    """None when DVC's parser takes argv (without 'dvc'), else its complaint."""
    from dvc.cli import DvcParserError, parse_args

    logging.disable(logging.CRITICAL)  # DVC's log handler may hold a stream an earlier test's capture closed
    try:
        parse_args(argv)
    except (DvcParserError, SystemExit) as err:
        return f"DVC refuses it ({type(err).__name__})"
    finally:
        logging.disable(logging.NOTSET)
    return None


def stage_accepts(module: str, argv: list[str], monkeypatch) -> str | None:
    """None when the module's own argument parser takes argv, else why not."""
    real = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        real(self, args, namespace)
        raise Parsed

    try:
        main = importlib.import_module(module).main
    except ImportError as err:
        return f"no module {module}: {err}"
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    try:
        main(argv)
    except Parsed:
        return None
    except SystemExit as err:
        return f"its parser refuses it (exit {err.code})"
    finally:
        monkeypatch.setattr(argparse.ArgumentParser, "parse_args", real)
    return "main() returned without parsing arguments"


def check(argv: list[str], monkeypatch) -> str | None:
    if argv[0] == "dvc":
        return dvc_accepts(argv[1:])
    return stage_accepts(argv[2], argv[3:], monkeypatch)


def test_every_docs_page_is_read():
    pages = [where for where in DOCUMENTED if where.startswith("docs/")]
    assert len(pages) >= 10 and "docs/experiments.md" in pages and DOCUMENTED[0] == "README.md"
    read = {where for where, _ in documented_texts()}
    assert set(DOCUMENTED) <= read
    shown = {where for where, _ in documented_commands()}
    assert {"README.md", "docs/experiments.md", "docs/statistics.md", "docs/ci.md", "docs/parameters.md"} <= shown


def test_the_docs_show_commands_at_all():
    found = documented_commands()
    assert sum(argv[0] == "dvc" for _, argv in found) >= 15
    assert {"stages.predict", "stages.gate", "stages.evaluate"} <= {argv[2] for _, argv in found if argv[0] != "dvc"}
    assert any(where.startswith("stages/") for where, _ in found)  # docstrings are read too


def test_every_documented_command_parses(monkeypatch, capsys):
    failures = [f"{where}: {shlex.join(argv)}: {why}" for where, argv in documented_commands()
                if (why := check(argv, monkeypatch))]
    capsys.readouterr()
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("line, refused", [
    ("dvc exp run --no-run-cache", True),  # the README once advised this; DVC 3 has no such flag
    ("dvc repro --no-run-cache", False),
    ("dvc exp run -S train.optim.lr=0.01 -f", False),
    ("dvc metrics diff --show-md", True),
    ("python -m stages.gate --baseline m.json", False),
    ("python -m stages.gate --no-such-flag m.json", True),
    ("python -m stages.predict", True),  # needs at least one image
])
def test_the_checker_catches_refused_commands(line, refused, monkeypatch, capsys):
    (argv,) = commands([line])
    assert (check(argv, monkeypatch) is not None) == refused
    capsys.readouterr()


def test_commands_are_found_in_blocks_inline_code_and_chains():
    md = ("Run `dvc repro -f train` or\n\n```bash\n. .venv/bin/activate && dvc exp run \\\n  -S a=1  # note\n"
          "CIFAR_NPROC=4 dvc repro\npython -m stages.predict cat.jpg --top 3\n```\nand `dvc.yaml` is a file.\n")
    found = commands(code_texts(md))
    assert found == [["dvc", "exp", "run", "-S", "a=1"], ["dvc", "repro"],
                     ["python", "-m", "stages.predict", "cat.jpg", "--top", "3"], ["dvc", "repro", "-f", "train"]]


def test_the_docs_show_overrides_at_all():
    found = {where: overrides(texts) for where, texts in documented_texts()}
    markdown = [override for where in DOCUMENTED for override in found[where]]
    assert len(markdown) >= 15 and len(found["README.md"]) >= 3
    assert "train.recipe=cpu" in markdown and "train.numerics.seed=range(0,3)" in markdown
    assert any(found[where] for where in found if where.startswith("benchmarks/"))  # --set in usage lines


def test_every_documented_override_names_a_param_and_a_valid_value():
    failures = [f"{where}: {override}: {why}" for where, texts in documented_texts()
                for group in override_groups(texts) for i, override in enumerate(group)
                if (why := override_problem(override, group[:i] + group[i + 1:]))]
    assert not failures, "\n".join(failures)


def test_overrides_of_one_command_are_checked_together():
    (group,) = override_groups(["dvc exp run -S prepare.mean=train -S prepare.std=train"])
    assert [override_problem(o, [x for x in group if x != o]) for o in group] == [None, None]
    assert override_problem("prepare.mean=train").endswith("'train' must be set on both or neither")
    assert override_groups(["dvc exp run -S a=1", "`x` and prose", "python benchmarks/recipe.py --set b=2"]) == [
        ["a=1"], ["b=2"]]


def test_a_benchmark_s_recipe_is_the_one_its_overrides_are_checked_against():
    (group,) = override_groups(["python benchmarks/recipe.py --recipe cpu --set 'train.optim.freeze_last=[5, 2]'"])
    assert group == ["train.optim.freeze_last=[5, 2]", "train.recipe=cpu"]
    assert override_problem(group[0], group[1:]) is None
    assert "must be [] unless model.name is airbench" in override_problem(group[0])  # the default recipe: an MLP
    assert override_groups(["python benchmarks/recipe.py --recipe RECIPE --set evaluate.tta=airbench"]) == [
        ["evaluate.tta=airbench"]]


@pytest.mark.parametrize("line, problem", [
    ("dvc exp run -S train.recipe=resnet-cpu", None),
    ("dvc exp run --queue -S 'train.numerics.seed=range(0,3)'", None),
    ("dvc exp run -S params.yaml:train.optim.lr=0.005,0.02", None),
    ("dvc exp run -S data.md5=<its md5>", None),
    ("python benchmarks/recipe.py --set 'train.model.widths=[16,32,32]'", None),
    ("dvc exp run -S train.lr=0.01", "train.lr: no such key in params.yaml"),  # the flat keys of before
    ("dvc exp run -S recipes.cpu.lr=0.1", "recipes.cpu.lr: no such key in params.yaml"),
    ("python benchmarks/profile_step.py --set train.precision=bf16", "train.precision: no such key"),
    ("dvc exp run -S train.optim=3", "train.optim: a group of params.yaml, not a value"),
    ("dvc exp run -S train.augment.flip=true", "train.augment.flip=True: train.augment.flip: got True (bool); "
                                               "expected one of 'none', 'random', 'alternate'"),
    ("dvc exp run -S 'train.optim.lr=0.01,-1'", "train.optim.lr=-1: train.optim.lr: got -1.0; must be > 0"),
    ("dvc exp run -S train.recipe=gpu", "train.recipe='gpu': train.recipe: got 'gpu' (str); expected one of"),
    ("dvc exp run -S other.yaml:train.optim.lr=1", "other.yaml: not this project's params file"),
])
def test_the_override_checker_catches_unknown_keys_and_bad_values(line, problem):
    (override,) = overrides([line])
    got = override_problem(override)
    if problem is None:
        assert got is None, got
    else:
        assert got is not None and got.startswith(problem), got
