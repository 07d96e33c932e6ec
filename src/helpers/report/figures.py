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

from helpers import explain
from helpers.evidence import audits, metrics, recomputed
from helpers.paths import display_path
from helpers.report import plots
from helpers.report.tables import (
    fold_label,
    heat_share_frame,
    history_frame,
    model_label,
    planned_epochs,
    pooled_vs_mean_note,
    table6_frame,
    table7_frame,
)
from helpers.run import repro, store
from helpers.run.artefacts import ART, MAIN_MODEL_DIR, kept, read_csv


@dataclass
class Figure:
    fig: object
    file: str
    panel: str
    notebook: str
    caption: str


def data_note(cfg) -> str:
    """The one caption line saying what the data are (:func:`helpers.evidence.recomputed.data_note`)."""
    return recomputed.data_note(cfg.out_dir, cfg.to_dict())


def fig7(cfg) -> Figure:
    z = np.load(ART.aug_samples.path(cfg.out_dir))
    f = plots.augmentation_samples(z["originals"], z["images"], z["masks"], caption=data_note(cfg))
    return Figure(f, "fig07_augmentation.png", "Fig. 7", "02_unet_training", "Table 3 augmentation samples")


def fig10(cfg) -> Figure:
    h = ART.unet_history.read(cfg.out_dir)
    d = ART.unet_dice.read(cfg.out_dir)
    cap = f"{data_note(cfg)}; held-out Dice {d.dice.mean():.3f} (n={len(d)}), folds={h.fold.nunique()}"
    f = plots.training_curves(h, [("train_loss", "val_loss"), ("train_acc", "val_acc"),
                                  ("train_dice", "val_dice")],
                              "Fig. 10 - UNet training / validation curves (mean +- sd over folds)", cap)
    return Figure(f, "fig10_unet_curves.png", "Fig. 10", "02_unet_training", cap)


def fig6(cfg, n: int = 6) -> Figure:
    cls = ART.cls_index.read(cfg.out_dir)
    ri = ART.refine_index.read(cfg.out_dir)
    images = ART.cls_images.read(cfg.out_dir)
    raw = ART.masks_raw_cls.read(cfg.out_dir)
    ref = ART.masks_refined_cls.read(cfg.out_dir)
    passed = store.bool_column(ri, "passed")
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


def table6(cfg) -> Figure:
    ft = ART.fold_table.read(cfg.out_dir)
    t = table6_frame(cfg, ft)
    cap = (f"{data_note(cfg)}. Wilson 95% intervals. 'Average' is the unweighted mean of the fold "
           "rows, as the paper's Average row (99.29 / 98.53 / 98.82 over 10 folds); 'Pooled' is one "
           f"confusion matrix of all out-of-fold predictions. {pooled_vs_mean_note(ft)}")
    from helpers.preprocess import describe_inputs

    f = plots.table_figure(t, f"Table 6 - HRNet on {describe_inputs(cfg.profile, True)}, per test fold", cap)
    return Figure(f, "table6_hrnet_folds.png", "Table 6", "04_hrnet_cv_training", cap)


def table7(cfg) -> Figure:
    from helpers.preprocess import describe_inputs

    t = table7_frame(cfg)
    cap = (f"{data_note(cfg)}. Pooled out-of-fold predictions on identical patient-grouped folds; "
           "Wilson 95% intervals (rates), patient-level bootstrap 95% intervals (AUC). 'paper': the "
           "paper's Table 7 (10 folds at 512 px, different data); '-' where the paper has no such row. "
           f"Proposed model's inputs: {describe_inputs(cfg.profile, True)}.")
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
    p = ART.hrnet_preds.read(cfg.out_dir)
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
        p = read_csv(f)  # the registry's typed reader (a baseline's folder is named by the model)
        best = sorted(_fold_mats(p[p["set"] == "oof"]), key=lambda t: (t[2], -t[0]))[-1]
        mats.append(best[1])
        titles.append(f"{model_label(model).split(' (')[0]}: best fold {fold_label(best[0])}, "
                      f"acc {100 * best[2]:.1f}%")
    cap = f"{data_note(cfg)}; the paper shows each baseline's best ('optimal') matrix"
    f = plots.confusion_matrices(mats, titles, "Fig. 14 - baseline confusion matrices (best fold)", cap)
    return Figure(f, "fig14_baseline_confusion.png", "Fig. 14", "05_baseline_comparison", cap)


