"""device `auto` on a CUDA build of torch that finds no GPU: the CPU, and one log line saying why."""
from __future__ import annotations

import logging
import types
import warnings

import pytest

from stages.common import StageError, choose_device

TOO_OLD = ("CUDA initialization: The NVIDIA driver on your system is too old (found version 12040). "
           "Please update your GPU driver by downloading and installing a new version from the URL: "
           "http://www.nvidia.com/Download/index.aspx Alternatively, go to: https://pytorch.org to install a "
           "PyTorch version that has been compiled with your version of the CUDA driver.")


def fake_torch(cuda_build: str | None, available: bool, warning: str | None = None) -> types.SimpleNamespace:
    """A torch stand-in: torch.version.cuda, and a cuda.is_available() that warns as torch's does."""
    def is_available() -> bool:
        if warning:
            warnings.warn(warning, UserWarning, stacklevel=2)
        return available

    return types.SimpleNamespace(__version__="2.14.1", version=types.SimpleNamespace(cuda=cuda_build),
                                 cuda=types.SimpleNamespace(is_available=is_available, device_count=lambda: 1))


def test_auto_on_a_cuda_build_with_an_old_driver_logs_torchs_reason(caplog):
    with caplog.at_level(logging.WARNING, logger="stages"), warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's own warning is folded into the log line, not repeated
        assert choose_device("auto", fake_torch("13.0", False, TOO_OLD)).type == "cpu"
    [record] = caplog.records
    assert record.getMessage() == ("device auto: using the CPU, although torch 2.14.1 is built for CUDA 13.0: "
                                   "The NVIDIA driver on your system is too old (found version 12040)")


def test_auto_on_a_cuda_build_without_a_gpu_says_so(caplog, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with caplog.at_level(logging.WARNING, logger="stages"):
        assert choose_device("auto", fake_torch("13.0", False)).type == "cpu"
    assert [r.getMessage() for r in caplog.records] == [
        "device auto: using the CPU, although torch 2.14.1 is built for CUDA 13.0: no NVIDIA GPU or driver found"]

    caplog.clear()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with caplog.at_level(logging.WARNING, logger="stages"):
        choose_device("auto", fake_torch("13.0", False))
    assert caplog.records[0].getMessage().endswith("no GPU visible (CUDA_VISIBLE_DEVICES='')")


@pytest.mark.parametrize("cuda_build, available", [(None, False), ("13.0", True)])
def test_auto_says_nothing_on_a_cpu_build_or_with_a_gpu(caplog, cuda_build, available):
    with caplog.at_level(logging.DEBUG, logger="stages"):
        device = choose_device("auto", fake_torch(cuda_build, available))
    assert device.type == ("cuda" if available else "cpu")
    assert not caplog.records


def test_an_explicit_cuda_device_keeps_torchs_warning():
    with pytest.warns(UserWarning, match="driver on your system is too old"), pytest.raises(StageError, match="no CUDA GPU here"):
        choose_device("cuda", fake_torch("13.0", False, TOO_OLD))
