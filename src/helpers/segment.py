"""Lung segmentation (section 3.2, section 4.2, Algorithm 1, Table 4, eq. 1, Fig. 10).

k-fold cross-validation of a UNet trained from scratch with the Dice loss of eq. (1): in each
fold, 10 % of the training patients form a validation split; the weights with the lowest
validation loss are kept (``save(model.best_weights())``). As in Algorithm 1 (lines 10-12), the
validation images are augmented too, with a fixed seed so that epochs are comparable; Dice on the
held-out fold is measured without augmentation on the thresholded prediction.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from helpers import augment, models
from helpers.data.splits import inner_split, split_groups
from helpers.run import compute, progress, smallmap, store
from helpers.run.artefacts import ART


def unet_network(profile) -> str:
    """The UNet's name in the fast-path table (:data:`helpers.run.compute.TABLE`)."""
    return f"unet_{profile.unet_arch}"


def _to_tensor(imgs: np.ndarray, device: str, channels_last: bool = False) -> torch.Tensor:
    """uint8 (B, H, W) -> float32 (B, 1, H, W) in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(imgs, dtype=np.float32) / 255.0).unsqueeze(1)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x.to(device)


def _net(profile, device: str, state: dict | None = None) -> torch.nn.Module:
    """The UNet on ``device``; on CPU its bf16 training convolutions on small maps (the bottleneck)
    take :mod:`helpers.run.smallmap`'s matrix products (same parameters)."""
    m = models.make_unet(profile.unet_arch, profile.unet_base_channels).to(device)
    smallmap.install(m, device)
    if state is not None:
        m.load_state_dict(state)
    if profile.channels_last:
        m = m.to(memory_format=torch.channels_last)
    return m


