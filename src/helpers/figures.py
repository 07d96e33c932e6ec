"""Every figure and table of the paper, rebuilt from the artefacts the earlier notebooks saved.

Each builder reads files only (no model is trained here) and returns a :class:`Figure` record:
the matplotlib figure, its file name, the paper panel it corresponds to and a caption that states
the profile and data, so a smoke figure cannot be mistaken for a result on real radiographs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import explain, io, metrics, plots, repro


@dataclass
class Figure:
    fig: object
    file: str
    panel: str
    notebook: str
    caption: str


def data_note(cfg) -> str:
    """The one caption line saying what the data are (:func:`helpers.evidence.data_note`)."""
    from . import evidence

    return evidence.data_note(cfg.out_dir, cfg.to_dict())


def _kept(cfg) -> tuple[pd.DataFrame, np.ndarray]:
    ri = io.read_stage_csv(cfg.out_dir / "refine/refine_index.csv", "03_mask_refinement.ipynb")
    keep = np.flatnonzero(io.bool_column(ri, "passed"))
    cls = io.read_stage_csv(cfg.out_dir / "curation/cls_index.csv", "01_data_curation.ipynb")
    return cls.iloc[keep].reset_index(drop=True), keep


def fig7(cfg) -> Figure:
    z = np.load(cfg.out_dir / "unet/aug_samples.npz")
    f = plots.augmentation_samples(z["originals"], z["images"], z["masks"], caption=data_note(cfg))
    return Figure(f, "fig07_augmentation.png", "Fig. 7", "02_unet_training", "Table 3 augmentation samples")


def fig10(cfg) -> Figure:
    h = io.read_stage_csv(cfg.out_dir / "unet/history.csv", "02_unet_training.ipynb")
    d = io.read_stage_csv(cfg.out_dir / "unet/dice.csv", "02_unet_training.ipynb")
    cap = f"{data_note(cfg)}; held-out Dice {d.dice.mean():.3f} (n={len(d)}), folds={h.fold.nunique()}"
    f = plots.training_curves(h, [("train_loss", "val_loss"), ("train_acc", "val_acc"),
                                  ("train_dice", "val_dice")],
                              "Fig. 10 - UNet training / validation curves (mean +- sd over folds)", cap)
    return Figure(f, "fig10_unet_curves.png", "Fig. 10", "02_unet_training", cap)


def fig6(cfg, n: int = 6) -> Figure:
    cls = io.read_stage_csv(cfg.out_dir / "curation/cls_index.csv", "01_data_curation.ipynb")
    ri = io.read_stage_csv(cfg.out_dir / "refine/refine_index.csv", "03_mask_refinement.ipynb")
    images = io.load_npy(cfg.out_dir / "curation/cls_images.npy")
    raw = io.load_npy(cfg.out_dir / "refine/masks_raw_cls.npy")
    ref = io.load_npy(cfg.out_dir / "refine/masks_refined_cls.npy")
    passed = io.bool_column(ri, "passed")
    rng = np.random.default_rng(cfg.seed)
    pick = []
    for lab in ("covid", "normal"):
        pool = np.flatnonzero((cls["label"] == lab).to_numpy() & passed)
        pick += list(rng.choice(pool, size=min(len(pool), n // 2 - (1 if (~passed).any() else 0)),
                                replace=False))
    failed = np.flatnonzero(~passed)
    pick += list(failed[:2])
    titles = [f"{cls.label[i]} {'kept' if passed[i] else 'below threshold'}" for i in pick]
    cap = f"{data_note(cfg)}; {int(passed.sum())}/{len(passed)} images pass the area threshold"
    f = plots.refinement_examples(np.asarray(images)[pick], np.asarray(raw)[pick], np.asarray(ref)[pick],
                                  titles, cap)
    return Figure(f, "fig06_refinement.png", "Fig. 6", "03_mask_refinement", cap)


#: readable names of the models a run can train, in the order tables list them
MODEL_LABELS: dict[str, str] = {
    "hrnet": "HRNet, segmented lungs (proposed)",
    "hrnet_unsegmented": "HRNet, full image",
    "resnet152": "ResNet152", "densenet121": "DenseNet121", "efficientnet_b4": "EfficientNet-B4",
    "resnet18": "ResNet18 (smoke stand-in for ResNet152)",
    "efficientnet_b0": "EfficientNet-B0 (smoke stand-in for EfficientNet-B4)",
    "thumbnail_logreg_segmented": "Thumbnail logistic regression, segmented",
    "thumbnail_logreg_unsegmented": "Thumbnail logistic regression, full image",
    "audit_source": "Audit: source", "audit_lungs_blacked_out": "Audit: lungs blacked out",
    "audit_mask_only": "Audit: mask only", "audit_permuted_labels": "Audit: permuted labels",
}
#: Table 7 of the paper (accuracy, sensitivity, specificity in %); HRNet is its "Proposed Model"
PAPER_TABLE7: dict[str, tuple[float, float, float]] = {
    "hrnet": (99.26, 98.53, 98.82), "resnet152": (94.50, 95.12, 94.00),
    "densenet121": (93.40, 90.24, 96.00), "efficientnet_b4": (97.56, 95.12, 96.15),
}


def model_label(name: str) -> str:
    return MODEL_LABELS.get(str(name), str(name))


def model_order(names, baselines=()) -> list[str]:
    """HRNet first, its unsegmented twin, the profile's baselines, then the rest alphabetically."""
    first = ["hrnet", "hrnet_unsegmented", *baselines]
    names = list(dict.fromkeys(str(n) for n in names))
    return [n for n in first if n in names] + sorted(n for n in names if n not in first)


