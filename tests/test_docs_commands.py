"""Every command the docs show runs as written: DVC's own parser accepts each `dvc ...` line of the
README (code blocks and inline code) and of the modules' docstrings, and each `python -m stages.X`
line parses with that module's own argument parser."""
from __future__ import annotations

import argparse
import ast
import importlib
import logging
import re
import shlex

import pytest

from tests.conftest import PROJECT

DOCUMENTED = ["README.md", "BENCHMARKS.md"]
PLACEHOLDER = re.compile(r"<[^<>\n]+>")  # <its md5>, <repo>: stand for one argument
COMMAND = re.compile(r"^(dvc|python -m stages\.\w+)\s")


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


def documented_commands() -> list[tuple[str, list[str]]]:
    out = [(name, argv) for name in DOCUMENTED for argv in commands(code_texts((PROJECT / name).read_text()))]
    for path in sorted([*PROJECT.glob("stages/*.py"), *PROJECT.glob("benchmarks/*.py")]):
        out += [(path.relative_to(PROJECT).as_posix(), argv) for argv in commands(docstring_texts(path))]
    return out


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
    ("dvc exp run -S train.lr=0.01 -f", False),
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
