"""Cross-validated classification (section 3.4, section 4.3, Algorithm 2, Table 5; Table 7).

One function trains any timm classifier over the saved folds: HRNet on segmented images (the
proposed model), the same on unsegmented images, the Table 7 baselines and the shortcut audits.
Per fold: a patient-grouped 10 % validation split of the training part, SGD with momentum and
weight decay, the learning rate multiplied by 0.1 at the (scaled) steps 30/60/90, binary
cross-entropy on one logit; the last-epoch weights are tested (Algorithm 2, line 14); the decision
threshold is chosen on the validation split (never on the test fold); the test fold is predicted
once. Every fold's predictions are written as soon as the fold ends, so an interrupted run resumes.
"""
from __future__ import annotations

import copy
import inspect
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from helpers import augment, models
from helpers.data.splits import inner_split, split_groups
from helpers.decision import auc_or_nan, choose_threshold
from helpers.run import compute, depthwise, flatsgd, progress, smallmap, store

MEAN, STD = 0.5, 0.25  # images are scaled to [0, 1] then standardised with these constants


def to_input(imgs, device: str, channels_last: bool = False) -> torch.Tensor:
    """uint8 (B, H, W) array or tensor -> float32 (B, 3, H, W), grayscale replicated, standardised.

    The uint8 batch goes to the device as is and is converted there, in place, by torch: no
    float32 copy in numpy, a quarter of the bytes to move to a GPU. Values equal
    ``(imgs / 255 - MEAN) / STD`` to float32 rounding.
    """
    t = imgs if isinstance(imgs, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(imgs))
    x = t.to(device, non_blocking=True).to(torch.float32)
    x = x.mul_(1.0 / (255.0 * STD)).sub_(MEAN / STD).unsqueeze(1).expand(-1, 3, -1, -1)
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _auc(y: np.ndarray, prob: np.ndarray) -> float:
    """ROC-AUC of one validation pass; nan when ``y`` holds a single class."""
    return auc_or_nan(y, prob)


def build(profile, name: str, device: str) -> torch.nn.Module:
    """The classifier ``name`` on ``device`` in the profile's memory format; on CPU its depthwise
    convolutions take the faster backward pass of :mod:`helpers.run.depthwise`, and its other
    convolutions the small-map matrix products of :mod:`helpers.run.smallmap` in bf16 training
    (same parameters, same names: saved weights load either way)."""
    m = models.make_classifier(name, hidden=profile.head_hidden, dropout=profile.head_dropout)
    m = m.to(device)
    depthwise.install(m, device)
    smallmap.install(m, device)
    if profile.channels_last:
        m = m.to(memory_format=torch.channels_last)
    return m


