"""What a profile costs: measured seconds per image of each of its networks, and the hours of
every stage, on one device and on several through Ray.

Not part of the paper. ``python scripts/cost.py [--profile paper] [--n-cls 910] [--n-seg 800]
[--gpus 8]`` times, on this machine's device, training and inference of the UNet at ``seg_size``
and of every classifier at ``cls_size`` (:func:`bench.bench_model`, in the profile's own
compute mode), then multiplies by the images each stage sees: folds x epochs x training images,
plus each epoch's validation pass and the test fold. The defaults are the paper's data (section
3.2: 800 Montgomery/Shenzhen pairs for the UNet; 910 images kept after refinement for the
classifiers). Folds of one network run at once under ``executor="ray"``, one per GPU, so the wall
time on ``g`` devices is, per network, ceil(folds / g) folds. The estimate leaves out data
loading, Grad-CAM and the statistics of notebook 06 (minutes, not hours).
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import bench
from helpers import config, models
from helpers.run import compute

COLUMNS = ["stage", "network", "size", "folds", "epochs", "train_images", "infer_images",
           "train_s_per_image", "infer_s_per_image", "device_hours", "wall_hours_on_n"]


def time_unet(profile, steps: int = 2, warmup: int = 1, device: str = "cpu", seed: int = 0) -> dict:
    """Seconds per image of the profile's UNet at ``seg_size``: an Adam step on the eq. (1) Dice
    loss (batch ``unet_batch``), and inference on the same batch."""
    torch.manual_seed(seed)
    size, batch = profile.seg_size, profile.unet_batch
    net = models.make_unet(profile.unet_arch, profile.unet_base_channels).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=profile.unet_lr)
    x = torch.rand(batch, 1, size, size, device=device)
    y = (torch.rand(batch, 1, size, size, device=device) > 0.5).float()

    def step():
        loss = models.dice_loss(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def timed(fn, n):
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            if device == "cuda":
                torch.cuda.synchronize()
            out.append(time.perf_counter() - t0)
        return out

    net.train()
    timed(step, warmup)
    train_s = float(np.median(timed(step, steps)))
    net.eval()
    with torch.no_grad():
        timed(lambda: net(x), 1)
        infer_s = float(np.median(timed(lambda: net(x), steps)))
    return {"network": f"unet ({profile.unet_arch}, {profile.unet_base_channels} base channels)",
            "size": size, "train_s_per_image": train_s / batch, "infer_s_per_image": infer_s / batch}


def time_classifiers(profile, steps: int = 2, warmup: int = 1, device: str = "cpu") -> list[dict]:
    """Seconds per image of every classifier of the profile at ``cls_size``, in the compute mode the
    profile trains with (fp32 NCHW for ``paper``)."""
    rows = []
    for name in bench.networks(profile):
        p = compute.for_network(profile.for_network(name), name, device)  # the path training takes
        cl, bf = bool(p.channels_last), compute.uses_bf16(device, p.bf16)
        mode = next(m for m, v in compute.PATHS.items() if v == (cl, bf))
        r = bench.bench_model(p, name, mode, steps, warmup, device, infer_batch=p.cls_batch)
        rows.append({"network": name, "size": p.cls_size, "train_s_per_image": 1 / r["train_img_s"],
                     "infer_s_per_image": 1 / r["infer_img_s"]})
        print(f"{name:>18}: train {rows[-1]['train_s_per_image']:.3f} s/image, "
              f"inference {rows[-1]['infer_s_per_image']:.3f} s/image", flush=True)
    return rows


def workload(profile, n_cls: int, n_seg: int) -> pd.DataFrame:
    """Images each cross-validation trains on and predicts: one row per network and stage.

    Per fold, a network trains ``epochs`` passes over (1 - 1/folds) x (1 - val_fraction) of the
    images, predicts the validation split after every epoch, and predicts the test fold once."""
    rows = []

    def add(stage, network, n, folds, epochs, val_fraction, runs=1):
        train_part = n * (1 - 1 / folds)
        n_train, n_val = train_part * (1 - val_fraction), train_part * val_fraction
        rows.append({"stage": stage, "network": network, "folds": folds, "epochs": epochs, "runs": runs,
                     "train_images": runs * folds * epochs * n_train,
                     "infer_images": runs * folds * (epochs * n_val + n / folds)})

    P = profile
    add("02 UNet", "unet", n_seg, P.seg_folds, P.unet_epochs, P.seg_val_fraction)
    hr = P.for_network(P.hrnet, "proposed")
    add("04 HRNet (segmented)", P.hrnet, n_cls, P.n_folds, hr.cls_epochs, P.cls_val_fraction)
    add("05 HRNet (unsegmented)", P.hrnet, n_cls, P.n_folds, hr.cls_epochs, P.cls_val_fraction)
    for b in P.baselines:
        add("05 Table 7 baselines", b, n_cls, P.n_folds, P.for_network(b, "baseline").cls_epochs,
            P.cls_val_fraction)
    audits = 3 + int(P.audit_cnn_permutation)  # source, lungs blacked out, mask only (+ permuted)
    add("05 audit CNNs", P.audit_model, n_cls, P.n_folds, P.for_network(P.audit_model, "audit").cls_epochs,
        P.cls_val_fraction, runs=audits)
    for rung in P.ladder:
        add("05b ladder", f"{P.hrnet} ({rung})", n_cls, P.n_folds, hr.cls_epochs, P.cls_val_fraction)
    return pd.DataFrame(rows)


def estimate(work: pd.DataFrame, rates: pd.DataFrame, devices: int = 8) -> pd.DataFrame:
    """Device hours per row of :func:`workload` from the measured seconds per image, and the wall
    hours when ``devices`` folds run at once (Ray, one fold per device)."""
    r = rates.copy()
    r["key"] = r["network"].str.split(" ").str[0]
    r = r.set_index("key")
    out = work.copy()
    base = out["network"].str.split(" ").str[0]
    out["size"] = base.map(r["size"]).to_numpy()
    out["train_s_per_image"] = base.map(r["train_s_per_image"]).to_numpy()
    out["infer_s_per_image"] = base.map(r["infer_s_per_image"]).to_numpy()
    seconds = out["train_images"] * out["train_s_per_image"] + out["infer_images"] * out["infer_s_per_image"]
    out["device_hours"] = seconds / 3600
    rounds = np.array([math.ceil(f / devices) for f in out["folds"]])
    out["wall_hours_on_n"] = out["device_hours"] / out["folds"] * rounds
    return out[COLUMNS]


def by_stage(est: pd.DataFrame) -> pd.DataFrame:
    t = est.groupby("stage", sort=False)[["device_hours", "wall_hours_on_n"]].sum()
    t.loc["total"] = t.sum()
    return t.round(1)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(prog="python scripts/cost.py", description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="paper")
    ap.add_argument("--n-cls", type=int, default=910, help="classification images after refinement")
    ap.add_argument("--n-seg", type=int, default=800, help="image/mask pairs for the UNet")
    ap.add_argument("--gpus", type=int, default=8, help="devices that run folds at once (Ray)")
    ap.add_argument("--steps", type=int, default=2, help="timed steps per network")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: usable cores)")
    ap.add_argument("--csv", default="",
                    help="where to write the rows (default: outputs/cost_<profile>_<device>.csv)")
    a = ap.parse_args(argv)
    prof = config.make_profile(a.profile)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_num_threads(a.threads or bench.usable_cores())
    what = torch.cuda.get_device_name(0) if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"timing the networks of profile {prof.name} on {what}", flush=True)
    unet = time_unet(prof, a.steps, 1, device)
    print(f"{'unet':>18}: train {unet['train_s_per_image']:.3f} s/image, "
          f"inference {unet['infer_s_per_image']:.3f} s/image", flush=True)
    rates = pd.DataFrame([unet, *time_classifiers(prof, a.steps, 1, device)])
    rates["network"] = rates["network"].where(~rates["network"].str.startswith("unet"), "unet")
    est = estimate(workload(prof, a.n_cls, a.n_seg), rates, a.gpus)
    out = Path(a.csv) if a.csv else (Path(__file__).resolve().parents[2] / "outputs"
                                     / f"cost_{prof.name}_{device}.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    est.assign(device=what).to_csv(out, index=False)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(est.round(3).to_string(index=False))
        print(by_stage(est).rename(columns={"wall_hours_on_n": f"wall_hours_on_{a.gpus}"}).to_string())
    print(f"{what}; {a.n_cls} classification images, {a.n_seg} UNet pairs; wrote {out}")
    return est


if __name__ == "__main__":
    main()
