"""Training and inference throughput of every network of a profile on every training path, and
the table of the fastest path per network that training uses.

Not part of the paper. ``python scripts/bench.py [--profile cpu] [--csv PATH] [--steps N]
[--models a,b] [--compile] [--write-table]`` builds each classifier of the profile (``hrnet``,
the Table 7 ``baselines`` and the ``audit_model``) at the profile's ``cls_size`` and batch
``cls_batch``, and times, after ``--warmup`` untimed steps, ``--steps`` training steps (SGD as in
:func:`helpers.train.train_step`) and ``--steps`` inference batches, each step timed alone;
images/s come from the median step (the machine is shared: a median ignores the steps another
process interrupted). The modes are the training paths of :data:`helpers.run.compute.PATHS`, each
on the training input path (uint8 batches converted on the torch side from a preallocated
buffer, :func:`helpers.train.to_input`; threads set to the cores this process may use):

``naive``               float32, NCHW, the optimizer's step as a Python loop over the
                        parameters: the reference every ratio is taken against;
``channels_last``       float32, channels_last (this and every path below take the
                        optimizer's step as training does, :func:`helpers.run.flatsgd.make`:
                        one fused kernel, on CPU over flat views of the parameters, and on CPU
                        the depthwise convolutions' backward of :mod:`helpers.run.depthwise` and
                        the small-map products of :mod:`helpers.run.smallmap`);
``bf16``, ``bf16+channels_last``   bf16 autocast (only where the device computes bf16 natively,
                        :func:`helpers.run.compute.bf16_supported`);
``compiled``            the fastest of these plus ``torch.compile`` (only with ``--compile``;
                        compile time is reported separately as ``first_step_s``).

Writes one CSV row per network and mode (images/s and the ratio to ``naive``) and prints the
table with the path each network trains on. ``--write-table`` records, for this hardware class
(:func:`helpers.run.compute.hardware`), the fastest path of each network in
:data:`helpers.run.compute.TABLE` (a path slower than naive is never chosen), which
:func:`helpers.train.cross_validate` then uses. Every mode runs with the stages' settings
(:func:`helpers.run.repro.seed_everything`: deterministic kernels), so the times are those of
training. Images are random uint8 noise: throughput does not depend on content.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from helpers import config, models, train
from helpers.run import compute, depthwise, flatsgd, repro, smallmap

COLUMNS = ["model", "mode", "size", "batch", "steps", "threads", "bf16", "channels_last", "compiled",
           "first_step_s", "train_img_s", "infer_img_s", "train_speedup", "infer_speedup"]


def networks(profile) -> list[str]:
    """The profile's classifiers, each once: HRNet, the baselines, the audit CNN."""
    return list(dict.fromkeys([profile.hrnet, *profile.baselines, profile.audit_model]))


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def naive_input(imgs: np.ndarray, device: str) -> torch.Tensor:
    """A float32 conversion in numpy, NCHW: what :func:`helpers.train.to_input` must equal."""
    x = torch.from_numpy(np.ascontiguousarray(imgs, dtype=np.float32) / 255.0)
    x = ((x - train.MEAN) / train.STD).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
    return x.to(device)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def modes(device: str, compile: bool = False) -> list[str]:
    """The training paths this device can run (bf16 ones only where it computes bf16 natively)."""
    out = [m for m, (_, bf) in compute.PATHS.items() if not bf or compute.bf16_supported(device)]
    return out + (["compiled"] if compile else [])


def bench_model(profile, name: str, mode: str, steps: int = 3, warmup: int = 1, device: str = "cpu",
                seed: int = 0, infer_batch: int = 64, compiled_path: str = "naive") -> dict:
    """Time ``steps`` training steps and ``steps`` inference batches of one network on one path
    (``compiled``: ``compiled_path`` plus ``torch.compile``)."""
    if mode not in (*compute.PATHS, "compiled"):
        raise ValueError(f"mode must be one of {[*compute.PATHS, 'compiled']}, got {mode!r}")
    channels_last, bf16 = compute.PATHS[compiled_path if mode == "compiled" else mode]
    bf16 = bf16 and compute.bf16_supported(device)
    size, batch = profile.cls_size, profile.cls_batch
    repro.seed_everything(seed)  # deterministic kernels, as every stage trains (helpers.run.stages)
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (max(batch, infer_batch) * 2, size, size), dtype=np.uint8)
    y = torch.from_numpy((np.arange(batch) % 2).astype(np.float32)).unsqueeze(1).to(device)
    model = models.make_classifier(name, hidden=profile.head_hidden, dropout=profile.head_dropout).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if mode != "naive":  # as training builds it (helpers.train.build)
        depthwise.install(model, device)
        smallmap.install(model, device)
    net = torch.compile(model) if mode == "compiled" else model
    sgd = dict(lr=profile.cls_lr, momentum=profile.momentum, weight_decay=profile.weight_decay)
    # the reference loops over the parameters in Python; every other path steps as training does
    params = model.parameters()
    opt = torch.optim.SGD(params, **sgd) if mode == "naive" else flatsgd.make(params, device, **sgd)
    buf = np.empty((batch, size, size), np.uint8)  # the training loop's preallocated uint8 batch

    def batch_input(n: int) -> torch.Tensor:
        idx = rng.integers(0, len(images), n)
        out = buf if n == batch else np.empty((n, size, size), np.uint8)
        np.take(images, idx, axis=0, out=out)
        return train.to_input(torch.from_numpy(out), device, channels_last=channels_last)

    def train_once() -> None:
        train.train_step(net, opt, batch_input(batch), y, device, bf16)

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
                bf16=bf16, channels_last=channels_last, compiled=mode == "compiled",
                first_step_s=round(first, 3), train_img_s=batch / train_s, infer_img_s=infer_batch / infer_s)


