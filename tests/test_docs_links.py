"""Every relative link and `#anchor` in the Markdown docs (README.md, docs/*.md, BENCHMARKS.md)
resolves: the file it names exists in the repository, and an anchor names a heading of that
page as GitHub writes heading anchors. Links inside code are not links; URLs are not fetched."""
from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.conftest import PROJECT
from tests.test_docs_commands import markdown_pages

FENCED = re.compile(r"^```[^\n]*\n.*?^```[^\n]*$", re.S | re.M)
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$", re.M)
HTML_ID = re.compile(r"<a\s[^>]*\b(?:id|name)=\"([^\"]+)\"", re.I)
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)
URL = re.compile(r"^([a-z][a-z0-9+.-]*:|//)", re.I)
LINE_ANCHOR = re.compile(r"L\d+(-L\d+)?")  # GitHub's line anchors of a source file
# What GitHub keeps of a heading's text in its anchor: letters, marks, digits, connector
# punctuation (the underscore), the hyphen and spaces (each space then becomes a hyphen).
SLUG_CATEGORIES = ("L", "M", "Nd", "Nl", "Pc")


def without_fences(markdown: str) -> str:
    """The text with fenced code blocks blanked (their lines kept empty, so line numbers hold)."""
    return FENCED.sub(lambda m: "\n" * m[0].count("\n"), markdown)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading (before numbering repeats): its rendered text lowercased,
    punctuation and symbols dropped, spaces turned into hyphens."""
    text = re.sub(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\([^)]*\)", r"\1", heading)  # a link shows its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("**", "")
    kept = "".join(ch for ch in text.lower()
                   if ch in "- " or unicodedata.category(ch).startswith(SLUG_CATEGORIES))
    return kept.replace(" ", "-")


def anchors(markdown: str) -> list[str]:
    """Every anchor of a page: its headings' slugs, a repeated one numbered -1, -2, ... as GitHub
    does, and explicit <a id/name> anchors."""
    text = without_fences(markdown)
    seen: dict[str, int] = {}
    found = []
    for _, heading in HEADING.findall(text):
        slug = github_slug(heading)
        found.append(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return found + HTML_ID.findall(text)


def link_targets(markdown: str) -> list[str]:
    """The targets of the page's inline and reference links and images, code left out."""
    prose = re.sub(r"`[^`]+`", "", without_fences(markdown))
    return INLINE_LINK.findall(prose) + REFERENCE_LINK.findall(prose)


def relative_links(page: Path) -> list[str]:
    return [target for target in link_targets(page.read_text()) if target and not URL.match(target)]


def link_problem(page: Path, target: str, root: Path) -> str | None:
    """None when a relative link of `page` resolves inside `root`, else what is wrong with it."""
    file_part, _, anchor = target.partition("#")
    file_part = unquote(file_part)
    if not file_part:
        dest = page
    elif file_part.startswith("/"):
        dest = root / file_part.lstrip("/")  # GitHub reads /x as the repository's root
    else:
        dest = page.parent / file_part
    dest = dest.resolve()
    if not dest.is_relative_to(root.resolve()):
        return f"{file_part}: outside the repository"
    if not dest.exists():
        return f"no such file {dest.relative_to(root.resolve()).as_posix()}"
    if not anchor:
        return None
    if dest.suffix == ".md":
        if anchor in anchors(dest.read_text()):
            return None
        return f"no heading with anchor #{anchor} in {dest.relative_to(root.resolve()).as_posix()}"
    if dest.is_file() and LINE_ANCHOR.fullmatch(anchor):
        return None
    return f"#{anchor}: not an anchor of {dest.relative_to(root.resolve()).as_posix()}"


def broken_links(pages: list[Path], root: Path) -> list[str]:
    return [f"{page.relative_to(root).as_posix()}: ({target}): {why}"
            for page in pages for target in relative_links(page)
            if (why := link_problem(page, target, root))]


def test_every_relative_link_and_anchor_of_the_docs_resolves():
    broken = broken_links(markdown_pages(), PROJECT)
    assert not broken, "\n".join(broken)


def test_the_docs_have_links_and_anchors_to_check():
    targets = [target for page in markdown_pages() for target in relative_links(page)]
    assert len(targets) >= 30
    assert sum("#" in target and not target.startswith("#") for target in targets) >= 10  # across pages
    assert any(target.startswith("../") for target in targets)  # from docs/ back up


def test_the_readme_links_to_every_docs_page():
    readme = PROJECT / "README.md"
    linked = {(readme.parent / target.partition("#")[0]).resolve() for target in relative_links(readme)}
    pages = sorted((PROJECT / "docs").glob("*.md"))
    assert len(pages) >= 10
    assert [page.name for page in pages if page.resolve() not in linked] == []


def test_the_checker_reports_each_broken_link(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Is this change real?\n\n## Run `dvc repro`: twice\n\n## Notes\n\n"
                                          "## Notes\n\nBack to [the front page](../README.md#top) or [top](#notes-1).\n")
    (tmp_path / "tool.py").write_text("print()\n")
    (tmp_path / "README.md").write_text(
        "# Top\n\nSee [a](docs/a.md), [b](docs/a.md#is-this-change-real), [c](docs/a.md#run-dvc-repro-twice),\n"
        "[d](docs/missing.md), [e](docs/a.md#no-such-heading), [f](#top), [g](#bottom),\n"
        "[h](tool.py#L3), [i](tool.py#main), [j](https://example.org/x.md#y), [k](../outside.md),\n"
        "[l](docs/a.md#Notes) and ![m](img.png).\n\n"
        "```bash\n[n](gone.md)\n# Bottom\n```\n\nInline `[o](gone.md)` is code.\n\n[p]: docs/gone.md\n")
    got = broken_links([tmp_path / "README.md", tmp_path / "docs" / "a.md"], tmp_path)
    assert got == [
        "README.md: (docs/missing.md): no such file docs/missing.md",
        "README.md: (docs/a.md#no-such-heading): no heading with anchor #no-such-heading in docs/a.md",
        "README.md: (#bottom): no heading with anchor #bottom in README.md",
        "README.md: (tool.py#main): #main: not an anchor of tool.py",
        "README.md: (../outside.md): ../outside.md: outside the repository",
        "README.md: (docs/a.md#Notes): no heading with anchor #Notes in docs/a.md",
        "README.md: (img.png): no such file img.png",
        "README.md: (docs/gone.md): no such file docs/gone.md",
    ]


@pytest.mark.parametrize("heading, slug", [
    ("Is this change real?", "is-this-change-real"),
    ("Metrics in DVC's cache", "metrics-in-dvcs-cache"),
    ("3b. The `resnet-cpu` recipe on both kinds of CPU: `precision: auto`",
     "3b-the-resnet-cpu-recipe-on-both-kinds-of-cpu-precision-auto"),
    ("Offline, or from a mirror", "offline-or-from-a-mirror"),
    ("A - B", "a---b"),  # every space becomes a hyphen, none are merged
    ("snake_case and [a link](x.md) **bold**", "snake_case-and-a-link-bold"),
    ("Ünïcode wörds 100%", "ünïcode-wörds-100"),
])
def test_github_slug(heading, slug):
    assert github_slug(heading) == slug


def test_anchors_number_repeated_headings_and_skip_code():
    page = "# Notes\n\n## Notes\n\n```\n# Notes\n```\n\n### Notes ##\n\n<a id=\"here\"></a>\n"
    assert anchors(page) == ["notes", "notes-1", "notes-2", "here"]
