"""Stage 1 (download): fetch, md5 check, extraction, and the atomic `--out` folder."""
from __future__ import annotations

import functools
import hashlib
import re
import subprocess
import sys
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from stages import cifar, download
from stages.cifar import ARCHIVE_NAME, REQUIRED_FILES
from stages.common import StageError, run_stage
from tests.cifar_archive import ROOT, fake_official_md5s, official_members, write_archive
from tests.conftest import PROJECT

EXPECTED_FILES = sorted([*REQUIRED_FILES, "readme.html"])
CLOSED_PORT_URL = "http://127.0.0.1:9/cifar-10-python.tar.gz"


@pytest.fixture(scope="module")
def members() -> dict[str, bytes]:
    """The members of the session `archive` fixture (same arguments, deterministic)."""
    return official_members(train_per_class=20, test_per_class=5)


@pytest.fixture
def out(tmp_path) -> Path:
    """The --out folder, alone in its parent so leftovers there are easy to see."""
    return tmp_path / "data" / "raw"


def run(params: Path, out: Path) -> None:
    download.main(["--params", str(params), "--out", str(out)])


def bad_file(tmp_path, payload: bytes) -> tuple[str, str]:
    """Write payload as a mirror's archive; return (url, md5) that pass the md5 check."""
    path = tmp_path / "mirror" / ARCHIVE_NAME
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(payload)
    return str(path), hashlib.md5(payload).hexdigest()


def assert_nothing_left(out: Path) -> None:
    assert not out.exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def assert_batches(out: Path, members: dict[str, bytes]) -> None:
    assert sorted(p.name for p in out.iterdir()) == EXPECTED_FILES
    for name in EXPECTED_FILES:
        assert (out / name).read_bytes() == members[ROOT + name], name


# --- success ---------------------------------------------------------------

def test_local_path_extracts_exactly_the_batch_files(archive_params, out, members):
    run(archive_params(), out)
    assert_batches(out, members)
    assert [p.name for p in out.parent.iterdir()] == ["raw"]  # no .raw.*.tmp left


def test_file_url_extracts_exactly_the_batch_files(archive_params, archive, out, members):
    path, _ = archive
    run(archive_params(**{"data.url": path.as_uri()}), out)
    assert_batches(out, members)
    assert [p.name for p in out.parent.iterdir()] == ["raw"]


def test_mirror_with_other_file_name_is_copied_under_the_archive_name(tmp_path, archive):
    path, _ = archive
    mirror = tmp_path / "mirror.tgz"
    mirror.write_bytes(path.read_bytes())
    dest = tmp_path / "dest"
    dest.mkdir()
    got = download.fetch(str(mirror), dest)
    assert got == dest / ARCHIVE_NAME
    assert got.read_bytes() == path.read_bytes()


@pytest.fixture
def http_mirror(archive):
    """An http server on 127.0.0.1 serving the archive's folder; yields its base URL."""
    path, _ = archive

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(path.parent)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_http_url_downloads_and_extracts(archive_params, http_mirror, out, members):
    run(archive_params(**{"data.url": f"{http_mirror}/{ARCHIVE_NAME}"}), out)
    assert_batches(out, members)
    assert [p.name for p in out.parent.iterdir()] == ["raw"]


def test_http_404_is_a_stage_error(archive_params, http_mirror, out):
    url = f"{http_mirror}/missing.tar.gz"
    with pytest.raises(StageError, match=rf"data\.url '{re.escape(url)}': download failed: .*404"):
        run(archive_params(**{"data.url": url}), out)
    assert_nothing_left(out)


def test_new_run_replaces_a_previous_out_entirely(archive_params, out, members):
    out.mkdir(parents=True)
    (out / "stale_file").write_text("from an older run")
    run(archive_params(), out)
    assert_batches(out, members)  # stale_file is gone
    assert [p.name for p in out.parent.iterdir()] == ["raw"]


# --- small functions -------------------------------------------------------

@pytest.mark.parametrize("url, expected", [
    ("/data/cifar-10-python.tar.gz", Path("/data/cifar-10-python.tar.gz")),
    ("mirror/cifar.tgz", Path("mirror/cifar.tgz")),
    ("file:///data/my%20mirror/c.tar.gz", Path("/data/my mirror/c.tar.gz")),
    ("file://localhost/data/c.tar.gz", Path("/data/c.tar.gz")),
    ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", None),
    ("http://127.0.0.1:8000/c.tar.gz", None),
    ("ftp://example.org/c.tar.gz", None),
])
def test_local_source(url, expected):
    assert download.local_source(url) == expected


def test_local_source_expands_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert download.local_source("~/c.tar.gz") == tmp_path / "c.tar.gz"


def test_verify_md5_accepts_the_right_md5(archive):
    path, md5 = archive
    download.verify_md5(path, md5, "URL")  # no error


