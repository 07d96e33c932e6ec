"""Training and inference throughput of every network of a profile: naive against the fast path.

Not part of the paper. ``python scripts/bench.py [--profile cpu] [--csv PATH] [--steps N]
[--models a,b] [--compile]`` builds each classifier of the profile (``hrnet``, the Table 7
``baselines`` and the ``audit_model``) at the profile's ``cls_size`` and batch ``cls_batch``,
and times, after ``--warmup`` untimed steps, ``--steps`` training steps (SGD as in
:func:`helpers.train.train_step`) and ``--steps`` inference batches, each step timed alone;
images/s come from the median step (the machine is shared: a median ignores the steps another
process interrupted). Two or three modes:

``naive``     float32, NCHW, eager, the batch converted to float32 in numpy (the old
              ``to_input``), default threads;
``fast``      what :mod:`helpers.train` runs: bf16 autocast where the device supports it,
              channels_last, uint8 batches converted on the torch side
              (:func:`helpers.train.to_input`) from a preallocated uint8 buffer, threads set to
              the cores this process may use;
``compiled``  ``fast`` plus ``torch.compile`` (only with ``--compile``; compile time is reported
              separately as ``first_step_s``). Training uses it only where it pays off.

Writes one CSV row per network and mode (images/s and the ratio to ``naive``) and prints the
table. Images are random uint8 noise: throughput does not depend on content.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from helpers import config, models, train
from helpers.run import compute

COLUMNS = ["model", "mode", "size", "batch", "steps", "threads", "bf16", "channels_last", "compiled",
           "first_step_s", "train_img_s", "infer_img_s", "train_speedup", "infer_speedup"]


def networks(profile) -> list[str]:
    """The profile's classifiers, each once: HRNet, the baselines, the audit CNN."""
    return list(dict.fromkeys([profile.hrnet, *profile.baselines, profile.audit_model]))


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def naive_input(imgs: np.ndarray, device: str) -> torch.Tensor:
    """The old input path: float32 conversion in numpy, NCHW (for comparison only)."""
    x = torch.from_numpy(np.ascontiguousarray(imgs, dtype=np.float32) / 255.0)
    x = ((x - train.MEAN) / train.STD).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
    return x.to(device)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def bench_model(profile, name: str, mode: str, steps: int = 3, warmup: int = 1, device: str = "cpu",
                seed: int = 0, infer_batch: int = 64) -> dict:
    """Time ``steps`` training steps and ``steps`` inference batches of one network in one mode."""
    if mode not in ("naive", "fast", "compiled"):
        raise ValueError(f"mode must be naive, fast or compiled, got {mode!r}")
    fast = mode != "naive"
    size, batch = profile.cls_size, profile.cls_batch
    bf16 = fast and compute.bf16_supported(device)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (max(batch, infer_batch) * 2, size, size), dtype=np.uint8)
    y = torch.from_numpy((np.arange(batch) % 2).astype(np.float32)).unsqueeze(1).to(device)
    model = models.make_classifier(name, hidden=profile.head_hidden, dropout=profile.head_dropout).to(device)
    if fast:
        model = model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if mode == "compiled" else model
    opt = torch.optim.SGD(model.parameters(), lr=profile.cls_lr, momentum=profile.momentum,
                          weight_decay=profile.weight_decay)
    buf = np.empty((batch, size, size), np.uint8)  # the fast path's preallocated uint8 batch

    def batch_input(n: int) -> torch.Tensor:
        idx = rng.integers(0, len(images), n)
        if not fast:
            return naive_input(images[idx], device)
        out = buf if n == batch else np.empty((n, size, size), np.uint8)
        np.take(images, idx, axis=0, out=out)
        return train.to_input(torch.from_numpy(out), device, channels_last=True)

    def train_once() -> None:
        if fast:
            train.train_step(net, opt, batch_input(batch), y, device, bf16)
        else:
            loss = F.binary_cross_entropy_with_logits(net(batch_input(batch)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def timed(fn, n: int) -> list[float]:
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            _sync(device)
            out.append(time.perf_counter() - t0)
        return out

    model.train()
    first = timed(train_once, 1)[0]
    timed(train_once, max(warmup - 1, 0))
    train_s = float(np.median(timed(train_once, steps)))

    model.eval()
    with torch.no_grad(), compute.autocast(device, bf16):
        timed(lambda: net(batch_input(infer_batch)), max(warmup, 1))
        infer_s = float(np.median(timed(lambda: net(batch_input(infer_batch)).float(), steps)))
    return dict(model=name, mode=mode, size=size, batch=batch, steps=steps, threads=torch.get_num_threads(),
                bf16=bf16, channels_last=fast, compiled=mode == "compiled", first_step_s=round(first, 3),
                train_img_s=batch / train_s, infer_img_s=infer_batch / infer_s)


def run(profile, model_names: list[str] | None = None, steps: int = 3, warmup: int = 1,
        compile: bool = False, device: str = "cpu", threads: int | None = None) -> pd.DataFrame:
    """Bench every network (or ``model_names``) in every mode; columns :data:`COLUMNS`."""
    torch.set_num_threads(threads or usable_cores())
    names = model_names or networks(profile)
    modes = ["naive", "fast"] + (["compiled"] if compile else [])
    rows = []
    for name in names:
        for mode in modes:
            rows.append(bench_model(profile, name, mode, steps, warmup, device))
            r = rows[-1]
            print(f"{name:>18} {mode:>8}: train {r['train_img_s']:7.1f} img/s, "
                  f"inference {r['infer_img_s']:7.1f} img/s", flush=True)
    df = pd.DataFrame(rows)
    base = df[df["mode"] == "naive"].set_index("model")
    df["train_speedup"] = df["train_img_s"] / df["model"].map(base["train_img_s"])
    df["infer_speedup"] = df["infer_img_s"] / df["model"].map(base["infer_img_s"])
    return df[COLUMNS]


def table(df: pd.DataFrame) -> pd.DataFrame:
    """Wide view: one row per network, images/s per mode and the ratios to naive."""
    w = df.pivot(index="model", columns="mode", values=["train_img_s", "infer_img_s"])
    w.columns = [f"{m} {k.replace('_img_s', '')} img/s" for k, m in w.columns]
    for kind in ("train", "infer"):
        for m in [c for c in df["mode"].unique() if c != "naive"]:
            w[f"{kind} x ({m})"] = w[f"{m} {kind} img/s"] / w[f"naive {kind} img/s"]
    return w.loc[list(dict.fromkeys(df["model"]))].round(2)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(prog="python scripts/bench.py", description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="cpu", help="profile whose networks and sizes are timed")
    ap.add_argument("--csv", default="",
                    help="where to write the rows (default: outputs/bench_<profile>.csv)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per network and mode")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--models", default="", help="comma-separated subset of the profile's networks")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    ap.add_argument("--size", type=int, default=0, help="override cls_size")
    ap.add_argument("--batch", type=int, default=0, help="override cls_batch")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: usable cores)")
    a = ap.parse_args(argv)
    over = {k: v for k, v in (("cls_size", a.size), ("cls_batch", a.batch)) if v}
    prof = config.make_profile(a.profile, over)
    names = [m.strip() for m in a.models.split(",") if m.strip()] or None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    df = run(prof, names, a.steps, a.warmup, a.compile, device, a.threads or None)
    out = Path(a.csv) if a.csv else Path(__file__).resolve().parents[2] / "outputs" / f"bench_{prof.name}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table(df).to_string())
    print(f"{device}, {torch.get_num_threads()} threads, bf16 supported: {compute.bf16_supported(device)}; "
          f"wrote {out}")
    return df


if __name__ == "__main__":
    main()