def heat_frames(cfg) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    cls, _ = kept(cfg)
    seg = explain.collect(cfg.out_dir / "hrnet", MAIN_MODEL_DIR, len(cls))
    unseg = explain.collect(cfg.out_dir / "baselines", "hrnet_unsegmented", len(cls))
    return cls, seg, unseg


def fig9_12(cfg) -> Figure:
    from helpers import inputs, preprocess

    cls, seg_heat, unseg_heat = heat_frames(cfg)
    # the films as the two models saw them (crops, standardisation), so the maps sit on their inputs
    k = inputs.kept_arrays(cfg, shapes=bool(cfg.profile.cls_film_only and cfg.profile.cls_crop_lungs))
    x = inputs.view(k, cfg.profile)
    segmented, images, lungs = x["segmented"], x["unsegmented"], x["lungs"]
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
    names = tuple(f"HRNet, {preprocess.describe_inputs(cfg.profile, s, short=True)}" for s in (False, True))
    f = plots.heatmap_pairs(images[pick], unseg_heat[pick], segmented[pick], seg_heat[pick], lungs[pick],
                            titles, cap, models=names)
    return Figure(f, "fig09_12_gradcam.png", "Figs. 9 and 12", "04/05", cap)


def fig_heat_share(cfg) -> Figure:
    df = heat_share_frame(cfg)
    chance = float(df["area_lung"].mean())
    summ = df.groupby("model")["share_lung"].mean()
    cap = (f"{data_note(cfg)}; means: " + ", ".join(f"{k} {v:.2f}" for k, v in summ.items())
           + f"; dashed = lung area fraction {chance:.2f}")
    f = plots.share_plot(df, "model", "share_lung", "label",
                         "Share of Grad-CAM heat inside the lung mask, every test image", chance, cap)
    return Figure(f, "fig09_12_heat_share.png", "Figs. 9 and 12 (quantified)", "04/05", cap)


def training_dynamics(cfg) -> Figure:
    h = history_frame(cfg)
    P = cfg.profile
    names = recomputed.model_order(h["model"].unique())
    planned = {n: P.cls_epochs for n in names}  # the proposed model's epochs, for comparison
    epochs = planned_epochs(cfg, names)
    cut = [model_label(n) for n in names if epochs[n] < P.cls_epochs]
    cap = (f"{data_note(cfg)}; {P.cls_epochs} epochs, learning-rate schedule {P.lr_schedule}"
           + (f"; cut to fewer epochs for the budget: {', '.join(cut)}" if cut else ""))
    f = plots.fold_curves(h, [(n, model_label(n, P, short=True)) for n in names],
                          "Training dynamics: every fold of every classifier", cap, planned)
    return Figure(f, "ev_training_dynamics.png", "beyond the paper (training dynamics)",
                  "04/05", cap)


def ladder_figure(cfg, table: pd.DataFrame | None = None) -> Figure | None:
    """The de-confounding ladder (notebook 05b); None when the profile runs no ladder."""
    from helpers.evidence import probes

    if table is None:
        table = ART.ladder_table.find(cfg.out_dir)
    if table is None or table.empty:
        return None
    table = table.copy()
    table["within_source"] = table["within_source"].fillna("") if "within_source" in table else ""
    fav = probes.favoured(table)
    cap = (f"{data_note(cfg)}; probes = logistic regression on the rung's inputs; * = favoured by the "
           f"audits ({fav}): lowest mean |probe AUC - 0.5|, ties within {probes.TIE} broken by heat "
           "inside the lungs; internal AUC does not choose")
    what = {k: audits.AUDITS[k].short for k in probes.PROBES}
    f = plots.ladder_plot(table, what, fav, "De-confounding ladder: the proposed model per rung", cap)
    return Figure(f, "ev_ladder.png", "beyond the paper (de-confounding ladder)",
                  "05b_deconfounding_ladder", cap)


BUILDERS = [fig7, fig10, fig6, table6, table7, fig13, fig14, fig9_12, fig_heat_share,
            training_dynamics, ladder_figure]


# The evidence figures draw the tables notebook 06 computed once and saved
# (:func:`helpers.evidence.recomputed.read_tables`); each builder takes ``(cfg, tables)`` and returns None
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
    from helpers.evidence import recomputed

    t7 = ART.table7.find(cfg.out_dir)
    if t7 is None or t7.empty:
        return None
    ext = ART.external_table.find(cfg.out_dir)
    note = data_note(cfg)
    within = tables.get("within_source")
    f = plots.auc_forest(t7, ext, caption=note, order=recomputed.model_order(t7["model"].astype(str)),
                         within=within)
    return Figure(f, "ev_auc_forest.png", "Table 7 (ROC-AUC with intervals)", "06_figure_generation",
                  f"{note}; internal pooled out-of-fold AUC"
                  + ("; external mean-of-folds AUC" if ext is not None and len(ext) else "")
                  + ("; AUC within each source that gave both classes"
                     if within is not None and len(within) else ""))


