"""`train.numerics.precision: auto`: bf16 autocast where the hardware runs it natively, fp32 elsewhere.

Without native bf16 a CPU emulates it through fp32 conversions: measured on two 2-core
AVX2-only machines, one step of the `resnet-cpu` recipe ran 10x and 14x slower in bf16 than in
fp32 (BENCHMARKS.md, section 3b). So `auto` asks for bf16 only where it is fast: a CUDA device that
supports it, or a CPU with AVX512-BF16 or AMX whose kernels are allowed to use them
(`ATEN_CPU_CAPABILITY` and `ONEDNN_MAX_CPU_ISA` can cap PyTorch below what the chip has).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) that still allow native bf16 instructions.
BF16_ONEDNN_ISAS = ("ALL", "DEFAULT", "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX",
                    "AVX512_CORE_AMX_FP16", "AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16")


@dataclasses.dataclass(frozen=True)
class CpuBf16:
    """What decides whether this CPU runs bf16 natively; `probe_cpu` reads it from torch and the environment."""

    avx512_bf16: bool  # the chip has AVX512-BF16 instructions
    amx: bool  # the chip has AMX tiles
    capability: str  # the kernel set ATen dispatches to: AVX512, AVX2, DEFAULT, ...
    onednn_isa: str  # ONEDNN_MAX_CPU_ISA, "" when unset


def probe_cpu(torch_module: Any = None) -> CpuBf16:
    import torch

    torch_module = torch_module or torch
    return CpuBf16(avx512_bf16=bool(torch_module.cpu._is_avx512_bf16_supported()),
                   amx=bool(torch_module.cpu._is_amx_tile_supported()),
                   capability=str(torch_module.backends.cpu.get_cpu_capability()),
                   onednn_isa=os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper())


def choose_precision(requested: str, device_type: str, cpu: CpuBf16 | None = None,
                     cuda_bf16: bool | None = None) -> tuple[str, str]:
    """(effective precision, why) for a `train.numerics.precision` value on a device type.

    `cpu` and `cuda_bf16` default to what this machine reports; tests pass them in.
    """
    if requested != "auto":
        return requested, "set in params"
    if device_type == "cuda":
        import torch

        ok = torch.cuda.is_bf16_supported() if cuda_bf16 is None else cuda_bf16
        return ("bf16", "the CUDA device supports bf16") if ok else ("fp32", "the CUDA device lacks bf16")
    if device_type != "cpu":
        return "fp32", f"bf16 autocast is not chosen automatically on {device_type}"
    cpu = cpu or probe_cpu()
    if not (cpu.avx512_bf16 or cpu.amx):
        return "fp32", f"this CPU has no native bf16 (no AVX512-BF16 or AMX; kernels {cpu.capability})"
    if not cpu.capability.startswith("AVX512"):
        return "fp32", f"the CPU has native bf16 but PyTorch's kernels are capped at {cpu.capability}"
    if cpu.onednn_isa and cpu.onednn_isa not in BF16_ONEDNN_ISAS:
        return "fp32", f"the CPU has native bf16 but ONEDNN_MAX_CPU_ISA={cpu.onednn_isa} caps oneDNN below it"
    return "bf16", f"this CPU has native bf16 ({'AMX' if cpu.amx else 'AVX512-BF16'}, kernels {cpu.capability})"
