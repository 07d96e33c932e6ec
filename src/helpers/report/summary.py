"""A markdown results summary of one run, generated from its artefacts only.

In the spirit of a model card and of the CLAIM checklist (Checklist for Artificial Intelligence
in Medical Imaging): what was run and on which data, the cohort and how it was curated, how the
folds were made, every result with its uncertainty, the paper's numbers checked by the claims
ledger, the shortcut audits, the saliency check, external validation, and the limitations a
reader must know. No number is written by hand, and none is computed here: everything is read
from ``OUT_DIR`` (the CSV and JSON files the notebooks saved), the evidence tables (calibration,
predictive values, paired comparisons, ledger, heat share) from the figures stage folder where
notebook 06 saved them (:func:`helpers.evidence.recomputed.read_tables`). A run on generated phantoms gets a
banner saying so.

Formats (:mod:`helpers.report.formats`): rates in percent with one decimal (``83.0 %``; Wilson 95 %
interval in brackets), AUCs, Dice, Brier and ECE with three decimals.

``summary_markdown(out_dir, ...)`` returns the text; ``write_summary(out_dir, dest, ...)``
writes it and returns the path.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from helpers.evidence import recomputed as ev
from helpers.report.formats import fmt_auc, fmt_pct, md_table, num
from helpers.report.formats import fmt_p as _fmt_p
from helpers.report.formats import setting as _setting
from helpers.report.formats import to_float as _num
from helpers.report.tables import fold_label, readable_folds
from helpers.run import store
from helpers.run.artefacts import ART, Artefact


def display_path(p: Path) -> str:
    """``outputs/<profile>`` style path when the run lives in a repository, else the folder name."""
    p = Path(p).resolve()
    for parent in p.parents:
        if (parent / "pyproject.toml").is_file():
            return str(p.relative_to(parent))
    return p.name


__all__ = ["SECTIONS", "summary_markdown", "write_summary", "fmt_pct", "fmt_auc", "md_table"]

#: Section headings, in order (``## <heading>``); "Figures" only when ``figures_rel`` is given.
SECTIONS = ["What was run", "Cohort and curation", "Splits", "Segmentation", "Classification",
            "Claims ledger", "Shortcut audits", "De-confounding ladder", "Saliency",
            "External validation", "Limitations", "Checklist"]

PHANTOM_BANNER = "GENERATED PHANTOMS: plumbing, not science"

# Profile fields compared with the paper's protocol (label, field).
_PROTOCOL = [("UNet input (px)", "seg_size"), ("UNet folds", "seg_folds"),
             ("UNet epochs", "unet_epochs"), ("UNet base channels", "unet_base_channels"),
             ("classifier input (px)", "cls_size"), ("classification folds", "n_folds"),
             ("HRNet", "hrnet"), ("classifier epochs", "cls_epochs"), ("batch", "cls_batch"),
             ("learning-rate schedule", "lr_schedule"), ("learning-rate steps", "lr_milestones"),
             ("classifier augmentation", "cls_augment"), ("baselines", "baselines"),
             ("baseline epochs", "baseline_epochs_used"), ("audit CNN epochs", "audit_epochs_used")]


def _missing(art: Artefact) -> str:
    return f"_Not available: `{art.rel()}` is missing (written by `notebooks/{art.notebook}`)._\n"


def _missing_table(name: str) -> str:
    return _missing(getattr(ART, name))


# --------------------------------------------------------------------------------------------
# context shared by the sections
# --------------------------------------------------------------------------------------------
class Run:
    def __init__(self, out_dir: Path, cfg_dict: dict | None, figures_rel: str | None,
                 figures_dir: Path | None = None):
        self.out = Path(out_dir)
        # where notebook 06 saved the evidence tables and the figure index
        self.figures_dir = Path(figures_dir) if figures_dir else self.out / "figures"
        self.manifests = {s: ev.run_manifest(self.out, s) for s in ev.STAGES}
        # the figures stage writes this summary, so its manifest on disk (if any) belongs to an
        # earlier run of 06; only the finished upstream stages are described
        self.manifests = {s: m for s, m in self.manifests.items() if m and s != "figures"}
        latest = ev.run_manifest(self.out)
        self.cfg = cfg_dict or latest.get("config") or {}
        self.profile = dict(self.cfg.get("profile") or {})
        self.info = ev.run_info(self.out, self.cfg or None)
        self.figures_rel = figures_rel.rstrip("/") if figures_rel else None
        self._cache: dict = {}

    def csv(self, art: Artefact) -> pd.DataFrame | None:
        if art.rel() not in self._cache:
            self._cache[art.rel()] = art.find(self.out)
        return self._cache[art.rel()]

    def json(self, art: Artefact):
        return art.find(self.out)

    def table(self, name: str) -> pd.DataFrame | None:
        """A saved evidence table (:data:`helpers.evidence.recomputed.TABLES`); None when missing."""
        key = f"_table:{name}"
        if key not in self._cache:
            self._cache[key] = ev.read_table(self.figures_dir, name)
        return self._cache[key]

    def fig(self, name: str, text: str) -> str:
        if not self.figures_rel:
            return ""
        return f"Figure: [{text}]({self.figures_rel}/{name})"


# --------------------------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------------------------
def banner(run: Run) -> list[str]:
    if not run.info["synthetic"]:
        return []
    p = run.profile
    extra = []
    if "shortcut_strength" in p:
        extra.append(f"a planted site marker (shortcut_strength = {p['shortcut_strength']})")
    if "finding_contrast" in p:
        extra.append(f"findings drawn at {p['finding_contrast']}x the default opacity")
    how = f" with {' and '.join(extra)}" if extra else ""
    return [f"> **⚠ {PHANTOM_BANNER}.** Every number below comes from images generated by "
            f"`helpers.data.phantoms`{how}, not from chest X-rays. They show that the pipeline "
            "runs end to end and that the statistics are computed correctly; they say nothing "
            "about how well any model detects COVID-19.", ""]


def _what_was_run(run: Run) -> list[str]:
    L = []
    info = run.info
    data = ("generated phantoms (no real images)" if info["synthetic"] else
            f"real chest X-rays from `{Path(str(info['data_dir'])).name}` (the run's data folder; "
            "its full path is in the stage's `run_manifest.json`)" if info["data"] == "real" else "unknown")
    L.append(f"- Profile: **{info['profile']}**; data: {data}.")
    if run.cfg:
        ext = run.cfg.get("external_data_dir")
        ext = f"`{Path(str(ext)).name}` (full path in the run's manifests)" if ext else "none"
        L.append(f"- Seed: {run.cfg.get('seed', 'n/a')}; overrides: "
                 f"{json.dumps(run.cfg.get('overrides') or {}) or '{}'}; external data: {ext}.")
    if not run.manifests:
        L.append("- _No `run_manifest.json` found in any stage folder._")
        return L
    revs = {s: m.get("git_revision", "unknown") for s, m in run.manifests.items()}
    uniq = sorted(set(revs.values()))
    if len(uniq) == 1:
        L.append(f"- Git revision: `{uniq[0]}` (all {len(revs)} stages).")
    else:
        L.append("- Git revisions **differ between stages**: "
                 + ", ".join(f"{s} `{r}`" for s, r in revs.items()) + ".")
    from helpers.run.repro import git_revision

    L.append(f"- This summary and the figures: written at revision `{git_revision()}`.")
    dates = sorted(m.get("finished_utc", "") for m in run.manifests.values() if m.get("finished_utc"))
    if dates:
        L.append(f"- Date (UTC, stage finished): {dates[0]}" + (f" to {dates[-1]}" if dates[-1] != dates[0]
                                                                else "") + ".")
    devs = []
    for m in run.manifests.values():
        d = m.get("device") or {}
        if not d:
            continue
        s = ("GPU " + str(d["gpu"])) if d.get("gpu") else ("CUDA" if d.get("cuda") else "CPU only")
        s += (f", {d.get('cpu_count', '?')} CPU cores, torch threads {d.get('torch_threads', '?')}, "
              f"Python {d.get('python', '?')}, {d.get('platform', '?')}")
        if s not in devs:
            devs.append(s)
    if devs:
        L.append("- Device: " + "; ".join(devs) + ".")
    pk = next((m.get("packages") for m in run.manifests.values() if m.get("packages")), None)
    if pk:
        L.append("- Packages: " + ", ".join(f"{k} {v}" for k, v in sorted(pk.items())) + ".")
    L.append("")
    rows = []
    for s, m in run.manifests.items():
        t = dict(m.get("timings_s") or {})
        total = t.pop("total", np.nan)
        parts = ", ".join(f"{k} {v:.0f}" for k, v in sorted(t.items(), key=lambda kv: -_num(kv[1]))[:6]
                          if math.isfinite(_num(v)))
        row = {"stage": s, "total (s)": f"{_num(total):.1f}" if math.isfinite(_num(total)) else "",
               "largest parts (s)": parts}
        earlier = [r for r in (m.get("earlier_runs") or []) if isinstance(r, dict)]
        if earlier:
            row["earlier runs of the stage (s, revision)"] = "; ".join(
                f"{_num(r.get('total_s')):.1f} ({str(r.get('git_revision') or '?')[:7]})"
                for r in earlier[-3:])
        rows.append(row)
    L += ["Timings (from each stage's `run_manifest.json`; a stage that resumed reuses the fold "
          "results saved by earlier runs in its folder, so its own time can be far shorter than "
          "training took):", "", md_table(pd.DataFrame(rows).fillna("")), ""]
    if run.profile:
        from helpers.config import PROFILES

        paper = PROFILES["paper"].to_dict()
        rows = []
        for label, key in _PROTOCOL:
            if key not in run.profile:
                continue
            fa, fb = _setting(run.profile[key]), _setting(paper.get(key))
            rows.append({"setting": label, "this run": fa, "paper protocol": fb,
                         "same": "yes" if fa == fb else "**no**"})
        L += ["Settings against the paper's protocol (profile `paper`):", "", md_table(pd.DataFrame(rows))]
    return L


def cohort_section(run: Run) -> list[str]:
    L = []
    c = run.csv(ART.cohort)
    if c is None:
        return [_missing(ART.cohort)]
    L += [f"Images and patients per role, class and source (`{ART.cohort.rel()}`):", "", md_table(c), ""]
    cls = c[c["role"].astype(str) == "classify"] if "role" in c.columns else c
    if len(cls) and "images" in cls.columns:
        by = cls.groupby("label")["images"].sum()
        L.append("- Classification images: " + ", ".join(f"{k} {int(v)}" for k, v in by.items())
                 + f" (total {int(by.sum())}).")
    flow = run.csv(ART.flow)
    if flow is not None and len(flow):
        L += ["", f"Curation flow (`{ART.flow.rel()}`):", "", md_table(flow), ""]
    exc = run.csv(ART.excluded)
    if exc is not None:
        if len(exc):
            keys = [k for k in ("source", "step", "reason") if k in exc.columns]
            g = exc.groupby(keys, dropna=False).size().reset_index(name="images")
            g = g.sort_values("images", ascending=False)
            L += [f"- Excluded images: {len(exc)} in total; by source, step and reason:", "",
                  md_table(g.head(20)), ""]
        else:
            L.append("- Excluded images: none.")
    dup = run.csv(ART.duplicates)
    if dup is not None:
        if len(dup):
            def count(col):
                return int(store.bool_column(dup, col).sum()) if col in dup.columns else 0
            L.append(f"- Near-duplicate pairs found: {len(dup)} (same patient {count('same_patient')}, "
                     f"across sources {count('cross_source')}, with conflicting labels "
                     f"{count('conflicting_label')}).")
        else:
            L.append("- Near-duplicate pairs found: none.")
    return L


def _splits(run: Run) -> list[str]:
    L = []
    fs = run.csv(ART.folds_summary)
    idx = run.csv(ART.cls_index)
    if fs is None and idx is None:
        return [_missing(ART.folds_summary)]
    if fs is not None and len(fs):
        fs = readable_folds(fs)
        L += [f"{len(fs)} classification folds (`{ART.folds_summary.rel()}`):", "", md_table(fs), ""]
        both = [c for c in ("images_covid", "images_normal") if c in fs.columns]
        if len(both) == 2:
            one = fs[(fs[both[0]] == 0) | (fs[both[1]] == 0)]
            L.append("- Every fold holds both classes." if one.empty else
                     f"- **Folds with one class:** {', '.join(map(str, one['fold']))} (AUC undefined there).")
    if idx is not None and len(idx) and "fold" in idx.columns:
        gcol = "group_id" if "group_id" in idx.columns else "patient_id"
        spread = idx.groupby(gcol)["fold"].nunique()
        pspread = idx.groupby("patient_id")["fold"].nunique() if "patient_id" in idx.columns else spread
        L.append(f"- Patient-grouped: folds are drawn over `{gcol}`; {int((spread > 1).sum())} groups and "
                 f"{int((pspread > 1).sum())} patients appear in more than one fold "
                 f"({idx['patient_id'].nunique() if 'patient_id' in idx.columns else 'n/a'} patients, "
                 f"{len(idx)} images).")
    ri = run.csv(ART.refine_index)
    if ri is not None and len(ri) and "passed" in ri.columns:
        kept = int(store.bool_column(ri, "passed").sum())
        L.append(f"- Classification uses the {kept} of {len(ri)} images whose lung mask passed refinement.")
    L.append("- Decision thresholds: each fold model's threshold (Youden's J) is chosen on an inner "
             "validation split of its training part, never on the test fold.")
    return L


def _segmentation(run: Run) -> list[str]:
    L = []
    dt = run.csv(ART.dice_table)
    if dt is None:
        L.append(_missing(ART.dice_table))
    elif len(dt):
        dt = readable_folds(dt, "name", dt["group"] == "fold")
        t = pd.DataFrame({"by": dt["group"], "name": dt["name"], "n": dt["n"].map(num),
                          "Dice mean": dt["dice_mean"].map(fmt_auc),
                          "sd": dt["dice_sd"].map(fmt_auc), "min": dt["dice_min"].map(fmt_auc)})
        L += ["Held-out Dice of the UNet (each image scored by the fold model that did not train on it; "
              f"`{ART.dice_table.rel()}`):", "", md_table(t), ""]
    ed = run.csv(ART.external_dice)
    if ed is not None and len(ed) and "dice" in ed.columns:
        e = ed[ed["fold"].astype(str) == "mean"] if "fold" in ed.columns else ed
        g = e.groupby("source")["dice"].agg(["count", "mean", "std", "min"]).reset_index()
        g = pd.DataFrame({"source": g["source"], "n": g["count"], "Dice mean": g["mean"].map(fmt_auc),
                          "sd": g["std"].map(fmt_auc), "min": g["min"].map(fmt_auc)})
        L += ["External Dice (mean of the fold UNets):", "", md_table(g), ""]
    else:
        L.append("- External Dice: not run (no external image/mask pairs).")
    pc = run.csv(ART.pass_counts)
    if pc is None:
        L += ["", _missing(ART.pass_counts)]
    else:
        L += ["", f"Mask refinement (dilate, close, minimum lung area; `{ART.pass_counts.rel()}`):", "",
              md_table(pc)]
    return L


def table6_section(run: Run) -> list[str]:
    ft = run.csv(ART.fold_table)
    if ft is None:
        return [_missing(ART.fold_table)]
    rows = []
    for r in ft.itertuples(index=False):
        f = str(r.fold)
        label = fold_label(f)
        ci = f != "mean"
        row = {"fold": label, "n (pos/neg)": f"{num(r.n)} ({num(r.n_pos)}/{num(r.n_neg)})",
               "tp/fn/fp/tn": f"{num(r.tp)}/{num(r.fn)}/{num(r.fp)}/{num(r.tn)}",
               "threshold": fmt_auc(r.threshold)}
        for m in ("accuracy", "sensitivity", "specificity"):
            row[m] = fmt_pct(getattr(r, m), getattr(r, f"{m}_lo") if ci else None,
                             getattr(r, f"{m}_hi") if ci else None)
        row["AUC"] = fmt_auc(r.auc)
        rows.append(row)
    return ["### Table 6: HRNet per test fold", "",
            "Folds numbered from 1 as in the paper; `pooled` is one matrix of all out-of-fold "
            "predictions, `mean` the unweighted mean of the fold rows (the paper's 'Average'); "
            "Wilson 95 % intervals.", "", md_table(pd.DataFrame(rows)), ""]


def table7_section(run: Run) -> list[str]:
    t = run.csv(ART.table7)
    if t is None:
        return [_missing(ART.table7)]
    t = t.set_index(t["model"].astype(str)).loc[ev.model_order(t["model"].astype(str))].reset_index(drop=True)
    rows = []
    for r in t.itertuples(index=False):
        rows.append({"model": r.model, "n (pos/neg)": f"{num(r.n)} ({num(r.n_pos)}/{num(r.n_neg)})",
                     "accuracy": fmt_pct(r.accuracy, r.accuracy_lo, r.accuracy_hi),
                     "sensitivity": fmt_pct(r.sensitivity, r.sensitivity_lo, r.sensitivity_hi),
                     "specificity": fmt_pct(r.specificity, r.specificity_lo, r.specificity_hi),
                     "ROC-AUC": fmt_auc(r.roc_auc, r.roc_auc_lo, r.roc_auc_hi),
                     "PR-AUC": fmt_auc(r.pr_auc, r.pr_auc_lo, r.pr_auc_hi)})
    return ["### Table 7: models on the same folds", "",
            "Pooled out-of-fold predictions of every model on identical patient-grouped folds; Wilson "
            "95 % intervals for rates, patient-level bootstrap 95 % intervals for AUCs.", "",
            md_table(pd.DataFrame(rows)), "", run.fig("ev_auc_forest.png", "ROC-AUC per model"), ""]


def _dynamics(run: Run) -> list[str]:
    """Did each classifier settle before it was tested, and how far apart are its folds?"""
    parts = [run.csv(ART.plateau), run.csv(ART.baselines_plateau)]
    gaps = [run.csv(ART.auc_gap), run.csv(ART.baselines_auc_gap)]
    settle = pd.concat([p for p in parts if p is not None], ignore_index=True) if any(
        p is not None for p in parts) else None
    gap = pd.concat([g for g in gaps if g is not None], ignore_index=True) if any(
        g is not None for g in gaps) else None
    if settle is None or gap is None or settle.empty:
        return [_missing(ART.plateau)]
    gap = gap.drop_duplicates(["model", "fold"])
    planned = _num(run.profile.get("cls_epochs"))
    rows, cut = [], []
    for name in ev.model_order(settle["model"].astype(str)):
        s = settle[settle["model"].astype(str) == name]
        g = gap[gap["model"].astype(str) == name]
        folds = g[g["kind"].astype(str) == "fold"]
        pooled = g[g["fold"].astype(str) == "pooled"]
        mean = g[g["fold"].astype(str) == "mean"]
        ep = int(s["epochs"].max())
        if math.isfinite(planned) and ep < planned:
            cut.append(f"{name} ({ep} of {int(planned)})")
        settled = (f'{store.bool_column(s, "settled").sum()}/{len(s)}'
                   if "settled" in s else "n/a")
        row = {"model": name, "epochs": ep, "folds settled": settled,
               "last val AUC per fold": ", ".join(f"{v:.2f}" for v in s["last_val_auc"])}
        if len(folds):
            row.update({"fold AUCs": ", ".join(f"{v:.3f}" for v in folds["auc"]),
                        "mean of folds": fmt_auc(mean["auc"].iloc[0]) if len(mean) else "n/a",
                        "pooled": fmt_auc(pooled["auc"].iloc[0]) if len(pooled) else "n/a",
                        "fold thresholds": ", ".join(f"{v:.2f}" for v in folds["threshold"])})
        rows.append(row)
    L = ["### Training dynamics", "",
         "Per model: the epochs it trained, how many of its fold runs had settled when they stopped "
         "(validation AUC within 0.03 over the last three epochs; `plateau.csv`), and the gap between "
         "the mean of the fold AUCs and the pooled out-of-fold AUC (`auc_gap.csv`). When fold models "
         "put their scores on different scales, the pooled AUC, which ranks every fold's scores "
         "together, falls below the fold AUCs; the gap measures that, and a small gap is what "
         "finished training runs look like. Each fold's threshold is chosen on its own small inner "
         "validation split, so thresholds can spread even when the scales agree: spread thresholds "
         "with a small gap point to a noisy threshold choice, not to unsettled models. The pooled "
         "value is the one to quote.", "", md_table(pd.DataFrame(rows)), ""]
    if cut:
        L += [f"- Cut to fit the budget (epochs trained of the proposed model's "
              f"{int(planned)}): {', '.join(cut)}. Their curves show where they stopped.", ""]
    L += [run.fig("ev_training_dynamics.png", "validation loss and AUC per epoch, every fold"), ""]
    return L


def _ladder(run: Run) -> list[str]:
    """The de-confounding ladder of notebook 05b, read from ``ladder/ladder_table.csv``."""
    from helpers.evidence import probes
    from helpers.report import tables

    t = run.csv(ART.ladder_table)
    if t is None:
        return [_missing(ART.ladder_table)]
    if t.empty:
        return [f"Not run in profile `{run.profile.get('name', '?')}`: its `ladder` field names no "
                "rung. `./run_all.sh cpu-deconf --reuse-from outputs/cpu` runs the ladder on top of a "
                "finished cpu run (notebook 05b).", ""]
    t = t.copy()
    t["within_source"] = t["within_source"].fillna("") if "within_source" in t else ""
    fav = probes.favoured(t)
    frame = tables.ladder_frame(t)
    best_auc = str(t.loc[t["auc"].astype(float).idxmax(), "rung"])
    row = t[t["rung"].astype(str) == fav].iloc[0]
    L = ["Each rung switches on one more input step on top of the rungs above it and trains the "
         "proposed HRNet with the same recipe on the same folds. The audits are linear probes on "
         "that rung's inputs (logistic regression on 32 x 32 thumbnails or on grey-level "
         "statistics): the source from what the model sees, the label with the lungs blacked out, "
         "from the lung mask alone, and from grey levels inside and outside the lungs. *Shortcut "
         "excess* is their mean distance from chance. Heat is the share of Grad-CAM heat inside the "
         "lung mask, beside the lungs' share of the input.", "", md_table(frame), "",
         f"- **Favoured by the audits: `{fav}`** (shortcut excess {row['shortcut_excess']:.3f}, "
         f"heat inside the lungs {row['heat_share_lungs']:.2f} against a lung area of "
         f"{row['lung_area']:.2f}; internal AUC {fmt_auc(row['auc'], row['auc_lo'], row['auc_hi'])}). "
         f"Rule: lowest shortcut excess, ties within {probes.TIE} broken by the larger heat excess; "
         "internal AUC plays no part."
         + (f" The highest internal AUC belongs to `{best_auc}`." if best_auc != fav else ""),
         *([f"- **Caution:** the favoured rung's model shows little in-lung signal: heat excess "
            f"{row['heat_excess']:.2f} against {t['heat_excess'].max():.2f} on the best rung, "
            f"internal AUC {row['auc']:.3f}. Its inputs carry the least hospital signal, but its model "
            "learned little from them; the rule ranks the audits first and uses heat only to break "
            "ties, so read the within-source AUCs before adopting it."]
           if row["heat_excess"] < 0.5 * t["heat_excess"].max() else []),
         "- Probes bound from below what a network can find in the same inputs; notebook 05's CNN "
         "audits measure the paper rung with a network. Source and mask probes can stay far from "
         "chance on every rung when the hospitals differ in anatomy or disease mix, which no input "
         "step can remove.", "",
         run.fig("ev_ladder.png", "probe AUCs, internal AUC and heat per rung"), ""]
    return L


def _comparisons(run: Run) -> list[str]:
    c = run.table("comparisons")
    if c is None:
        return ["### Paired comparisons with HRNet", "", _missing_table("comparisons")]
    if c.empty:
        return ["### Paired comparisons with HRNet", "",
                "_Not possible: no model to pair with HRNet (or HRNet's predictions are missing)._", ""]
    rows = []
    for r in c.itertuples(index=False):
        if not math.isfinite(_num(r.n)):
            rows.append({"model": r.model, "note": r.note})
            continue
        rows.append({"model": r.model, "AUC hrnet": fmt_auc(r.auc_reference),
                     "AUC model": fmt_auc(r.auc_model),
                     "difference (hrnet - model)": fmt_auc(r.auc_diff, r.auc_diff_lo, r.auc_diff_hi),
                     "p (DeLong)": _fmt_p(r.auc_p),
                     "McNemar b / c": f"{num(r.mcnemar_b)} / {num(r.mcnemar_c)}",
                     "p (McNemar)": _fmt_p(r.mcnemar_p), "note": r.note or ""})
    return ["### Paired comparisons with HRNet", "",
            "Same images, same folds: DeLong test of the AUC difference (patient-clustered variance) "
            "and McNemar's test of the hard predictions (b = HRNet right and the model wrong, c = the "
            "reverse).", "", md_table(pd.DataFrame(rows).fillna("")), ""]


def _calibration(run: Run) -> list[str]:
    cal = run.table("calibration")
    if cal is None:
        return ["### Calibration", "", _missing_table("calibration")]
    rows = [{"model": r.model, "n": r.n, "observed prevalence": fmt_pct(r.prevalence),
             "mean predicted probability": fmt_pct(r.mean_prob), "Brier": fmt_auc(r.brier),
             "ECE (10 bins)": fmt_auc(r.ece), "note": r.note} for r in cal.itertuples(index=False)]
    return ["### Calibration", "",
            "Brier score (mean squared error of the probability; 0.25 for a constant 0.5) and expected "
            "calibration error of the pooled out-of-fold probabilities.", "",
            md_table(pd.DataFrame(rows)), "", run.fig("ev_calibration.png", "reliability diagram"), ""]


def _prevalence(run: Run) -> list[str]:
    prev = [0.01, 0.05, 0.20]
    t = run.table("ppv_npv")
    if t is None:
        return ["### Predictive values at other prevalences", "", _missing_table("ppv_npv")]
    rows = []
    for m in dict.fromkeys(t["model"]):
        d = t[t["model"] == m]
        row = {"model": m}
        for what in ("ppv", "npv"):
            for p in prev:
                r = d[np.isclose(d["prevalence"], p)].iloc[0]
                row[f"{what.upper()} at {100 * p:g} %"] = fmt_pct(r[what], r[f"{what}_lo"], r[f"{what}_hi"])
        rows.append(row)
    study = t["study_prevalence"].median() if len(t) else np.nan
    return ["### Predictive values at other prevalences", "",
            f"The study's own prevalence is {fmt_pct(study)}; a screening or triage population has far "
            "fewer COVID-19 cases. PPV and NPV by Bayes' rule from the pooled out-of-fold "
            "sensitivity and specificity; brackets use their Wilson bounds together (conservative).",
            "", md_table(pd.DataFrame(rows)), "",
            run.fig("ev_ppv_npv.png", "PPV and NPV from 1 % to 20 % prevalence"), ""]


def _classification(run: Run) -> list[str]:
    return (table6_section(run) + table7_section(run) + _dynamics(run) + _comparisons(run) + _calibration(run)
            + _prevalence(run))


def _verdict(c) -> str:
    if c is True:
        return "consistent"
    if c is False:
        return "**INCONSISTENT**"
    return "undecided"


def _ledger(run: Run) -> list[str]:
    p, c = run.table("ledger_paper"), run.table("ledger_companion")
    if p is None or c is None:
        return [_missing_table("ledger_paper" if p is None else "ledger_companion")]
    L = ["Can each reported (accuracy, sensitivity, specificity) triple come from one confusion "
         "matrix? For a single matrix accuracy = w·sensitivity + (1 − w)·specificity must lie between "
         "the two; the ledger also searches for integer matrices that reproduce the printed numbers.", ""]
    flagged = [str(n) for n, v in zip(p["name"], p["consistent"]) if v is False]
    L += [f"**Paper**: {len(flagged)} of {len(p)} reported triples are flagged: " + ", ".join(flagged) + ".",
          ""]
    rows = [{"claim": r.name, "kind": r.kind,
             "reported acc / sens / spec (%)":
                 f"{r.accuracy:.2f} / {r.sensitivity:.2f} / {r.specificity:.2f}",
             "verdict": _verdict(r.consistent), "reason": r.reason} for r in p.itertuples(index=False)]
    L += [md_table(pd.DataFrame(rows)), ""]
    if c.empty:
        L.append("**Companion**: no companion tables to check.")
        return L
    n_ok = sum(1 for v in c["consistent"] if v is True)
    L += [f"**Companion** (the same check on every triple this run prints, rounded half-up to two "
          f"decimals): {n_ok} of {len(c)} consistent.", ""]
    rows = [{"claim": r.name, "kind": r.kind,
             "acc / sens / spec (%)": f"{r.accuracy:.2f} / {r.sensitivity:.2f} / {r.specificity:.2f}",
             "n_pos / n_neg": f"{num(r.n_pos)} / {num(r.n_neg)}" if r.kind == "single" else "",
             "verdict": _verdict(r.consistent)} for r in c.itertuples(index=False)]
    L.append(md_table(pd.DataFrame(rows)))
    return L


def audits_section(run: Run) -> list[str]:
    L = []
    at = run.csv(ART.audit_table)
    if at is None:
        L.append(_missing(ART.audit_table))
    elif len(at):
        rows = [{"audit": r.audit, "what it tests": ev.AUDIT_SHORT.get(str(r.audit), str(r.tests)),
                 "n": num(r.n), "AUC [95 % CI]": fmt_auc(r.auc, r.auc_lo, r.auc_hi),
                 "verdict": r.verdict} for r in at.itertuples(index=False)]
        L += ["Pooled out-of-fold AUC of models trained on inputs that do not show the disease (or on "
              "another target), patient-level bootstrap intervals. Verdicts are reading aids: "
              "'shortcut signal' when the lower bound exceeds 0.6, 'no evidence' when the interval "
              "holds 0.5.", "", md_table(pd.DataFrame(rows)), "",
              run.fig("ev_audits.png", "audit AUCs against chance"), ""]
    null = run.json(ART.permutation_null)
    if null:
        L.append(f"- Low-level audit against its patient-level permutation null: observed AUC "
                 f"{fmt_auc(null.get('observed_auc'))}, null mean {fmt_auc(null.get('null_mean'))}, null "
                 f"95th percentile {fmt_auc(null.get('null_q95'))}, p = {_fmt_p(null.get('p_value'))} "
                 f"({num(null.get('n_perm'))} permutations).")
    st = run.csv(ART.stratified)
    if st is not None and len(st):
        rows = []
        for r in st.itertuples(index=False):
            one = _num(r.n_pos) == 0 or _num(r.n_neg) == 0
            few = not one and min(_num(r.n_pos), _num(r.n_neg)) < 10
            rows.append({"model": r.model, "by": r.stratum_type, "stratum": r.stratum,
                         "n (pos/neg)": f"{num(r.n)} ({num(r.n_pos)}/{num(r.n_neg)})",
                         "accuracy": fmt_pct(r.accuracy), "sensitivity": fmt_pct(r.sensitivity),
                         "specificity": fmt_pct(r.specificity), "AUC": fmt_auc(r.auc),
                         "flag": ("**one class only**" if one else
                                  "fewer than 10 of a class" if few else "")})
        L += ["", "Stratified by view and by source (does the accuracy hold where the source cannot "
              "explain it?):", "", md_table(pd.DataFrame(rows)), ""]
        src = st[st["stratum_type"].astype(str) == "source"]
        t7 = run.csv(ART.table7)
        overall = dict(zip(t7["model"].astype(str), t7["roc_auc"])) if t7 is not None and len(t7) else {}
        if len(src):
            L.append("- ROC-AUC overall vs within each source (where the source cannot separate the "
                     "classes):")
            for m in ev.model_order(src["model"].astype(str)):
                d = src[src["model"].astype(str) == m]
                within = ", ".join(f"{s} {fmt_auc(a)}" for s, a in zip(d["stratum"], d["auc"]))
                L.append(f"  - {m}: overall {fmt_auc(overall.get(m))}; within source: {within}.")
        n_one = sum(1 for r in rows if r["flag"].startswith("**one"))
        if n_one:
            L.append(f"- {n_one} strata hold one class only: their AUC and one of sensitivity/specificity "
                     "are undefined.")
    return L


def _saliency(run: Run) -> list[str]:
    L = []
    hs = run.table("heat_share_ci")
    if hs is None:
        L.append(_missing_table("heat_share_ci"))
    elif hs.empty:
        L.append("_Not available: no `heat_share.csv` in `hrnet/` or `baselines/`._")
    else:
        pooled = hs[hs["fold"] == "pooled"]
        rows = []
        for r in pooled[pooled["quantity"] == "share_lung"].itertuples(index=False):
            rows.append({"model": r.model, "class": r.label,
                         "images (patients)": f"{r.n_images} ({r.n_patients})",
                         "share of heat in lungs [95 % CI]": fmt_auc(r.mean, r.lo, r.hi),
                         "chance (lung-area fraction)": fmt_auc(r.chance),
                         "above chance": "yes" if _num(r.lo) > _num(r.chance) else
                         ("below" if _num(r.hi) < _num(r.chance) else "no")})
        L += ["Share of Grad-CAM heat inside the lung mask for every test image (its own fold's model), "
              "mean with a patient-level bootstrap 95 % interval; a uniform map scores the lung-area "
              "fraction.", "", md_table(pd.DataFrame(rows)), ""]
        d = pooled[pooled["quantity"] == "difference"]
        if len(d):
            rows = [{"class": r.label, "images": r.n_images,
                     "segmented - unsegmented [95 % CI]": fmt_auc(r.mean, r.lo, r.hi)}
                    for r in d.itertuples(index=False)]
            L += ["Paired difference on the same images:", "", md_table(pd.DataFrame(rows)), ""]
        L += [run.fig("ev_heat_share.png", "heat share with intervals"), ""]
    rc = run.csv(ART.randomisation_check)
    if rc is not None and len(rc) and "spearman_trained_vs_random" in rc.columns:
        s = pd.to_numeric(rc["spearman_trained_vs_random"], errors="coerce")
        ok = s.dropna()
        if len(ok):
            L.append(f"- Model-randomisation check (Adebayo et al. 2018): Spearman correlation between the "
                     f"maps of the trained fold model and of the same network with random weights, median "
                     f"{ok.median():.2f} (IQR {ok.quantile(0.25):.2f} to {ok.quantile(0.75):.2f}; "
                     f"{len(ok)} of {len(s)} images with a non-constant map). A high correlation would mean "
                     "the maps barely depend on what the network learned.")
    return L


def external_section(run: Run) -> list[str]:
    et = run.csv(ART.external_table)
    if et is None or et.empty:
        return ["Not run: this run had no external set (EXTERNAL_DATA_DIR empty), so every number above "
                "is internal cross-validation."]
    et = et.assign(fold=et["fold"].astype(str), source=et["source"].astype(str))
    L = ["Internal and external ROC-AUC side by side: internal is the pooled out-of-fold AUC "
         f"(`{ART.table7.rel()}`), external the AUC of the mean of the fold models' probabilities on "
         f"the external images (`{ART.external_table.rel()}`), each fold model listed as well.", ""]
    t7 = run.csv(ART.table7)
    internal = {} if t7 is None else {str(r.model): r for r in t7.itertuples(index=False)}
    side = []
    for model in ev.model_order(et["model"].astype(str).unique()):
        e = et[(et["model"] == model) & (et["source"] == "all")]
        mean = e[e["fold"] == "mean"]
        if mean.empty:
            continue
        m = mean.iloc[0]
        folds = e[e["fold"] != "mean"].copy()
        folds = folds.assign(k=pd.to_numeric(folds["fold"], errors="coerce")).sort_values("k")
        per_fold = " / ".join(f"{_num(a):.3f}" if pd.notna(a) else "n/a" for a in folds["auc"])
        i = internal.get(model)
        side.append({"model": model,
                     "internal AUC (pooled OOF)": "n/a" if i is None else
                     fmt_auc(i.roc_auc, i.roc_auc_lo, i.roc_auc_hi),
                     "external AUC (mean of folds)": fmt_auc(m.auc, m.auc_lo, m.auc_hi),
                     "external AUC per fold model (1 / 2 / ...)": per_fold or "n/a",
                     "external n (pos/neg)": f"{num(m.n)} ({num(m.n_pos)}/{num(m.n_neg)})"})
    L += [md_table(pd.DataFrame(side)), "", run.fig("ev_auc_forest.png", "internal and external AUCs"), ""]
    e = et[et["fold"] == "mean"]
    within = e[(e["source"] != "all") & (e["n_pos"] > 0) & (e["n_neg"] > 0)]
    if len(within):
        parts = []
        for model in ev.model_order(within["model"].astype(str).unique()):
            w = within[within["model"] == model]
            parts.append(f"{model} " + ", ".join(
                f"{r.source} {fmt_auc(r.auc)} ({num(r.n_pos)}/{num(r.n_neg)})" for r in w.itertuples()))
        L += ["- Within one external source (both classes present, pos/neg in brackets): "
              + "; ".join(parts) + ". Where these sit well below the overall external AUC, the overall "
              "figure owes much to the mix of sources rather than to the disease.", ""]
    rows = [{"model": r.model, "source": r.source,
             "n (pos/neg)": f"{num(r.n)} ({num(r.n_pos)}/{num(r.n_neg)})",
             "AUC": fmt_auc(r.auc, r.auc_lo, r.auc_hi),
             "accuracy": fmt_pct(r.accuracy, r.accuracy_lo, r.accuracy_hi),
             "sensitivity": fmt_pct(r.sensitivity, r.sensitivity_lo, r.sensitivity_hi),
             "specificity": fmt_pct(r.specificity, r.specificity_lo, r.specificity_hi)}
            for r in e.itertuples(index=False)]
    L += ["Mean of the fold models' probabilities on the external images, per model and source "
          "(patient-level bootstrap interval for AUC, Wilson for rates):", "",
          md_table(pd.DataFrame(rows)), ""]
    return L + _external_selection(run)


def _external_selection(run: Run) -> list[str]:
    """Which external films failed refinement, and the AUC when they are scored too."""
    from helpers.refine import refine_counts

    ri = run.csv(ART.ext_refine_index)
    if ri is None or ri.empty:
        return []
    rc = refine_counts(ri)
    tot = rc[(rc["source"] == "all") & (rc["label"] == "all")].iloc[0]
    L = [f"**Selection by refinement.** {num(tot.failed)} of {num(tot.total)} external films failed the "
         f"lung-area check and are not in the tables above (`{ART.ext_refine_index.rel()}`), per source and "
         "class:", "", md_table(rc[rc["label"] != "all"].astype(str)), ""]
    ea = run.csv(ART.external_table_all)
    if int(tot.failed) == 0:
        return L + ["No external film failed refinement, so no sensitivity analysis was needed.", ""]
    if ea is None or ea.empty:
        return L + ["The sensitivity analysis (every external film scored) is missing from this run.", ""]
    ea = ea.assign(fold=ea["fold"].astype(str), source=ea["source"].astype(str))
    rows = [{"model": r.model, "n (pos/neg)": f"{num(r.n)} ({num(r.n_pos)}/{num(r.n_neg)})",
             "AUC, every external film": fmt_auc(r.auc, r.auc_lo, r.auc_hi),
             "sensitivity": fmt_pct(r.sensitivity, r.sensitivity_lo, r.sensitivity_hi),
             "specificity": fmt_pct(r.specificity, r.specificity_lo, r.specificity_hi)}
            for r in ea[(ea["fold"] == "mean") & (ea["source"] == "all")].itertuples(index=False)]
    return L + ["Sensitivity analysis: the same fold models on every external film, the failed ones with "
                "their small refined mask (segmented models) or whole (unsegmented models) "
                f"(`{ART.external_table_all.rel()}`):", "", md_table(pd.DataFrame(rows)), ""]


def limitations_section(run: Run) -> list[str]:
    L = []
    if run.info["synthetic"]:
        L.append("- **The data are generated phantoms.** The results test the code, not a detector of "
                 "COVID-19; nothing here transfers to radiographs.")
    c = run.csv(ART.cohort)
    if c is not None and len(c) and {"role", "label", "source", "images"} <= set(c.columns):
        cl = c[c["role"].astype(str) == "classify"]
        pv = cl.pivot_table(index="source", columns="label", values="images", aggfunc="sum", fill_value=0)
        if len(pv) and pv.shape[1] >= 2:
            counts = "; ".join(f"{lab}: " + ", ".join(f"{s} {int(v)}" for s, v in pv[lab].items() if v)
                               for lab in pv.columns)
            aligned = pv.max(axis=1).sum() / max(1, pv.values.sum())
            if aligned >= 0.8:
                L.append(f"- **COVID and normal images come from different sources** ({counts}): "
                         f"{100 * aligned:.1f} % of the images carry their source's majority label, so "
                         "a model can separate the classes by recognising the source.")
            else:
                L.append(f"- Sources are mixed across the classes ({counts}); "
                         f"{100 * aligned:.1f} % of images carry their source's majority label.")
    t7 = run.csv(ART.table7)
    if t7 is not None and len(t7) and "hrnet" in set(t7["model"].astype(str)):
        r = t7[t7["model"].astype(str) == "hrnet"].iloc[0]
        L.append(f"- **n is small**: {num(r['n'])} images ({num(r['n_pos'])} COVID / {num(r['n_neg'])} "
                 f"normal) of {num(r.get('n_patients'))} patients. HRNet's pooled sensitivity "
                 f"{fmt_pct(r['sensitivity'], r['sensitivity_lo'], r['sensitivity_hi'])} has a 95 % interval "
                 f"{100 * (_num(r['sensitivity_hi']) - _num(r['sensitivity_lo'])):.1f} "
                 "percentage points wide, "
                 f"its AUC {fmt_auc(r['roc_auc'], r['roc_auc_lo'], r['roc_auc_hi'])} one "
                 f"{_num(r['roc_auc_hi']) - _num(r['roc_auc_lo']):.3f} wide; per-fold rows are "
                 "smaller still.")
    ft = run.csv(ART.fold_table)
    if ft is not None and len(ft):
        thr = pd.to_numeric(ft.loc[~ft["fold"].astype(str).isin(["pooled", "mean"]), "threshold"],
                            errors="coerce").dropna()
        if len(thr):
            L.append(f"- Thresholds were chosen on inner validation splits (Youden's J), one per fold: "
                     f"{', '.join(f'{v:.3f}' for v in thr)}; a deployed model would need one threshold "
                     "fixed in advance. Fold-to-fold spread of the rates reflects this as well as the data.")
    if run.profile:
        from helpers.config import PROFILES

        paper = PROFILES["paper"].to_dict()
        diffs = []
        for label, key in _PROTOCOL:
            if key in run.profile and key in paper:
                fa, fb = _setting(run.profile[key]), _setting(paper[key])
                if fa != fb:
                    diffs.append(f"{label} {fa} vs {fb}")
        if diffs:
            L.append("- **Profile reduced** relative to the paper's protocol: " + "; ".join(diffs) + ".")
        else:
            L.append("- The run follows the paper's protocol settings (profile fields as in `paper`).")
    at = run.csv(ART.audit_table)
    if at is not None and len(at) and "verdict" in at.columns:
        sig = at[at["verdict"].astype(str) == "shortcut signal"]
        if len(sig):
            L.append("- Shortcut audits found signal: " + ", ".join(
                f"{a} (AUC {fmt_auc(x)})" for a, x in zip(sig["audit"], sig["auc"]))
                + ". A route to the label that bypasses the disease exists in these data.")
    hs = run.table("heat_share_ci")
    if hs is not None and len(hs):
        p = hs[(hs["quantity"] == "share_lung") & (hs["fold"] == "pooled") & (hs["label"] == "all")]
        weak = [f"{r.model} {fmt_auc(r.mean)} vs chance {fmt_auc(r.chance)}"
                for r in p.itertuples(index=False)
                if not _num(r.lo) > _num(r.chance)]
        if weak:
            L.append("- Grad-CAM heat is not concentrated in the lungs beyond chance for: "
                     + "; ".join(weak) + ".")
    et = run.csv(ART.external_table)
    if et is None or et.empty:
        L.append("- No external validation: all results come from cross-validation within one cohort.")
    L += ["- All networks are trained from scratch, without ImageNet weights (the paper does not say "
          "whether it used pretrained weights); results may differ from fine-tuned models.",
          "- Where NIH ChestX-ray14 images are used, their labels were mined from radiology reports by "
          "NLP, not read by radiologists for this study.",
          "- No clinical validation: no prospective data, no comparison with radiologists, no RT-PCR "
          "reference standard per image; the model is not a medical device."]
    return L


def _checklist(run: Run) -> list[str]:
    idx = run.csv(ART.cls_index)
    grouped = "n/a"
    if idx is not None and len(idx) and "fold" in idx.columns:
        gcol = "group_id" if "group_id" in idx.columns else "patient_id"
        grouped = "yes" if (idx.groupby(gcol)["fold"].nunique() <= 1).all() else "**no**"
    et = run.csv(ART.external_table)
    at = run.csv(ART.audit_table)
    revs = {m.get("git_revision") for m in run.manifests.values()}
    rows = [
        ("Data sources and selection",
         "Cohort and curation" if run.csv(ART.cohort) is not None else "missing"),
        ("Synthetic or real data", "synthetic phantoms" if run.info["synthetic"] else run.info["data"]),
        ("Patient-level partition of train / test", grouped),
        ("Thresholds chosen without the test data", "yes (inner validation split)"),
        ("Metrics with confidence intervals", "yes (Wilson, patient-level bootstrap)"),
        ("Calibration reported", "yes" if run.csv(ART.all_preds) is not None else "no"),
        ("Comparison on the same data, paired tests",
         "yes" if run.csv(ART.all_preds) is not None else "no"),
        ("Failure / shortcut analysis", f"yes ({len(at)} audits)" if at is not None and len(at) else "no"),
        ("Saliency checked quantitatively", "yes" if run.csv(ART.hrnet_heat_share) is not None else "no"),
        ("External validation", "yes" if et is not None and len(et) else "**no**"),
        ("Code revision recorded", ", ".join(sorted(r for r in revs if r)) or "no"),
    ]
    return ["Reporting items in the spirit of CLAIM (Mongan et al. 2020), answered from this run's "
            "artefacts:", "", md_table(pd.DataFrame(rows, columns=["item", "this run"]))]


def _figures(run: Run) -> list[str]:
    L = ["Evidence figures (`helpers.evidence.recomputed`):", ""]
    names = {"ev_calibration.png": "reliability diagram, Brier, ECE",
             "ev_ppv_npv.png": "PPV / NPV at 1-20 % prevalence",
             "ev_auc_forest.png": "ROC-AUC with intervals per model",
             "ev_heat_share.png": "Grad-CAM heat inside the lungs, with intervals",
             "ev_audits.png": "shortcut audits"}
    L += [f"- [{n}]({run.figures_rel}/{n}): {d}" for n, d in names.items()]
    idx = ev.read_artefact(run.figures_dir, "index.csv")
    if idx is not None and len(idx) and "file" in idx.columns:
        L += ["", f"Paper figures and tables (`{ART.figure_index.rel()}`):", ""]
        L += [f"- [{r.file}]({run.figures_rel}/{r.file}): {getattr(r, 'paper', '')}"
              for r in idx.itertuples(index=False)]
    return L


_BUILDERS: dict[str, Callable[[Run], list[str]]] = {
    "What was run": _what_was_run, "Cohort and curation": cohort_section, "Splits": _splits,
    "Segmentation": _segmentation, "Classification": _classification, "Claims ledger": _ledger,
    "Shortcut audits": audits_section, "De-confounding ladder": _ladder, "Saliency": _saliency,
    "External validation": external_section,
    "Limitations": limitations_section, "Checklist": _checklist,
}


# --------------------------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------------------------
def summary_markdown(out_dir: Path, cfg_dict: dict | None = None, figures_rel: str | None = None,
                     figures_dir: Path | None = None) -> str:
    """The results summary of the run in ``out_dir`` as markdown text.

    cfg_dict: ``RunConfig.to_dict()`` (profile, data_dir, seed, ...); default: the ``config`` of
    the stage manifests. figures_rel: path of the figure folder relative to where the summary
    will live; when given, figures are linked. figures_dir: the folder notebook 06 saved the
    evidence tables and the figure index in (default ``out_dir/figures``). A section whose inputs
    are missing says so; a section that fails says why instead of stopping the summary.
    """
    run = Run(Path(out_dir), cfg_dict, figures_rel, figures_dir)
    lines = [f"# Results summary: profile `{run.info['profile']}`", ""]
    lines += banner(run)
    lines += [f"Generated by `helpers.report.summary` from the artefacts in `{display_path(run.out)}`; "
              "every number is read from or recomputed from those files.", ""]
    sections = SECTIONS + (["Figures"] if figures_rel else [])
    builders = dict(_BUILDERS, Figures=_figures)
    for name in sections:
        lines += [f"## {name}", ""]
        try:
            body = builders[name](run)
        except Exception as exc:  # a broken section must not hide the others
            body = [f"_This section could not be built: {type(exc).__name__}: {exc}_"]
        lines += [b for b in body if b is not None]
        lines.append("")
    text = "\n".join(lines)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.rstrip() + "\n"


def write_summary(out_dir: Path, dest: Path, cfg_dict: dict | None = None,
                  figures_rel: str | None = None, figures_dir: Path | None = None) -> Path:
    """Write :func:`summary_markdown` to ``dest`` (a ``.md`` file, or a folder: ``dest/SUMMARY.md``);
    returns the path written."""
    dest = Path(dest)
    if dest.suffix.lower() != ".md":
        dest = dest / "SUMMARY.md"
    dest.parent.mkdir(parents=True, exist_ok=True)
    text = summary_markdown(out_dir, cfg_dict=cfg_dict, figures_rel=figures_rel, figures_dir=figures_dir)
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.write_text(text)
    tmp.replace(dest)
    return dest