def test_verify_md5_names_expected_found_and_size(archive):
    path, md5 = archive
    wrong = "0" * 32
    size = path.stat().st_size
    with pytest.raises(StageError, match=rf"^URL: md5 mismatch: expected {wrong} \(data\.md5\), "
                                         rf"found {md5} \({size} bytes\)"):
        download.verify_md5(path, wrong, "URL")


def test_extract_returns_the_batch_folder(tmp_path, archive, members):
    path, _ = archive
    batches = download.extract(path, tmp_path / "x", "URL")
    assert batches == tmp_path / "x" / "cifar-10-batches-py"
    assert sorted(p.name for p in batches.iterdir()) == EXPECTED_FILES


# --- failures: StageError, nothing left at --out or beside it --------------

def test_md5_mismatch_names_both_md5s(archive_params, archive, out, tmp_path):
    path, md5 = archive
    other = official_members(train_per_class=20, test_per_class=5)
    other[ROOT + "readme.html"] = b"<p>a different file</p>\n"
    other_path = tmp_path / "mirror" / ARCHIVE_NAME
    found = write_archive(other_path, other)
    assert found != md5
    with pytest.raises(StageError, match=rf"md5 mismatch: expected {md5} \(data\.md5\), found {found}"):
        run(archive_params(**{"data.url": str(other_path)}), out)
    assert_nothing_left(out)


def test_wrong_md5_param_names_both_md5s(archive_params, archive, out):
    _, md5 = archive
    wrong = "f" * 32
    with pytest.raises(StageError, match=rf"expected {wrong} \(data\.md5\), found {md5}"):
        run(archive_params(**{"data.md5": wrong}), out)
    assert_nothing_left(out)


@pytest.mark.parametrize("as_uri", [False, True])
def test_missing_local_file(archive_params, out, tmp_path, as_uri):
    missing = tmp_path / "nowhere" / ARCHIVE_NAME
    url = missing.as_uri() if as_uri else str(missing)
    with pytest.raises(StageError, match=rf"data\.url '{re.escape(url)}': "
                                         rf"no such file '{re.escape(str(missing))}'"):
        run(archive_params(**{"data.url": url}), out)
    assert_nothing_left(out)


def test_unreachable_http_url_fails_fast(archive_params, out):
    start = time.monotonic()
    with pytest.raises(StageError, match=rf"data\.url '{re.escape(CLOSED_PORT_URL)}': download failed: "
                                         r".*(refused|Errno).*Offline\? .*set data\.url to its path") as err:
        run(archive_params(**{"data.url": CLOSED_PORT_URL}), out)
    assert time.monotonic() - start < 10
    page, section = re.search(r'(docs/[\w-]+\.md), section "([^"]+)"', str(err.value)).groups()
    assert re.search(rf"^#+ {re.escape(section)}$", (PROJECT / page).read_text(), re.M)  # the hint names a real section
    assert_nothing_left(out)


def test_unsupported_scheme(archive_params, out):
    url = "ftp://example.org/cifar-10-python.tar.gz"
    with pytest.raises(StageError, match=rf"data\.url '{re.escape(url)}': unsupported scheme; "
                                         r"use http\(s\)://, file:// or a local path"):
        run(archive_params(**{"data.url": url}), out)
    assert_nothing_left(out)


