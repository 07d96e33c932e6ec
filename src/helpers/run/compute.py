"""Where the arithmetic runs: bf16 autocast only where the hardware has it, and each network on
the training path measured fastest for it.

A profile's ``bf16`` asks for bf16 autocast. On a CPU without AVX512-BF16 or AMX, PyTorch emulates
bf16 in software, and a training step then takes 10 to 20 times as long as in float32 (measured on
an AVX2-only CPU: the smoke UNet 501 ms against 45 ms per step, ``hrnet_w18_small`` 4.4 s against
0.25 s). So the request is honoured only where :func:`bf16_supported` says the device computes bf16
natively; elsewhere the networks run in float32 and the run manifest records it.

Which of the paths (naive float32 NCHW, channels_last, bf16, bf16 + channels_last) trains a given
network fastest depends on the network and the hardware: on one machine channels_last sped HRNet up
and slowed EfficientNet-B4 down. :data:`TABLE` (``fast_path.csv`` beside this module) holds the
path ``python scripts/bench.py --write-table`` measured fastest per hardware class
(:func:`hardware`) and network; :func:`for_network` applies it to a profile. A network measured on
this hardware never trains on a path slower than naive; one not measured here keeps the profile's
request (bf16 still only where the hardware has it).
"""
from __future__ import annotations

import csv
import dataclasses
import functools
from pathlib import Path

#: the measured fastest training path per hardware class and network (scripts/bench.py writes it)
TABLE = Path(__file__).with_name("fast_path.csv")
TABLE_COLUMNS = ["hardware", "network", "path", "train_speedup", "measured_utc", "revision"]
#: each path as (channels_last, bf16)
PATHS = {"naive": (False, False), "channels_last": (True, False), "bf16": (False, True),
         "bf16+channels_last": (True, True)}


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


def fused_optimizer(device: str = "cpu") -> dict:
    """Keyword arguments that make a ``torch.optim.SGD`` or ``Adam`` take its step as one fused
    kernel over all parameters instead of a Python loop over them (the same update; on the
    2-core machine it made an HRNet training step about 5 % faster, docs/measurements.md). The
    UNet's Adam takes it; the classifiers' SGD takes :func:`helpers.run.flatsgd.make`, which uses
    it off CPU; the naive reference of ``scripts/bench.py`` takes neither."""
    import torch

    device_type = "cuda" if str(device).startswith("cuda") else "cpu"
    if device_type == "cuda" and not torch.cuda.is_available():
        return {}
    return {"fused": True}


def hardware(device: str = "cpu") -> str:
    """The hardware class the fast-path table is keyed by: ``cuda``, ``cpu-bf16`` (a CPU that
    computes bf16 natively) or ``cpu``."""
    if str(device).startswith("cuda"):
        return "cuda"
    return "cpu-bf16" if bf16_supported("cpu") else "cpu"


@functools.lru_cache(maxsize=None)
def _table(path: str) -> dict[tuple[str, str], str]:
    p = Path(path)
    if not p.is_file():
        return {}
    with open(p, newline="") as fh:
        rows = list(csv.DictReader(fh))
    bad = [r.get("path") for r in rows if r.get("path") not in PATHS]
    if bad:
        raise ValueError(f"{p}: unknown training path(s) {bad}; known: {list(PATHS)}")
    return {(r["hardware"], r["network"]): r["path"] for r in rows}


def fast_path(network: str, device: str = "cpu", table: Path | None = None) -> str | None:
    """The training path measured fastest for ``network`` on this hardware (a key of
    :data:`PATHS`), or None when it was not measured here."""
    return _table(str(table or TABLE)).get((hardware(device), str(network)))


def for_network(profile, network: str, device: str = "cpu", table: Path | None = None):
    """``profile`` with ``channels_last`` and ``bf16`` as the measured path of ``network`` on this
    hardware allows (a profile that turns one off keeps it off); unchanged when the network was
    not measured here."""
    path = fast_path(network, device, table)
    if path is None:
        return profile
    cl, bf = PATHS[path]
    return dataclasses.replace(profile, channels_last=bool(profile.channels_last and cl),
                               bf16=bool(profile.bf16 and bf))