@torch.no_grad()
def predict_proba(model, images: np.ndarray, device: str, bf16: bool = False,
                  channels_last: bool = False, batch: int = 64) -> np.ndarray:
    """P(class 1) for every image: float64 (N,)."""
    model.eval()
    out = []
    for s in range(0, len(images), batch):
        x = to_input(np.asarray(images[s:s + batch]), device, channels_last)
        with compute.autocast(device, bf16):
            logit = model(x)
        out.append(torch.sigmoid(logit.float()).squeeze(1).cpu().numpy())
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def train_step(model, opt, x: torch.Tensor, target: torch.Tensor, device: str, bf16: bool
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step on a batch (x from :func:`to_input`, target float (B, 1)): (loss, logit)."""
    with compute.autocast(device, bf16):
        logit = model(x)
    loss = F.binary_cross_entropy_with_logits(logit.float(), target)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss, logit


def _run_epoch(model, opt, images, y, idx, profile, device, pipe, rng):
    model.train()
    order = rng.permutation(idx)
    loss_sum, correct, n = 0.0, 0, 0
    for s in range(0, len(order), profile.cls_batch):
        b = order[s:s + profile.cls_batch]
        if len(b) < 2:  # BatchNorm needs more than one sample
            continue
        im = np.asarray(images[b])
        if pipe is not None:
            im = np.stack([augment.apply(pipe, a)[0] for a in im])
        x = to_input(im, device, profile.channels_last)
        t = torch.from_numpy(y[b].astype(np.float32)).unsqueeze(1).to(device)
        loss, logit = train_step(model, opt, x, t, device, profile.bf16)
        loss_sum += loss.item() * len(b)
        correct += int(((logit.float() > 0).float() == t).sum().item())
        n += len(b)
    return loss_sum / max(n, 1), correct / max(n, 1)


def make_scheduler(opt, profile):
    """Section 4.3's steps (``lr_schedule="steps"``), or a cosine decay from ``cls_lr`` to 0 over
    ``cls_epochs`` so that a short run ends with small steps and its last epochs settle."""
    if profile.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=profile.cls_epochs)
    return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=profile.lr_milestones(),
                                                gamma=profile.lr_factor)


def train_fold(profile, name: str, images: np.ndarray, y: np.ndarray, train_idx: np.ndarray,
               val_idx: np.ndarray, seed: int, device: str = "cpu", desc: str = ""
               ) -> tuple[torch.nn.Module, pd.DataFrame]:
    """Train one classifier; returns (model, per-epoch history).

    History columns: ``epoch, lr, train_loss, train_acc, val_loss, val_acc, val_auc, best``;
    ``val_auc`` is the ROC-AUC on the inner validation split (nan when it holds one class), so
    every model's loss and AUC curves can show whether training had settled when it stopped.

    The model keeps its last-epoch weights (Algorithm 2 tests the model after the epoch loop), or
    the weights with the lowest validation loss when ``profile.cls_select == "best_val_loss"``;
    the ``best`` column of the history marks that epoch either way.
    """
    torch.manual_seed(seed)
    model = build(profile, name, device)
    opt = flatsgd.make(model.parameters(), device, lr=profile.cls_lr, momentum=profile.momentum,
                       weight_decay=profile.weight_decay)
    sched = make_scheduler(opt, profile)
    rng = np.random.default_rng(seed)
    best, best_loss, rows = None, float("inf"), []
    yv = y[val_idx].astype(np.float64)
    line = progress.Line(desc or name, profile.cls_epochs, "epoch")
    for epoch in range(profile.cls_epochs):
        pipe = (augment.seeded_pipeline(images.shape[-1], seed, epoch, mode=profile.cls_augment_mode)
                if profile.cls_augment else None)
        lr = opt.param_groups[0]["lr"]
        tl, ta = _run_epoch(model, opt, images, y, train_idx, profile, device, pipe, rng)
        sched.step()
        pv = predict_proba(model, images[val_idx], device, profile.bf16, profile.channels_last)
        pv_c = np.clip(pv, 1e-7, 1 - 1e-7)
        vl = float(-np.mean(yv * np.log(pv_c) + (1 - yv) * np.log(1 - pv_c)))
        va = float(np.mean((pv >= 0.5) == (yv == 1)))
        rows.append({"epoch": epoch + 1, "lr": lr, "train_loss": tl, "train_acc": ta,
                     "val_loss": vl, "val_acc": va, "val_auc": _auc(yv, pv), "best": False})
        if vl < best_loss:
            best_loss, best = vl, copy.deepcopy(model.state_dict())
            rows[-1]["best"] = True
        line.step(f"val loss {vl:.3f}, val acc {va:.2f}")
    line.done()
    if profile.cls_select == "best_val_loss":
        model.load_state_dict(best)
    return model, pd.DataFrame(rows)


def cross_validate(profile, name: str, tag: str, images: np.ndarray, y: np.ndarray,
                   index: pd.DataFrame, out_dir: Path, seed: int, device: str = "cpu",
                   extra: dict[str, dict] | None = None,
                   after_fold: Callable[[int, torch.nn.Module, np.ndarray], dict] | None = None,
                   save_weights: bool = True, role: str = "proposed",
                   folder: str | None = None, folds: list[int] | None = None) -> pd.DataFrame:
    """Algorithm 2 over ``index['fold']``; returns out-of-fold predictions of every image.

    ``role`` ("proposed", "baseline" or "audit") selects the network's epochs and compute path
    through :meth:`helpers.config.Profile.for_network`. The folds run through the profile's
    ``executor`` (:mod:`helpers.run.executor`: one after another, or at once on Ray); either way this
    process writes the same files. :func:`cross_validate_many` runs several of these at once.

    images: uint8 (N, S, S); y: int (N,) in {0, 1}; index: the N rows (``image_id``,
    ``patient_id``, ``fold``, optional ``source``/``view``). ``extra``: named sets
    ``{"images", "y", "index"}`` (e.g. an external test set) every fold model also predicts (rows
    with ``set`` = the name).
    ``after_fold(k, model, test_idx)`` may compute more per-fold artefacts (Grad-CAM) and return a
    dict of arrays saved to ``<tag>/fold{k}_extra.npz``.

    Files under ``out_dir/<folder>/`` (``folder`` defaults to ``tag``, the model's name in the
    predictions): ``fold{k}_preds.csv``, ``fold{k}_history.csv``,
    ``fold{k}.pt`` (weights), and ``preds.csv`` / ``history.csv`` for all folds.
    Prediction columns: image_id, patient_id, fold, set ('oof' or an extra name), y, prob,
    threshold, pred, model, plus source/view/label when present in ``index``. ``folds``: test
    only these fold ids (default: every fold of ``index``), e.g. one left-out site as fold 0.
    """
    job = dict(name=name, tag=tag, images=images, y=y, index=index, extra=extra,
               after_fold=after_fold, save_weights=save_weights, role=role, folder=folder,
               folds=folds)
    return cross_validate_many(profile, {tag: job}, out_dir, seed, device)[tag]


_NOT_A_JOB_KEY = {"profile", "out_dir", "seed", "device"}  # cross_validate_many's own arguments


def cross_validate_many(profile, jobs: dict[str, dict], out_dir: Path, seed: int,
                        device: str = "cpu", desc: str | None = None,
                        timings: dict[str, float] | None = None) -> dict[str, pd.DataFrame]:
    """Several :func:`cross_validate` runs whose folds go to the executor together; returns each
    job's predictions under its key.

    ``jobs``: key -> the keyword arguments of :func:`cross_validate` other than ``profile``,
    ``out_dir``, ``seed`` and ``device`` (``name``, ``images``, ``y``, ``index`` required; ``tag``
    defaults to the key). The local executor trains them in the given order, exactly as one call
    per job would; on Ray every job's folds are queued at once (longest jobs first is the best
    order), so a lone last fold of one network shares the cores with the next network's folds.
    The files are those of one :func:`cross_validate` call per job. ``timings`` (e.g. a stage's
    ``timings``) gets, per key, the seconds its folds trained in this call, summed over folds (on
    Ray they overlap with other jobs' folds, so they add up to more than the wall time).
    """
    tasks, finish, runs = [], {}, []
    for key, job in jobs.items():
        unknown = set(job) - set(inspect.signature(cross_validate).parameters) - _NOT_A_JOB_KEY
        missing = {"name", "images", "y", "index"} - set(job)
        if unknown or missing:
            problem = f"unknown keys {sorted(unknown)}" if unknown else f"missing {sorted(missing)}"
            raise TypeError(f"cross_validate_many job {key!r}: {problem}")
        t, f, prof = _prepare(profile, key, out_dir=out_dir, seed=seed, device=device,
                              seconds=timings, **job)
        tasks += t
        finish[key] = f
        runs.append(prof)
    if not runs:
        return {}
    how = {(p.executor, p.torch_threads) for p in runs}
    if len(how) > 1:
        raise ValueError(f"cross_validate_many: the jobs ask for different executors/threads {sorted(how)}")
    from helpers.run import executor

    executor.run_tasks(tasks, executor=runs[0].executor, device=device,
                       desc=desc or ", ".join(jobs), threads=runs[0].torch_threads)
    return {key: f() for key, f in finish.items()}


def _prepare(profile, key: str, *, name: str, images: np.ndarray, y: np.ndarray,
             index: pd.DataFrame, out_dir: Path, seed: int, device: str,
             seconds: dict[str, float] | None = None, tag: str | None = None,
             extra: dict[str, dict] | None = None, after_fold=None, save_weights: bool = True,
             role: str = "proposed", folder: str | None = None, folds: list[int] | None = None):
    """One job of :func:`cross_validate_many`: (the executor tasks of its unfinished folds, a
    function that gathers and writes its predictions once they ran, its network's profile)."""
    from helpers.run import executor

    tag = tag or key
    profile = compute.for_network(profile.for_network(name, role), name, device)  # measured fast path
    d = Path(out_dir) / (folder or tag)
    d.mkdir(parents=True, exist_ok=True)
    y = np.asarray(y).astype(np.int64)
    fold_ids = sorted(np.unique(index["fold"].to_numpy()))
    if folds is not None:
        unknown = sorted(set(folds) - set(int(k) for k in fold_ids))
        if unknown:
            raise ValueError(f"folds {unknown} are not in index['fold'] ({[int(k) for k in fold_ids]})")
        fold_ids = sorted(int(k) for k in folds)
    preds_by, hist_by, todo = {}, {}, []
    for k in fold_ids:
        pf, hf = d / f"fold{k}_preds.csv", d / f"fold{k}_history.csv"
        if pf.is_file() and hf.is_file():
            print(f"{tag} fold {k + 1}/{len(fold_ids)}: reusing {pf.name}")
            preds_by[k] = pd.read_csv(pf, keep_default_na=False)
            hist_by[k] = pd.read_csv(hf)
        else:
            todo.append(int(k))

    def write(k: int, res: dict) -> None:
        if res["arrays"]:
            np.savez_compressed(d / f"fold{k}_extra.npz", **res["arrays"])
        if save_weights:
            torch.save(res["state"], d / f"fold{k}.pt")
        store.save_csv(res["history"], d / f"fold{k}_history.csv")
        store.save_csv(res["preds"], d / f"fold{k}_preds.csv")  # written last: it marks the fold finished
        preds_by[k], hist_by[k] = res["preds"], res["history"]
        if seconds is not None:
            seconds[key] = round(seconds.get(key, 0.0) + float(res.get("seconds", 0.0)), 2)

    def finish() -> pd.DataFrame:
        preds = pd.concat([preds_by[k] for k in fold_ids], ignore_index=True)
        hist = pd.concat([hist_by[k] for k in fold_ids], ignore_index=True)
        hist.insert(0, "model", tag)
        store.save_csv(preds, d / "preds.csv")
        store.save_csv(hist, d / "history.csv")
        return preds

    shared = dict(profile=profile, name=name, tag=tag, images=images, y=y, index=index,
                  n_folds=len(fold_ids), seed=seed, extra=extra, after_fold=after_fold,
                  keep_weights=save_weights)
    tasks = [executor.Task(classifier_fold, k, shared, write, f"{key} fold {k + 1}") for k in todo]
    return tasks, finish, profile


def classifier_fold(*, profile, name: str, tag: str, images: np.ndarray, y: np.ndarray,
                    index: pd.DataFrame, k: int, n_folds: int, seed: int, device: str,
                    extra: dict[str, dict] | None, after_fold, keep_weights: bool) -> dict:
    """Train and score test fold ``k`` of :func:`cross_validate`; writes nothing.

    Returns ``preds`` and ``history`` (data frames in the schema of the fold files), ``state``
    (the weights as CPU tensors, or None when they are not kept) and ``arrays`` (what
    ``after_fold`` returned, or None) and ``seconds`` (the fold's wall time)."""
    t0 = time.perf_counter()
    folds = index["fold"].to_numpy()
    keep_cols = [c for c in ("image_id", "patient_id", "source", "view", "label") if c in index]
    test = np.flatnonzero(folds == k)
    tr, va = inner_split(np.flatnonzero(folds != k), split_groups(index), y,
                         profile.cls_val_fraction, seed + k)
    model, hist = train_fold(profile, name, images, y, tr, va, seed + 1000 * k, device,
                             desc=f"{tag} fold {k + 1}/{n_folds}")
    hist.insert(0, "fold", k)
    pv = predict_proba(model, images[va], device, profile.bf16, profile.channels_last)
    thr = choose_threshold(y[va], pv)
    rows = []
    pt = predict_proba(model, images[test], device, profile.bf16, profile.channels_last)
    t = index.iloc[test][keep_cols].copy()
    t["fold"], t["set"], t["y"], t["prob"] = k, "oof", y[test], pt
    rows.append(t)
    for set_name, ext in (extra or {}).items():
        pe = predict_proba(model, ext["images"], device, profile.bf16, profile.channels_last)
        e = ext["index"][[c for c in keep_cols if c in ext["index"]]].copy()
        e["fold"], e["set"], e["y"], e["prob"] = k, set_name, ext["y"], pe
        rows.append(e)
    p = pd.concat(rows, ignore_index=True)
    p["threshold"] = thr
    p["pred"] = (p["prob"] >= thr).astype(int)
    p["model"] = tag
    arrays = after_fold(k, model, test) if after_fold is not None else None
    state = None
    if keep_weights:
        state = model.state_dict()
        for key, v in state.items():  # in place: the state dict keeps its metadata
            state[key] = v.detach().cpu()
    return {"preds": p, "history": hist, "state": state, "arrays": arrays or None,
            "seconds": round(time.perf_counter() - t0, 2)}


def load_fold_model(profile, name: str, out_dir: Path, tag: str, fold: int, device: str = "cpu"):
    """Rebuild the fold model saved by :func:`cross_validate`."""
    f = Path(out_dir) / tag / f"fold{fold}.pt"
    if not f.is_file():
        raise FileNotFoundError(f"{f} not found: the stage that trains {tag!r} has not been run")
    m = build(profile, name, device)
    m.load_state_dict(torch.load(f, map_location=device, weights_only=True))
    m.eval()
    return m


def histories(stage_dir: Path) -> pd.DataFrame:
    """Every model's per-epoch history in a stage folder (``<model>/history.csv``, as
    :func:`cross_validate` writes them), models in folder order; empty when there is none."""
    files = sorted(Path(stage_dir).glob("*/history.csv"))
    return pd.concat([pd.read_csv(f) for f in files], ignore_index=True) if files else pd.DataFrame()