def test_truncated_archive(archive_params, archive, out, tmp_path):
    path, _ = archive
    data = path.read_bytes()
    url, md5 = bad_file(tmp_path, data[: len(data) // 2])
    with pytest.raises(StageError, match=rf"^{re.escape(url)}: cannot extract as a gzip-compressed tar archive "
                                         r"\((EOFError|ReadError|BadGzipFile|error): .*truncated"):
        run(archive_params(**{"data.url": url, "data.md5": md5}), out)
    assert_nothing_left(out)


@pytest.mark.parametrize("payload, found", [
    (b"<html>Moved: please log in</html>\n", "not a gzip file"),
    (b"", "empty file"),
])
def test_not_a_gzip_file(archive_params, out, tmp_path, payload, found):
    url, md5 = bad_file(tmp_path, payload)
    with pytest.raises(StageError, match=rf"^{re.escape(url)}: cannot extract as a gzip-compressed tar archive "
                                         rf"\(ReadError: {found}\)"):
        run(archive_params(**{"data.url": url, "data.md5": md5}), out)
    assert_nothing_left(out)


def test_archive_without_test_batch(archive_params, out, tmp_path):
    members = official_members(train_per_class=1, test_per_class=1)
    del members[ROOT + "test_batch"]
    path = tmp_path / "mirror" / ARCHIVE_NAME
    md5 = write_archive(path, members)
    with pytest.raises(StageError, match=r"archive lacks cifar-10-batches-py/test_batch; it holds \["):
        run(archive_params(**{"data.url": str(path), "data.md5": md5}), out)
    assert_nothing_left(out)


@pytest.mark.parametrize("extra", [ROOT + "data_batch_6", "notes.txt", ROOT + "sub/data_batch_1"])
def test_archive_with_an_extra_member_is_refused(archive_params, out, tmp_path, extra):
    members = official_members(train_per_class=1, test_per_class=1)
    members[extra] = b"unexpected"
    path = tmp_path / "mirror" / ARCHIVE_NAME
    md5 = write_archive(path, members)
    with pytest.raises(StageError, match=rf"archive holds unexpected member\(s\) \['{re.escape(extra)}'\]"):
        run(archive_params(**{"data.url": str(path), "data.md5": md5}), out)
    assert_nothing_left(out)


def test_archive_with_another_layout_lists_what_it_holds(archive_params, out, tmp_path):
    path = tmp_path / "mirror" / ARCHIVE_NAME
    md5 = write_archive(path, {"cifar-100-python/train": b"x", "cifar-100-python/meta": b"y"})
    with pytest.raises(StageError) as err:
        run(archive_params(**{"data.url": str(path), "data.md5": md5}), out)
    message = str(err.value)
    assert "archive lacks " + ", ".join(f"cifar-10-batches-py/{n}" for n in REQUIRED_FILES) in message
    assert "'cifar-100-python/meta', 'cifar-100-python/train'" in message
    assert_nothing_left(out)


def test_archive_member_cannot_escape_the_temporary_folder(archive_params, out, tmp_path):
    members = official_members(train_per_class=1, test_per_class=1)
    members[ROOT + "../../../escaped.txt"] = b"written outside\n"  # resolves to out's parent
    path = tmp_path / "mirror" / ARCHIVE_NAME
    md5 = write_archive(path, members)
    with pytest.raises(StageError, match=r"cannot extract.*escaped\.txt"):
        run(archive_params(**{"data.url": str(path), "data.md5": md5}), out)
    assert "escaped.txt" not in [p.name for p in out.parent.iterdir()]
    assert_nothing_left(out)


def test_failed_run_keeps_the_previous_out_untouched(archive_params, archive, out, members):
    """atomic_path renames only on success: a failed run leaves the finished folder as it was."""
    run(archive_params(), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(StageError, match="md5 mismatch"):
        run(archive_params(**{"data.md5": "0" * 32}), out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in out.parent.iterdir()] == ["raw"]


def test_run_stage_exits_with_one_line_error(archive_params, out):
    argv = ["--params", str(archive_params(**{"data.md5": "0" * 32})), "--out", str(out)]
    with pytest.raises(SystemExit) as exit_info:
        run_stage("download", download.main, argv)
    code = exit_info.value.code
    assert isinstance(code, str)  # sys.exit(str) prints it and exits with status 1
    assert code.startswith("download: error: ")
    assert "md5 mismatch" in code and "\n" not in code
    assert_nothing_left(out)


# --- official batch files or a mirror's ---------------------------------------

def test_tiny_archive_is_a_mirror_whose_every_batch_file_differs(archive_params, out, caplog):
    caplog.set_level("INFO", logger="stages")
    run(archive_params(), out)
    assert ("a mirror whose batches.meta, data_batch_1, data_batch_2, data_batch_3, data_batch_4, data_batch_5, "
            "test_batch differ from the official files") in caplog.text


@pytest.mark.parametrize("changed, said", [
    ((), "these are the official CIFAR-10 batch files (their md5s match torchvision's CIFAR10 list)"),
    (("data_batch_3", "test_batch"), "a mirror whose data_batch_3, test_batch differ from the official files"),
    (("batches.meta",), "a mirror whose batches.meta differs from the official files"),
])
def test_batch_files_are_compared_with_the_official_md5s(archive_params, out, members, monkeypatch, caplog,
                                                         changed, said):
    # the tiny archive's own md5s play the official list, but for `changed`
    monkeypatch.setattr(cifar, "official_md5s", lambda: fake_official_md5s(members, changed))
    caplog.set_level("INFO", logger="stages")
    run(archive_params(), out)
    assert said in caplog.text
    assert_batches(out, members)


def test_official_list_is_torchvision_cifar10s():
    from torchvision.datasets import CIFAR10

    official = cifar.official_md5s()  # written out in stages/cifar.py, so download never imports torchvision
    assert set(official) == set(REQUIRED_FILES)
    listed = [*CIFAR10.train_list, *CIFAR10.test_list, (CIFAR10.meta["filename"], CIFAR10.meta["md5"])]
    assert official == dict(listed)
    assert official["test_batch"] == "40351d587109b95175f43aff81a1287e"  # the file every CIFAR-10 paper tests on


@pytest.mark.e2e  # a Python process of its own: this one has torch loaded already
def test_the_stage_starts_without_importing_torch():
    # torch and torchvision take about 5 s to import on 2 cores; only an http(s) download needs torchvision
    check = ("import sys, stages.download; "
             "assert not {'torch', 'torchvision'} & set(sys.modules), sorted(m for m in sys.modules if 'torch' in m)")
    result = subprocess.run([sys.executable, "-c", check], cwd=PROJECT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