def ev_sites(cfg, tables: dict) -> Figure | None:
    from helpers.evidence import recomputed

    lt = tables.get("loso_table")
    if lt is None or lt.empty:
        return None
    note = data_note(cfg)
    f = plots.loso_plot(lt, caption=note, order=recomputed.model_order(lt["model"].astype(str)))
    return Figure(f, "ev_sites.png", "beyond the paper (leave one site out)", "06_figure_generation",
                  f"{note}; share of a left-out site's non-COVID films called COVID")


def ev_heat_share(cfg, tables: dict) -> Figure | None:
    hs = tables.get("heat_share_ci")
    if hs is None or hs.empty:
        return None
    note = data_note(cfg)
    return Figure(plots.heat_share_plot(hs, caption=note), "ev_heat_share.png",
                  "Figs. 9 and 12 (quantified, with intervals)", "06_figure_generation",
                  f"{note}; heat share inside the lung mask, segmented vs unsegmented HRNet")


def ev_audits(cfg, tables: dict) -> Figure | None:

    at = ART.audit_table.find(cfg.out_dir)
    if at is None or at.empty:
        return None
    null = ART.permutation_null.find(cfg.out_dir)
    note = data_note(cfg)
    f = plots.audit_plot(at, null, caption=note, descriptions=audits.short_descriptions())
    return Figure(f, "ev_audits.png", "beyond the paper (shortcut audits, DeGrave et al. 2021)",
                  "06_figure_generation", f"{note}; audit AUCs against chance")


EVIDENCE_BUILDERS = [ev_calibration, ev_ppv_npv, ev_auc_forest, ev_heat_share, ev_audits, ev_sites]


def evidence_records(cfg, tables: dict) -> list[Figure]:
    """The evidence figures (calibration, predictive values, AUC forest, heat share, audits) drawn
    from the saved evidence ``tables``; a figure whose inputs are missing is left out."""
    return [r for r in (b(cfg, tables) for b in EVIDENCE_BUILDERS) if r is not None]


def write_all(cfg, dest: Path, builders=None, with_evidence: bool = True) -> pd.DataFrame:
    """Draw and save every figure into ``dest``; returns the figure index (one row per file).

    ``dest`` is the figures stage folder: the evidence tables must already be saved there
    (:func:`helpers.evidence.recomputed.save_tables`, as notebook 06 does); they are read, never recomputed.
    Writes the PNGs, ``index.csv`` and ``README.md``, then ``SUMMARY.md`` (which reads the index
    and the saved tables).
    """
    from helpers.evidence import recomputed
    from helpers.report import summary

    dest = Path(dest)
    tables = recomputed.read_tables(dest)
    missing = [recomputed.TABLES[n] for n, t in tables.items() if t is None]
    if with_evidence and missing:
        raise FileNotFoundError(f"{dest} lacks the evidence tables {missing}: save them there first "
                                "with recomputed.save_tables(recomputed.evidence_tables(...), dest) "
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
    store.save_csv(index, dest / "index.csv")
    write_readme(cfg, index, dest)
    summary.write_summary(cfg.out_dir, dest / "SUMMARY.md", cfg_dict=cfg.to_dict(), figures_rel=".",
                          figures_dir=dest)
    return index


def write_readme(cfg, index: pd.DataFrame, dest: Path) -> Path:
    """``README.md`` beside the figures: each file, its paper panel, notebook, profile, revision, data."""
    lines = [f"# Figures: profile `{cfg.profile.name}`", "",
             f"Data: {data_note(cfg)}.  ", f"Git revision: `{index['git_revision'].iloc[0]}`.  ",
             f"Written by `notebooks/06_figure_generation.ipynb` from the artefacts in "
             f"`{display_path(cfg.out_dir)}/`.", "",
             "The generated results summary is [SUMMARY.md](SUMMARY.md).", "",
             "| file | paper | notebook | caption |", "|---|---|---|---|"]
    for r in index.itertuples(index=False):
        lines.append(f"| [{r.file}]({r.file}) | {r.paper} | {r.notebook} | {r.caption} |")
    path = Path(dest) / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path