def fold_label(fold) -> str:
    """Folds are numbered from 1 wherever a reader sees them (stored ids start at 0)."""
    s = str(fold)
    return str(int(float(s)) + 1) if s.replace(".", "", 1).lstrip("-").isdigit() else s


def readable_folds(df: pd.DataFrame, col: str = "fold", where: pd.Series | None = None) -> pd.DataFrame:
    """A copy of ``df`` whose fold ids read 1..K (rows ``where`` is true, all by default)."""
    out = df.copy()
    mask = where if where is not None else pd.Series(True, index=out.index)
    out[col] = out[col].astype(object)
    out.loc[mask, col] = [fold_label(v) for v in out.loc[mask, col]]
    return out


def _pct(v, lo=np.nan, hi=np.nan) -> str:
    if not np.isfinite(v):
        return "n/a"
    return f"{100 * v:.1f}" + (f" [{100 * lo:.1f}, {100 * hi:.1f}]" if np.isfinite(lo) else "")


def _numeric(t: pd.DataFrame, keep=("fold", "kind", "note", "model")) -> pd.DataFrame:
    t = t.copy()
    num = [c for c in t.columns if c not in keep]
    t[num] = t[num].apply(pd.to_numeric, errors="coerce")
    return t


def table6_frame(cfg, fold_table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Table 6 as the paper lays it out (fold, accuracy, sensitivity, specificity, in %), with
    Wilson 95 % intervals, each fold's images (COVID / normal), its AUC and its decision threshold."""
    ft = fold_table if fold_table is not None else io.read_stage_csv(
        cfg.out_dir / "hrnet/fold_table.csv", "04_hrnet_cv_training.ipynb")
    ft = _numeric(ft)
    rows = []
    for r in ft.itertuples(index=False):
        row = {"Fold": {"pooled": "Pooled", "mean": "Average"}.get(str(r.fold), fold_label(r.fold)),
               "Images (COVID / normal)": f"{int(r.n_pos)} / {int(r.n_neg)}"}
        for m in ("accuracy", "sensitivity", "specificity"):
            row[f"{m.capitalize()} %"] = _pct(getattr(r, m), getattr(r, f"{m}_lo", np.nan),
                                             getattr(r, f"{m}_hi", np.nan))
        row["AUC"] = f"{r.auc:.3f}" if np.isfinite(r.auc) else "n/a"
        row["Threshold"] = f"{r.threshold:.2f}" if np.isfinite(r.threshold) else "per fold"
        rows.append(row)
    return pd.DataFrame(rows)


def pooled_vs_mean_note(fold_table: pd.DataFrame) -> str:
    """Why the pooled AUC can fall below every fold's AUC, with this run's numbers."""
    ft = _numeric(fold_table)
    folds = ft[~ft["fold"].astype(str).isin(["pooled", "mean"])]
    pooled = ft[ft["fold"].astype(str) == "pooled"]
    if folds.empty or pooled.empty or not folds["auc"].notna().any():
        return ""
    pa, lo, hi = float(pooled["auc"].iloc[0]), folds["auc"].min(), folds["auc"].max()
    tlo, thi = folds["threshold"].min(), folds["threshold"].max()
    text = (f"Pooled AUC {pa:.3f} ranks all out-of-fold probabilities together; the fold AUCs "
            f"({lo:.3f}-{hi:.3f}) rank each fold model's own scores. ")
    if pa < lo:
        text += (f"The pooled AUC is lower than every fold's because the fold models score on "
                 f"different scales (validation thresholds {tlo:.2f}-{thi:.2f}): a score means "
                 "different things in different folds, which a single deployed model would not "
                 "allow. The pooled value is the one to quote.")
    else:
        text += f"Validation thresholds range {tlo:.2f}-{thi:.2f}."
    return text


def table6(cfg) -> Figure:
    ft = io.read_stage_csv(cfg.out_dir / "hrnet/fold_table.csv", "04_hrnet_cv_training.ipynb")
    t = table6_frame(cfg, ft)
    cap = (f"{data_note(cfg)}. Wilson 95% intervals. 'Average' is the unweighted mean of the fold "
           "rows, as the paper's Average row (99.29 / 98.53 / 98.82 over 10 folds); 'Pooled' is one "
           f"confusion matrix of all out-of-fold predictions. {pooled_vs_mean_note(ft)}")
    f = plots.table_figure(t, "Table 6 - HRNet on segmented lungs, per test fold", cap)
    return Figure(f, "table6_hrnet_folds.png", "Table 6", "04_hrnet_cv_training", cap)


def table7_frame(cfg, table7: pd.DataFrame | None = None) -> pd.DataFrame:
    """Table 7 with the paper's columns (accuracy, sensitivity, specificity in %) and our 95 %
    intervals, the paper's value beside ours where the paper reports the model, and ROC-AUC."""
    t = table7 if table7 is not None else io.read_stage_csv(
        cfg.out_dir / "baselines/table7.csv", "05_baseline_comparison.ipynb")
    t = _numeric(t).set_index("model")
    rows = []
    for m in model_order(t.index, cfg.profile.baselines):
        r, paper = t.loc[m], PAPER_TABLE7.get(m)
        row = {"Model": model_label(m), "n": int(r["n"])}
        for i, name in enumerate(("accuracy", "sensitivity", "specificity")):
            row[f"{name.capitalize()} %"] = _pct(r[name], r[f"{name}_lo"], r[f"{name}_hi"])
            row[f"{name[:4].capitalize()}. paper"] = f"{paper[i]:.2f}" if paper else "-"
        row["ROC-AUC [95% CI]"] = (f"{r['roc_auc']:.3f} [{r['roc_auc_lo']:.3f}, {r['roc_auc_hi']:.3f}]"
                                   if np.isfinite(r["roc_auc"]) else "n/a")
        rows.append(row)
    return pd.DataFrame(rows)


def table7(cfg) -> Figure:
    t = table7_frame(cfg)
    cap = (f"{data_note(cfg)}. Pooled out-of-fold predictions on identical patient-grouped folds; "
           "Wilson 95% intervals (rates), patient-level bootstrap 95% intervals (AUC). 'paper': the "
           "paper's Table 7 (10 folds at 512 px, different data); '-' where the paper has no such row.")
    f = plots.table_figure(t, "Table 7 - models compared on the same folds", cap)
    return Figure(f, "table7_models.png", "Table 7", "05_baseline_comparison", cap)


def _fold_mats(preds: pd.DataFrame) -> list[tuple[int, dict, float]]:
    out = []
    for k, part in preds.groupby("fold"):
        m = metrics.confusion(part["y"].to_numpy(), part["pred"].to_numpy())
        acc = (m["tp"] + m["tn"]) / max(1, len(part))
        out.append((int(k), m, acc))
    return out


def fig13(cfg) -> Figure:
    p = io.read_stage_csv(cfg.out_dir / "hrnet/hrnet/preds.csv", "04_hrnet_cv_training.ipynb")
    mats = sorted(_fold_mats(p[p["set"] == "oof"]), key=lambda t: (t[2], -t[0]))
    worst, best = mats[0], mats[-1]
    cap = data_note(cfg)
    f = plots.confusion_matrices([worst[1], best[1]],
                                 [f"(a) worst: fold {fold_label(worst[0])}, acc {100 * worst[2]:.1f}%",
                                  f"(b) best: fold {fold_label(best[0])}, acc {100 * best[2]:.1f}%"],
                                 "Fig. 13 - HRNet confusion matrices", cap)
    return Figure(f, "fig13_hrnet_confusion.png", "Fig. 13", "04_hrnet_cv_training", cap)


def fig14(cfg) -> Figure:
    mats, titles = [], []
    for model in cfg.profile.baselines:
        f = cfg.out_dir / "baselines" / model / "preds.csv"
        if not f.is_file():
            continue
        p = io.read_stage_csv(f, "05_baseline_comparison.ipynb")
        best = sorted(_fold_mats(p[p["set"] == "oof"]), key=lambda t: (t[2], -t[0]))[-1]
        mats.append(best[1])
        titles.append(f"{model_label(model).split(' (')[0]}: best fold {fold_label(best[0])}, "
                      f"acc {100 * best[2]:.1f}%")
    cap = f"{data_note(cfg)}; the paper shows each baseline's best ('optimal') matrix"
    f = plots.confusion_matrices(mats, titles, "Fig. 14 - baseline confusion matrices (best fold)", cap)
    return Figure(f, "fig14_baseline_confusion.png", "Fig. 14", "05_baseline_comparison", cap)


def heat_frames(cfg) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    cls, _ = _kept(cfg)
    seg = explain.collect(cfg.out_dir / "hrnet", "hrnet", len(cls))
    unseg = explain.collect(cfg.out_dir / "baselines", "hrnet_unsegmented", len(cls))
    return cls, seg, unseg


def fig9_12(cfg) -> Figure:
    cls, keep = _kept(cfg)
    _, seg_heat, unseg_heat = heat_frames(cfg)
    segmented = np.asarray(io.load_npy(cfg.out_dir / "refine/segmented.npy"))[keep]
    images = np.asarray(io.load_npy(cfg.out_dir / "curation/cls_images.npy"))[keep]
    lungs = np.asarray(io.load_npy(cfg.out_dir / "refine/masks_raw_cls.npy"))[keep]
    rng = np.random.default_rng(cfg.seed)
    pick = []
    for lab in ("covid", "normal"):
        pool = np.flatnonzero((cls["label"] == lab).to_numpy())
        pick += list(rng.choice(pool, size=min(len(pool), cfg.profile.gradcam_per_class), replace=False))
    s_un = explain.heat_share(unseg_heat[pick], lungs[pick])
    s_se = explain.heat_share(seg_heat[pick], lungs[pick])
    titles = [f"{cls.label[i]}\nheat in lungs\n{a:.0%} -> {b:.0%}" for i, a, b in zip(pick, s_un, s_se)]
    cap = (f"{data_note(cfg)}; each map from the fold model that did not train on the image; row "
           "labels: share of the heat inside the lung outline, full-image model -> segmented model")
    f = plots.heatmap_pairs(images[pick], unseg_heat[pick], segmented[pick], seg_heat[pick], lungs[pick],
                            titles, cap)
    return Figure(f, "fig09_12_gradcam.png", "Figs. 9 and 12", "04/05", cap)


def heat_share_frame(cfg) -> pd.DataFrame:
    a = io.read_stage_csv(cfg.out_dir / "hrnet/heat_share.csv", "04_hrnet_cv_training.ipynb")
    b = io.read_stage_csv(cfg.out_dir / "baselines/heat_share.csv", "05_baseline_comparison.ipynb")
    df = pd.concat([b, a], ignore_index=True)
    num = [c for c in df.columns if c.startswith(("share_", "area_"))]
    df[num] = df[num].apply(pd.to_numeric, errors="coerce")
    return df


def fig_heat_share(cfg) -> Figure:
    df = heat_share_frame(cfg)
    chance = float(df["area_lung"].mean())
    summ = df.groupby("model")["share_lung"].mean()
    cap = (f"{data_note(cfg)}; means: " + ", ".join(f"{k} {v:.2f}" for k, v in summ.items())
           + f"; dashed = lung area fraction {chance:.2f}")
    f = plots.share_plot(df, "model", "share_lung", "label",
                         "Share of Grad-CAM heat inside the lung mask, every test image", chance, cap)
    return Figure(f, "fig09_12_heat_share.png", "Figs. 9 and 12 (quantified)", "04/05", cap)


def history_frame(cfg) -> pd.DataFrame:
    """Every classifier's per-epoch history of this run (``<stage>/<model>/history.csv``)."""
    files = sorted((cfg.out_dir / "hrnet").glob("*/history.csv")) + \
        sorted((cfg.out_dir / "baselines").glob("*/history.csv"))
    if not files:
        raise FileNotFoundError(f"no classifier history under {cfg.out_dir}: run notebooks 04 and 05")
    return pd.concat([pd.read_csv(f) for f in files], ignore_index=True)


def planned_epochs(cfg, names) -> dict[str, int]:
    """The epochs each model trains for under this profile (baselines and audits may be cut)."""
    P = cfg.profile
    role = lambda n: "audit" if n.startswith("audit_") else (  # noqa: E731
        "proposed" if n.startswith("hrnet") else "baseline")
    return {n: P.for_network(n, role(n)).cls_epochs for n in names}


def training_dynamics(cfg) -> Figure:
    h = history_frame(cfg)
    P = cfg.profile
    names = model_order(h["model"].unique(), P.baselines)
    planned = {n: P.cls_epochs for n in names}  # the proposed model's epochs, for comparison
    epochs = planned_epochs(cfg, names)
    cut = [model_label(n) for n in names if epochs[n] < P.cls_epochs]
    cap = (f"{data_note(cfg)}; {P.cls_epochs} epochs, learning-rate schedule {P.lr_schedule}"
           + (f"; cut to fewer epochs for the budget: {', '.join(cut)}" if cut else ""))
    f = plots.fold_curves(h, [(n, model_label(n)) for n in names],
                          "Training dynamics: every fold of every classifier", cap, planned)
    return Figure(f, "ev_training_dynamics.png", "beyond the paper (training dynamics)",
                  "04/05", cap)


def ladder_frame(table: pd.DataFrame) -> pd.DataFrame:
    """The ladder table as a reader sees it: one row per rung, AUCs to three decimals."""
    from . import ladder

    if table is None or table.empty:
        return pd.DataFrame({"note": ["no ladder in this profile (./run_all.sh cpu-deconf runs one)"]})
    t = table.copy()
    out = pd.DataFrame({"rung": t["rung"], "steps": t["steps"],
                        "internal AUC [95% CI]": [f"{a:.3f} [{lo:.3f}, {hi:.3f}]" for a, lo, hi
                                                  in zip(t["auc"], t["auc_lo"], t["auc_hi"])]})
    for key in ladder.AUDITS:
        out[f"probe {key.replace('_', ' ')}"] = t[f"audit_{key}"].round(3)
    out["shortcut excess"] = t["shortcut_excess"].round(3)
    out["heat in lungs / lung area"] = [f"{h:.2f} / {a:.2f}" for h, a in
                                         zip(t["heat_share_lungs"], t["lung_area"])]
    out["within-source AUC"] = t["within_source"].fillna("").replace("", "none with both classes")
    return out


def ladder_figure(cfg, table: pd.DataFrame | None = None) -> Figure | None:
    """The de-confounding ladder (notebook 05b); None when the profile runs no ladder."""
    from . import ladder

    if table is None:
        f = cfg.out_dir / "ladder/ladder_table.csv"
        table = io.read_stage_csv(f, "05b_deconfounding_ladder.ipynb") if f.is_file() else None
    if table is None or table.empty:
        return None
    table = table.copy()
    table["within_source"] = table["within_source"].fillna("") if "within_source" in table else ""
    fav = ladder.favoured(table)
    cap = (f"{data_note(cfg)}; probes = logistic regression on the rung's inputs; * = favoured by the "
           f"audits ({fav}): lowest mean |probe AUC - 0.5|, ties within {ladder.TIE} broken by heat "
           "inside the lungs; internal AUC does not choose")
    f = plots.ladder_plot(table, ladder.AUDITS, fav, "De-confounding ladder: the proposed model per rung",
                          cap)
    return Figure(f, "ev_ladder.png", "beyond the paper (de-confounding ladder)",
                  "05b_deconfounding_ladder", cap)


BUILDERS = [fig7, fig10, fig6, table6, table7, fig13, fig14, fig9_12, fig_heat_share,
            training_dynamics, ladder_figure]


# The evidence figures draw the tables notebook 06 computed once and saved
# (:func:`helpers.evidence.read_tables`); each builder takes ``(cfg, tables)`` and returns None
# when its inputs are missing.
def ev_calibration(cfg, tables: dict) -> Figure | None:
    cal, rel = tables.get("calibration"), tables.get("reliability")
    if cal is None or rel is None:
        return None
    note = data_note(cfg)
    return Figure(plots.calibration_plot(cal, rel, caption=note), "ev_calibration.png",
                  "beyond the paper (calibration of Table 7 models)", "06_figure_generation",
                  f"{note}; Brier and ECE of the pooled out-of-fold probabilities")


def ev_ppv_npv(cfg, tables: dict) -> Figure | None:
    prev = tables.get("ppv_npv")
    if prev is None:
        return None
    note = data_note(cfg)
    return Figure(plots.prevalence_plot(prev, caption=note), "ev_ppv_npv.png",
                  "beyond the paper (predictive values behind Tables 6-7)", "06_figure_generation",
                  f"{note}; PPV / NPV at 1-20 % prevalence by Bayes' rule")


def ev_auc_forest(cfg, tables: dict) -> Figure | None:
    from . import evidence

    t7 = evidence.read_artefact(cfg.out_dir, "baselines/table7.csv")
    if t7 is None or t7.empty:
        return None
    ext = evidence.read_artefact(cfg.out_dir, "baselines/external_table.csv")
    note = data_note(cfg)
    f = plots.auc_forest(t7, ext, caption=note, order=evidence.model_order(t7["model"].astype(str)))
    return Figure(f, "ev_auc_forest.png", "Table 7 (ROC-AUC with intervals)", "06_figure_generation",
                  f"{note}; internal pooled out-of-fold AUC"
                  + ("; external mean-of-folds AUC" if ext is not None and len(ext) else ""))


def ev_heat_share(cfg, tables: dict) -> Figure | None:
    hs = tables.get("heat_share_ci")
    if hs is None or hs.empty:
        return None
    note = data_note(cfg)
    return Figure(plots.heat_share_plot(hs, caption=note), "ev_heat_share.png",
                  "Figs. 9 and 12 (quantified, with intervals)", "06_figure_generation",
                  f"{note}; heat share inside the lung mask, segmented vs unsegmented HRNet")


def ev_audits(cfg, tables: dict) -> Figure | None:
    from . import evidence

    at = evidence.read_artefact(cfg.out_dir, "baselines/audit_table.csv")
    if at is None or at.empty:
        return None
    null = evidence.read_json(cfg.out_dir, "baselines/permutation_null.json")
    note = data_note(cfg)
    f = plots.audit_plot(at, null, caption=note, descriptions=evidence.AUDIT_SHORT)
    return Figure(f, "ev_audits.png", "beyond the paper (shortcut audits, DeGrave et al. 2021)",
                  "06_figure_generation", f"{note}; audit AUCs against chance")


EVIDENCE_BUILDERS = [ev_calibration, ev_ppv_npv, ev_auc_forest, ev_heat_share, ev_audits]


def evidence_records(cfg, tables: dict) -> list[Figure]:
    """The evidence figures (calibration, predictive values, AUC forest, heat share, audits) drawn
    from the saved evidence ``tables``; a figure whose inputs are missing is left out."""
    return [r for r in (b(cfg, tables) for b in EVIDENCE_BUILDERS) if r is not None]


def write_all(cfg, dest: Path, builders=None, with_evidence: bool = True) -> pd.DataFrame:
    """Draw and save every figure into ``dest``; returns the figure index (one row per file).

    ``dest`` is the figures stage folder: the evidence tables must already be saved there
    (:func:`helpers.evidence.save_tables`, as notebook 06 does); they are read, never recomputed.
    Writes the PNGs, ``index.csv`` and ``README.md``, then ``SUMMARY.md`` (which reads the index
    and the saved tables).
    """
    from . import evidence, summary

    dest = Path(dest)
    tables = evidence.read_tables(dest)
    missing = [evidence.TABLES[n] for n, t in tables.items() if t is None]
    if with_evidence and missing:
        raise FileNotFoundError(f"{dest} lacks the evidence tables {missing}: save them there first "
                                "with evidence.save_tables(evidence.evidence_tables(...), dest) "
                                "(notebooks/06_figure_generation.ipynb does)")
    rows = []
    rev = repro.git_revision()
    records = [r for r in (b(cfg) for b in builders or BUILDERS) if r is not None]
    if with_evidence:
        records += evidence_records(cfg, tables)
    for fig in records:
        plots.save(fig.fig, dest / fig.file)
        rows.append({"file": fig.file, "paper": fig.panel, "notebook": fig.notebook,
                     "profile": cfg.profile.name, "data": data_note(cfg), "git_revision": rev,
                     "caption": fig.caption})
    index = pd.DataFrame(rows)
    io.save_csv(index, dest / "index.csv")
    write_readme(cfg, index, dest)
    summary.write_summary(cfg.out_dir, dest / "SUMMARY.md", cfg_dict=cfg.to_dict(), figures_rel=".",
                          figures_dir=dest)
    return index


def write_readme(cfg, index: pd.DataFrame, dest: Path) -> Path:
    """``README.md`` beside the figures: each file, its paper panel, notebook, profile, revision, data."""
    from . import summary

    lines = [f"# Figures: profile `{cfg.profile.name}`", "",
             f"Data: {data_note(cfg)}.  ", f"Git revision: `{index['git_revision'].iloc[0]}`.  ",
             f"Written by `notebooks/06_figure_generation.ipynb` from the artefacts in "
             f"`{summary.display_path(cfg.out_dir)}/`.", "",
             "The generated results summary is [SUMMARY.md](SUMMARY.md).", "",
             "| file | paper | notebook | caption |", "|---|---|---|---|"]
    for r in index.itertuples(index=False):
        lines.append(f"| [{r.file}]({r.file}) | {r.paper} | {r.notebook} | {r.caption} |")
    path = Path(dest) / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path