def _augment_batch(pipe, imgs: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out_i, out_m = [], []
    for im, m in zip(imgs, masks):
        a, b = augment.apply(pipe, np.asarray(im), np.asarray(m))
        out_i.append(a)
        out_m.append(b)
    return np.stack(out_i), np.stack(out_m)


def _epoch(model, opt, imgs, masks, idx, batch, pipe, device, bf16, train: bool, rng=None,
           cl: bool = False, opacity: float = 0.0):
    """One pass; returns mean loss, pixel accuracy and soft Dice over ``idx``. ``opacity``: the
    share of training films given a synthetic lung opacity first (:func:`augment.lung_opacity`)."""
    model.train(train)
    order = rng.permutation(idx) if (train and rng is not None) else np.asarray(idx)
    tot = {"loss": 0.0, "acc": 0.0, "dice": 0.0, "pred_sd": 0.0}
    n = 0
    for s in range(0, len(order), batch):
        b = np.sort(order[s:s + batch]) if not train else order[s:s + batch]
        im, m = np.asarray(imgs[b]), np.asarray(masks[b])
        if train and opacity > 0:
            im = np.stack([augment.lung_opacity(a, mk, rng) if rng.random() < opacity else a
                           for a, mk in zip(im, m)])
        if pipe is not None:
            im, m = _augment_batch(pipe, im, m)
        x, y = _to_tensor(im, device, cl), torch.from_numpy(m.astype(np.float32)).unsqueeze(1).to(device)
        with torch.set_grad_enabled(train):
            with compute.autocast(device, bf16):
                logits = model(x)
            logits = logits.float()
            loss = models.dice_loss(logits, y)
            if train:
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        with torch.no_grad():
            prob = torch.sigmoid(logits)
            acc = ((prob >= 0.5).float() == y).float().mean().item()
            d = models.dice_coefficient(prob, y).mean().item()
            sd = prob.flatten(1).std(dim=1).mean().item()
        k = len(b)
        tot["loss"] += loss.item() * k
        tot["acc"] += acc * k
        tot["dice"] += d * k
        tot["pred_sd"] += sd * k
        n += k
    return {key: v / max(n, 1) for key, v in tot.items()}


DEAD_CHECK_EPOCH = 5      # by this epoch a live start has cut its validation loss by at least
DEAD_MIN_GAIN = 0.05      # this fraction of its first-epoch value
MAX_RESTARTS = 3


def train_fold(profile, images: np.ndarray, masks: np.ndarray, train_idx: np.ndarray,
               val_idx: np.ndarray, seed: int, device: str = "cpu", desc: str = "unet"
               ) -> tuple[dict, pd.DataFrame]:
    """Train one UNet. images: uint8 (N,S,S); masks: uint8 (N,S,S) {0,1}.

    Returns (best state dict by validation loss, per-epoch history with train/val loss, pixel
    accuracy and Dice). The Table 4 network has no normalisation layers; with Adam at the paper's
    learning rate about half of the initialisations die early on the real data (every ReLU off,
    the same probability almost everywhere, a validation loss that stops moving). A start whose
    validation loss at epoch ``DEAD_CHECK_EPOCH`` is not at least ``DEAD_MIN_GAIN`` below its
    first-epoch value is abandoned and training restarts from a new seeded initialisation (at
    most ``MAX_RESTARTS`` times); the ``attempt`` column of the history records it.
    """
    for attempt in range(MAX_RESTARTS + 1):
        best, hist = _train_attempt(profile, images, masks, train_idx, val_idx,
                                    seed + 7919 * attempt, device, desc)
        if hist is not None:
            hist.insert(1, "attempt", attempt)
            return best, hist
        print(f"{desc}: validation loss stalled in the first {DEAD_CHECK_EPOCH} epochs (dead start); "
              f"restarting with a new initialisation ({attempt + 1}/{MAX_RESTARTS})")
    raise RuntimeError(f"{desc}: every one of {MAX_RESTARTS + 1} initialisations died; lower unet_lr")


def _train_attempt(profile, images, masks, train_idx, val_idx, seed, device, desc):
    """One training run; returns (best state, history), or (None, None) for a dead start."""
    torch.manual_seed(seed)
    size = images.shape[-1]
    model = _net(profile, device)
    opt = torch.optim.Adam(model.parameters(), lr=profile.unet_lr, **compute.fused_optimizer(device))
    rng = np.random.default_rng(seed)
    val_pipe_seed = seed + 999_983
    best, best_loss, rows = None, float("inf"), []
    bf16 = bool(profile.bf16)
    line = progress.Line(desc, profile.unet_epochs, "epoch")
    for epoch in range(profile.unet_epochs):
        pipe = augment.seeded_pipeline(size, seed, epoch) if profile.augment else None
        tr = _epoch(model, opt, images, masks, train_idx, profile.unet_batch, pipe, device, bf16,
                    True, rng, profile.channels_last, profile.unet_opacity)
        vpipe = augment.seeded_pipeline(size, val_pipe_seed, 0) if profile.augment else None
        va = _epoch(model, None, images, masks, val_idx, profile.unet_batch, vpipe, device, bf16, False,
                    cl=profile.channels_last)
        rows.append({"epoch": epoch + 1, **{f"train_{k}": v for k, v in tr.items()},
                     **{f"val_{k}": v for k, v in va.items()}})
        if va["loss"] < best_loss:
            best_loss = va["loss"]
            best = copy.deepcopy(model.state_dict())
            rows[-1]["best"] = True
        line.step(f"val loss {va['loss']:.3f}, best {best_loss:.3f}")
        if (epoch + 1 == DEAD_CHECK_EPOCH < profile.unet_epochs
                and va["loss"] > (1 - DEAD_MIN_GAIN) * rows[0]["val_loss"]):
            line.done("dead start")
            return None, None
    line.done()
    hist = pd.DataFrame(rows)
    hist["best"] = hist.get("best", False)
    hist["best"] = hist["best"].fillna(False).astype(bool)
    return best, hist


@torch.no_grad()
def predict(profile, states: list[dict], images: np.ndarray, device: str = "cpu",
            batch: int = 16, desc: str | None = "predict masks") -> np.ndarray:
    """Mean lung probability of the given fold models: float32 (N, S, S) in [0, 1].

    ``desc`` names the progress line; None shows none (the per-fold test sets)."""
    nets = [_net(profile, device, st).eval() for st in states]
    out = np.zeros(images.shape, dtype=np.float32)
    starts = range(0, len(images), batch)
    for s in (progress.iterate(starts, desc, unit="batch") if desc else starts):
        x = _to_tensor(np.asarray(images[s:s + batch]), device, profile.channels_last)
        acc = torch.zeros(x.shape, device=device)
        for m in nets:
            with compute.autocast(device, bool(profile.bf16)):
                logits = m(x)
            acc += torch.sigmoid(logits.float())
        out[s:s + batch] = (acc / len(nets)).squeeze(1).cpu().numpy()
    return out


def hard_dice_per_image(prob: np.ndarray, masks: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Dice of thresholded predictions vs masks per image: float64 (N,)."""
    return np.array([models.hard_dice(p >= threshold, m > 0) for p, m in zip(prob, masks)])


def cross_validate(profile, images: np.ndarray, masks: np.ndarray, index: pd.DataFrame,
                   out_dir: Path, seed: int, device: str = "cpu") -> dict[str, pd.DataFrame]:
    """Algorithm 1 over the folds in ``index['fold']`` (patient-grouped, from curation).

    index: one row per image with ``patient_id``, ``source``, ``fold``. Writes, per fold,
    ``fold{k}.pt`` (best weights), ``history_fold{k}.csv`` and ``dice_fold{k}.csv``; a finished
    fold is reused when the stage resumes. The folds run through the profile's ``executor``
    (:mod:`helpers.run.executor`); this process writes the files either way. Returns the
    concatenated history and per-image Dice.
    """
    from helpers.run import executor

    profile = compute.for_network(profile, unet_network(profile), device)  # measured fast path
    out_dir = Path(out_dir)
    folds = sorted(index["fold"].unique())
    hists, dices, todo = {}, {}, []
    for k in folds:
        wfile, hfile, dfile = (out_dir / f"fold{k}.pt", out_dir / f"history_fold{k}.csv",
                               out_dir / f"dice_fold{k}.csv")
        if wfile.is_file() and hfile.is_file() and dfile.is_file():
            print(f"UNet fold {k + 1}/{len(folds)}: reusing {wfile.name}")
            hists[k] = pd.read_csv(hfile)
            dices[k] = pd.read_csv(dfile, keep_default_na=False)
        else:
            todo.append(int(k))

    def write(k: int, res: dict) -> None:
        torch.save(res["state"], out_dir / f"fold{k}.pt")
        store.save_csv(res["history"], out_dir / f"history_fold{k}.csv")
        store.save_csv(res["dice"], out_dir / f"dice_fold{k}.csv")
        hists[k], dices[k] = res["history"], res["dice"]

    executor.run_folds(unet_fold, todo, write=write, executor=profile.executor, device=device,
                       desc="UNet", threads=profile.torch_threads,
                       shared=dict(profile=profile, images=images, masks=masks, index=index,
                                   n_folds=len(folds), seed=seed))
    return {"history": pd.concat([hists[k] for k in folds], ignore_index=True),
            "dice": pd.concat([dices[k] for k in folds], ignore_index=True)}


def unet_fold(*, profile, images: np.ndarray, masks: np.ndarray, index: pd.DataFrame, k: int,
              n_folds: int, seed: int, device: str) -> dict:
    """Train and score UNet test fold ``k`` of :func:`cross_validate`; writes nothing. Returns
    ``state`` (best weights, CPU tensors), ``history`` and ``dice`` (held-out Dice per image)."""
    test = np.flatnonzero(index["fold"].to_numpy() == k)
    train_all = np.flatnonzero(index["fold"].to_numpy() != k)
    tr, va = inner_split(train_all, split_groups(index), index["source"],
                         profile.seg_val_fraction, seed + k)
    state, hist = train_fold(profile, images, masks, tr, va, seed + 1000 * k, device,
                             desc=f"UNet fold {k + 1}/{n_folds}")
    hist.insert(0, "fold", k)
    prob = predict(profile, [state], images[test], device, desc=None)
    d = index.iloc[test][["image_id", "patient_id", "source"]].copy()
    d["fold"] = k
    d["dice"] = hard_dice_per_image(prob, np.asarray(masks[test]))
    for key, v in state.items():  # in place: the state dict keeps its metadata
        state[key] = v.detach().cpu()
    return {"state": state, "history": hist, "dice": d}


def load_fold_states(out_dir: Path) -> list[dict]:
    """The best weights of every fold in ``out_dir`` (files ``fold*.pt``)."""
    files = sorted(Path(out_dir).glob("fold*.pt"))
    if not files:
        raise FileNotFoundError(f"no fold*.pt in {out_dir}: run notebooks/02_unet_training.ipynb first")
    return [torch.load(f, map_location="cpu", weights_only=True) for f in files]


def dice_table(dice: pd.DataFrame) -> pd.DataFrame:
    """Held-out Dice per fold and per source: mean, sd, min, n."""
    by_fold = dice.groupby("fold")["dice"].agg(["count", "mean", "std", "min"]).reset_index()
    by_fold.insert(0, "group", "fold")
    by_fold = by_fold.rename(columns={"fold": "name"})
    by_src = dice.groupby("source")["dice"].agg(["count", "mean", "std", "min"]).reset_index()
    by_src.insert(0, "group", "source")
    by_src = by_src.rename(columns={"source": "name"})
    allrow = pd.DataFrame([{"group": "all", "name": "all", "count": len(dice),
                            "mean": dice["dice"].mean(), "std": dice["dice"].std(),
                            "min": dice["dice"].min()}])
    t = pd.concat([by_fold, by_src, allrow], ignore_index=True)
    t["name"] = t["name"].astype(str)
    return t.rename(columns={"count": "n", "mean": "dice_mean", "std": "dice_sd", "min": "dice_min"})


def external_dice(cfg, states: list[dict], device: str = "cpu") -> pd.DataFrame:
    """Dice of each fold UNet and of their mean on the external image/mask pairs: one row per
    (pair, ``fold``), ``fold`` "0".."k-1" or "mean"."""
    idx = ART.ext_seg_index.read(cfg)
    if idx.empty:
        return pd.DataFrame(columns=["image_id", "patient_id", "source", "fold", "dice"])
    imgs, masks = ART.ext_seg_images.read(cfg), ART.ext_seg_masks.read(cfg)
    rows = []
    for name, group in [(str(k), [st]) for k, st in enumerate(states)] + [("mean", states)]:
        prob = predict(cfg.profile, group, np.asarray(imgs), device, desc=f"external, UNet {name}")
        rows.append(idx[["image_id", "patient_id", "source"]].assign(
            fold=name, dice=hard_dice_per_image(prob, np.asarray(masks))))
    return pd.concat(rows, ignore_index=True)
