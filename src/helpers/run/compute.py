"""Where the arithmetic runs: bf16 autocast only where the hardware has it.

A profile's ``bf16`` asks for bf16 autocast. On a CPU without AVX512-BF16 or AMX, PyTorch emulates
bf16 in software, and a training step then takes 10 to 20 times as long as in float32 (measured on
an AVX2-only CPU: the smoke UNet 501 ms against 45 ms per step, ``hrnet_w18_small`` 4.4 s against
0.25 s). So the request is honoured only where :func:`bf16_supported` says the device computes bf16
natively; elsewhere the networks run in float32 and the run manifest records it.
"""
from __future__ import annotations

import functools


@functools.lru_cache(maxsize=None)
def bf16_supported(device: str = "cpu") -> bool:
    """Whether bf16 autocast runs in hardware on ``device`` (CUDA bf16, or CPU AVX512-BF16 / AMX)."""
    import torch

    if str(device).startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def uses_bf16(device: str, requested: bool) -> bool:
    """bf16 autocast is used when the profile asks for it and the device computes it natively."""
    return bool(requested) and bf16_supported(device)


def autocast(device: str, bf16: bool):
    """``torch.autocast`` in bf16 when :func:`uses_bf16`, else a disabled autocast (float32)."""
    import torch

    device_type = "cuda" if str(device).startswith("cuda") else "cpu"
    if uses_bf16(device, bf16):
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
    return torch.autocast(device_type=device_type, enabled=False)