def run(profile, model_names: list[str] | None = None, steps: int = 3, warmup: int = 1,
        compile: bool = False, device: str = "cpu", threads: int | None = None) -> pd.DataFrame:
    """Bench every network (or ``model_names``) on every path; columns :data:`COLUMNS`."""
    torch.set_num_threads(threads or usable_cores())
    names = model_names or networks(profile)
    rows = []
    for name in names:
        for mode in modes(device):
            rows.append(bench_model(profile, name, mode, steps, warmup, device))
            r = rows[-1]
            print(f"{name:>18} {mode:>18}: train {r['train_img_s']:7.1f} img/s, "
                  f"inference {r['infer_img_s']:7.1f} img/s", flush=True)
        if compile:
            done = [r for r in rows if r["model"] == name]
            best = max(done, key=lambda r: r["train_img_s"])["mode"]
            rows.append(bench_model(profile, name, "compiled", steps, warmup, device, compiled_path=best))
    df = pd.DataFrame(rows)
    base = df[df["mode"] == "naive"].set_index("model")
    df["train_speedup"] = df["train_img_s"] / df["model"].map(base["train_img_s"])
    df["infer_speedup"] = df["infer_img_s"] / df["model"].map(base["infer_img_s"])
    return df[COLUMNS]


def chosen(df: pd.DataFrame) -> pd.DataFrame:
    """The path each network trains fastest on (``compiled`` is not a path training takes): the
    fastest of :data:`helpers.run.compute.PATHS` measured, naive where none beats it."""
    d = df[df["mode"].isin(list(compute.PATHS))]
    best = d.loc[d.groupby("model", sort=False)["train_img_s"].idxmax(), ["model", "mode", "train_speedup"]]
    best.loc[best["train_speedup"] < 1.0, ["mode", "train_speedup"]] = ["naive", 1.0]
    return best.rename(columns={"model": "network", "mode": "path"}).reset_index(drop=True)


def write_table(best: pd.DataFrame, device: str, table_file: Path = compute.TABLE) -> Path:
    """Record ``best`` (:func:`chosen`) for this hardware class in the fast-path table, keeping the
    rows of other hardware classes and networks."""
    import datetime

    hw = compute.hardware(device)
    old = pd.read_csv(table_file, dtype=str) if table_file.is_file() else pd.DataFrame(
        columns=compute.TABLE_COLUMNS)
    keep = old[~((old["hardware"] == hw) & old["network"].isin(best["network"]))]
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    new = best.assign(hardware=hw, train_speedup=best["train_speedup"].round(2), measured_utc=now,
                      revision=repro.git_revision()[:12])
    out = pd.concat([keep, new[compute.TABLE_COLUMNS]], ignore_index=True)
    out = out.sort_values(["hardware", "network"]).reset_index(drop=True)
    out.to_csv(table_file, index=False)
    compute._table.cache_clear()
    return table_file


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
    ap.add_argument("--write-table", action="store_true",
                    help="record each network's fastest path for this hardware in helpers/run/fast_path.csv")
    ap.add_argument("--size", type=int, default=0, help="override cls_size")
    ap.add_argument("--batch", type=int, default=0, help="override cls_batch")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: usable cores)")
    a = ap.parse_args(argv)
    over = {k: v for k, v in (("cls_size", a.size), ("cls_batch", a.batch)) if v}
    prof = config.make_profile(a.profile, over)
    names = [m.strip() for m in a.models.split(",") if m.strip()] or None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    df = run(prof, names, a.steps, a.warmup, a.compile, device, a.threads or None)
    out = Path(a.csv) if a.csv else Path(__file__).resolve().parents[1] / "outputs" / f"bench_{prof.name}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    best = chosen(df)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table(df).to_string())
        print(best.set_index("network").to_string())
    if a.write_table:
        print(f"wrote the fastest path of each network for {compute.hardware(device)} to "
              f"{write_table(best, device)}")
    print(f"{device}, {torch.get_num_threads()} threads, bf16 supported: {compute.bf16_supported(device)}; "
          f"wrote {out}")
    return df


if __name__ == "__main__":
    main()
