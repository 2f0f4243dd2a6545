"""`train.numerics.precision: auto` picks bf16 only where the hardware runs it natively; the capability is faked."""
from __future__ import annotations

import json

import pytest

from stages import precision
from stages.precision import CpuBf16, choose_precision
from tests.test_train import SHORT, run_train

NATIVE = CpuBf16(avx512_bf16=True, amx=False, capability="AVX512", onednn_isa="")
AMX = CpuBf16(avx512_bf16=False, amx=True, capability="AVX512", onednn_isa="")
AVX2_ONLY = CpuBf16(avx512_bf16=False, amx=False, capability="AVX2", onednn_isa="")


@pytest.mark.parametrize("cpu, expected, why", [
    (NATIVE, "bf16", "native bf16 (AVX512-BF16"),
    (AMX, "bf16", "native bf16 (AMX"),
    (AVX2_ONLY, "fp32", "no native bf16"),
    # A chip with bf16 but PyTorch capped below it (how the AVX2 emulation in CI runs): fp32.
    (CpuBf16(True, True, "AVX2", ""), "fp32", "kernels are capped at AVX2"),
    (CpuBf16(True, False, "AVX512", "AVX2"), "fp32", "ONEDNN_MAX_CPU_ISA=AVX2"),
    (CpuBf16(True, False, "AVX512", "AVX512_CORE_BF16"), "bf16", "native bf16"),
])
def test_auto_on_the_cpu_follows_native_bf16(cpu, expected, why):
    chosen, reason = choose_precision("auto", "cpu", cpu=cpu)
    assert chosen == expected and why in reason


@pytest.mark.parametrize("supported, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_on_cuda_follows_the_device(supported, expected):
    assert choose_precision("auto", "cuda", cuda_bf16=supported)[0] == expected


@pytest.mark.parametrize("requested", ["fp32", "bf16"])
def test_an_explicit_precision_is_kept_everywhere(requested):
    for cpu in (NATIVE, AVX2_ONLY):
        assert choose_precision(requested, "cpu", cpu=cpu) == (requested, "set in params")
    assert choose_precision(requested, "cuda", cuda_bf16=False)[0] == requested


def test_probe_reads_the_environment_cap(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")
    assert precision.probe_cpu().onednn_isa == "AVX2"


@pytest.mark.parametrize("cpu, expected", [(NATIVE, "bf16"), (AVX2_ONLY, "fp32")])
def test_train_logs_and_records_the_effective_precision(tmp_path, prepared, monkeypatch, caplog, cpu, expected):
    monkeypatch.setattr(precision, "probe_cpu", lambda: cpu)
    with caplog.at_level("INFO", logger="stages"):
        out = run_train(tmp_path, prepared, **SHORT, **{"train.numerics.precision": "auto"})
    assert f"precision {expected} (train.numerics.precision auto: " in caplog.text
    assert json.loads(out["train.json"].read_text())["precision"] == expected
    assert json.loads(out["model.json"].read_text())["train_params"]["numerics"]["precision"] == expected


def test_the_recipes_use_auto():
    from tests.conftest import DEFAULT_PARAMS

    recipes = DEFAULT_PARAMS["recipes"]
    assert {name: recipes[name]["numerics"]["precision"] for name in ("resnet-cpu", "cpu", "fast-gpu")} == {
        "resnet-cpu": "auto", "cpu": "auto", "fast-gpu": "auto"}
    assert recipes["tutorial"]["numerics"]["precision"] == "fp32"  # the tutorial's own numerics
