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

Structure: each part of the summary has a context function in :data:`PARTS` that selects the
rows and numbers from a :class:`Run` and returns a plain dict, and a template
``templates/summary/<part>.md.j2`` that holds its sentences (:mod:`helpers.report.render`). A
section (:data:`SECTIONS`) is one part or several; a section whose part raises reads
``_This section could not be built: Type: message_`` and the others still render. A part whose
artefact is missing says which file and which notebook writes it. ``templates/summary.md.j2``
frames the document. Numbers are formatted by :mod:`helpers.report.formats`: rates in percent
with one decimal (``83.0 %``; Wilson 95 % interval in brackets), AUCs, Dice, Brier and ECE with
three decimals.

``summary_markdown(out_dir, ...)`` returns the text; ``write_summary(out_dir, dest, ...)``
writes it and returns the path; :func:`part` renders one part (the model card reuses them).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from helpers.evidence import audits
from helpers.evidence import recomputed as ev
from helpers.paths import display_path
from helpers.report import render
from helpers.report.formats import fixed, fmt_auc, fmt_p, fmt_pct, num, setting, to_float
from helpers.report.tables import fold_label, readable_folds
from helpers.run import store
from helpers.run.artefacts import ART, Artefact

__all__ = ["SECTIONS", "PARTS", "PHANTOM_BANNER", "Run", "part", "summary_markdown", "write_summary"]

# Section heading -> its parts (:data:`PARTS`), in order.
_SECTION_PARTS = {
    "Verdict on the paper": ["verdict"],
    "What was run": ["what_was_run"], "Cohort and curation": ["cohort"], "Splits": ["splits"],
    "Segmentation": ["segmentation"],
    "Classification": ["table6", "table7", "dynamics", "comparisons", "calibration", "prevalence"],
    "Claims ledger": ["ledger"], "Shortcut audits": ["shortcut_audits"],
    "Tests a new hospital cannot fool": ["sites"], "De-confounding ladder": ["ladder"],
    "Saliency": ["saliency"], "Held-out validation": ["external"], "Limitations": ["limitations"],
    "Checklist": ["checklist"], "Figures": ["figures"],
}

#: Section headings, in order (``## <heading>``); "Figures" only when ``figures_rel`` is given.
SECTIONS = [s for s in _SECTION_PARTS if s != "Figures"]

PHANTOM_BANNER = "GENERATED PHANTOMS: plumbing, not science"

# Profile fields compared with the paper's protocol (label, field).
_PROTOCOL = [("UNet input (px)", "seg_size"), ("UNet folds", "seg_folds"),
             ("UNet epochs", "unet_epochs"), ("UNet base channels", "unet_base_channels"),
             ("classifier input (px)", "cls_size"), ("classification folds", "n_folds"),
             ("HRNet", "hrnet"), ("classifier epochs", "cls_epochs"), ("batch", "cls_batch"),
             ("learning-rate schedule", "lr_schedule"), ("learning-rate steps", "lr_milestones"),
             ("classifier augmentation", "cls_augment"), ("baselines", "baselines"),
             ("baseline epochs", "baseline_epochs_used"), ("audit CNN epochs", "audit_epochs_used")]


def _missing(art: Artefact) -> dict:
    """The context of a part whose input ``art`` is missing (``macros.md.j2: missing``)."""
    return {"missing": _art(art)}


def _art(art: Artefact) -> dict:
    return {"rel": art.rel(), "notebook": art.notebook}


# --------------------------------------------------------------------------------------------
# the run the sections read
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

    def protocol(self) -> list[tuple[str, str, str, bool]]:
        """(setting, this run, paper protocol, in the paper profile) for each protocol field of
        the run's profile."""
        from helpers.config import PROFILES

        paper = PROFILES["paper"].to_dict()
        return [(label, setting(self.profile[key]), setting(paper.get(key)), key in paper)
                for label, key in _PROTOCOL if key in self.profile]


# --------------------------------------------------------------------------------------------
# the parts: Run -> template context
# --------------------------------------------------------------------------------------------
def banner(run: Run) -> dict:
    planted = {k: run.profile[k] for k in ("shortcut_strength", "finding_contrast") if k in run.profile}
    return {"synthetic": run.info["synthetic"], "banner": PHANTOM_BANNER, "planted": planted}


def what_was_run(run: Run) -> dict:
    info, cfg, ms = run.info, run.cfg, run.manifests
    ext = cfg.get("external_data_dir")
    ctx = {"profile": info["profile"], "synthetic": info["synthetic"], "data": info["data"],
           "data_dir": Path(str(info["data_dir"])).name, "cfg": bool(cfg), "seed": cfg.get("seed", "n/a"),
           "overrides": json.dumps(cfg.get("overrides") or {}) or "{}",
           "external": Path(str(ext)).name if ext else None, "revisions": {}}
    if not ms:
        return ctx
    from helpers.run.repro import git_revision

    revs = {s: m.get("git_revision", "unknown") for s, m in ms.items()}
    devices = []
    for m in ms.values():
        d = m.get("device") or {}
        if d:
            gpu = str(d["gpu"]) if d.get("gpu") else ""
            dev = {"gpu": gpu, "cuda": bool(d.get("cuda")) and not gpu,
                   **{k: str(d.get(k, "?")) for k in ("cpu_count", "torch_threads", "python", "platform")}}
            if dev not in devices:
                devices.append(dev)
    timings = []
    for s, m in ms.items():
        t = dict(m.get("timings_s") or {})
        total = to_float(t.pop("total", np.nan))
        largest = sorted(t.items(), key=lambda kv: -to_float(kv[1]))[:6]
        row = {"stage": s, "total (s)": fixed(total, 1) if math.isfinite(total) else "",
               "largest parts (s)": ", ".join(f"{k} {fixed(v, 0)}" for k, v in largest
                                              if math.isfinite(to_float(v)))}
        earlier = [r for r in (m.get("earlier_runs") or []) if isinstance(r, dict)]
        if earlier:
            row["earlier runs of the stage (s, revision)"] = "; ".join(
                f"{fixed(r.get('total_s'), 1)} ({str(r.get('git_revision') or '?')[:7]})"
                for r in earlier[-3:])
        timings.append(row)
    protocol = [{"setting": label, "run": a, "paper": b} for label, a, b, _ in run.protocol()] \
        + data_rows(run) if run.profile else None
    dates = sorted(m.get("finished_utc", "") for m in ms.values() if m.get("finished_utc"))
    return {**ctx, "revisions": revs, "unique": sorted(set(revs.values())), "current": git_revision(),
            "dates": dates, "devices": devices,
            "packages": sorted(next((m["packages"] for m in ms.values() if m.get("packages")), {}).items()),
            "timings": pd.DataFrame(timings).fillna(""), "protocol": protocol}


#: the paper's data (Table 2 and sections 3.1-3.2): what the settings table compares a run's cohort with
PAPER_DATA = {"covid_sources": "COVID public repository (ieee8023), 472 films",
              "covid": "410", "noncovid_sources": "NIH ChestX-ray14 1,000 + CheXpert 1,000 (sampled)",
              "noncovid": "500", "seg": "800 (Montgomery 138, Shenzhen 662)"}


def data_rows(run: Run) -> list[dict]:
    """Rows of the settings table for the data: the cohort's COVID and non-COVID films (curated,
    and kept after refinement) and their sources, and the lung-mask pairs, against the paper's
    (:data:`PAPER_DATA`). Empty when the cohort table is missing."""
    c = run.csv(ART.cohort)
    if c is None or c.empty or not {"role", "label", "source", "images"} <= set(c.columns):
        return []
    c = c.assign(images=pd.to_numeric(c["images"], errors="coerce").fillna(0).astype(int))
    cl = c[c["role"].astype(str) == "classify"]
    covid = cl[cl["label"].astype(str) == "covid"]
    non = cl[cl["label"].astype(str) != "covid"]
    seg = c[c["role"].astype(str) == "segment"]
    kept = {}
    ri = run.csv(ART.refine_index)
    if ri is not None and len(ri) and "passed" in ri:
        ok = ri[ri["passed"].astype(str) == "True"]
        kept = {"covid": int((ok["label"].astype(str) == "covid").sum()),
                "non": int((ok["label"].astype(str) != "covid").sum())}

    def sources(part: pd.DataFrame) -> str:
        g = part.groupby("source")["images"].sum().sort_values(ascending=False)
        return ", ".join(f"{s} {n:,}" for s, n in g.items())

    def count(part: pd.DataFrame, key: str) -> str:
        n = f"{int(part['images'].sum()):,}"
        return f"{n} curated, {kept[key]:,} kept" if key in kept else n

    return [{"setting": "COVID films (sources)", "run": sources(covid),
             "paper": PAPER_DATA["covid_sources"]},
            {"setting": "COVID films after refinement", "run": count(covid, "covid"),
             "paper": PAPER_DATA["covid"]},
            {"setting": "non-COVID films (sources)", "run": sources(non),
             "paper": PAPER_DATA["noncovid_sources"]},
            {"setting": "non-COVID films after refinement", "run": count(non, "non"),
             "paper": PAPER_DATA["noncovid"]},
            {"setting": "lung-mask pairs (UNet)", "run": f"{int(seg['images'].sum()):,} ({sources(seg)})",
             "paper": PAPER_DATA["seg"]}]


def cohort(run: Run) -> dict:
    c = run.csv(ART.cohort)
    if c is None:
        return _missing(ART.cohort)
    cls = c[c["role"].astype(str) == "classify"] if "role" in c.columns else c
    by = cls.groupby("label")["images"].sum() if len(cls) and "images" in cls.columns else None
    flow, exc, dup = run.csv(ART.flow), run.csv(ART.excluded), run.csv(ART.duplicates)
    excluded = None if exc is None else {"n": len(exc), "table": None}
    if exc is not None and len(exc):
        keys = [k for k in ("source", "step", "reason") if k in exc.columns]
        g = exc.groupby(keys, dropna=False).size().reset_index(name="images")
        excluded["table"] = g.sort_values("images", ascending=False).head(20)
    duplicates = None if dup is None else {"n": len(dup), **{
        col: int(store.bool_column(dup, col).sum()) if col in dup.columns else 0
        for col in ("same_patient", "cross_source", "conflicting_label")}}
    return {"rel": {"cohort": ART.cohort.rel(), "flow": ART.flow.rel()}, "cohort": c,
            "by_label": None if by is None else [(k, int(v)) for k, v in by.items()],
            "total": None if by is None else int(by.sum()),
            "flow": flow if flow is not None and len(flow) else None,
            "excluded": excluded, "duplicates": duplicates}


def splits(run: Run) -> dict:
    fs, idx, ri = run.csv(ART.folds_summary), run.csv(ART.cls_index), run.csv(ART.refine_index)
    if fs is None and idx is None:
        return _missing(ART.folds_summary)
    ctx = {"rel": ART.folds_summary.rel(), "folds": None, "one_class": None, "groups": None, "kept": None}
    if fs is not None and len(fs):
        ctx["folds"] = fs = readable_folds(fs)
        both = [c for c in ("images_covid", "images_normal") if c in fs.columns]
        if len(both) == 2:
            ctx["one_class"] = [str(f) for f in fs[(fs[both[0]] == 0) | (fs[both[1]] == 0)]["fold"]]
    if idx is not None and len(idx) and "fold" in idx.columns:
        gcol = "group_id" if "group_id" in idx.columns else "patient_id"
        spread = idx.groupby(gcol)["fold"].nunique()
        pspread = idx.groupby("patient_id")["fold"].nunique() if "patient_id" in idx.columns else spread
        ctx["groups"] = {"column": gcol, "groups": int((spread > 1).sum()),
                         "patients": int((pspread > 1).sum()),
                         "n_patients": idx["patient_id"].nunique() if "patient_id" in idx.columns else "n/a",
                         "n_images": len(idx)}
    if ri is not None and len(ri) and "passed" in ri.columns:
        ctx["kept"] = {"n": int(store.bool_column(ri, "passed").sum()), "of": len(ri)}
    return ctx


def segmentation(run: Run) -> dict:
    dt, ed, pc = run.csv(ART.dice_table), run.csv(ART.external_dice), run.csv(ART.pass_counts)
    ctx = {"rel": {"dice": ART.dice_table.rel(), "pass": ART.pass_counts.rel()},
           "dice_missing": _art(ART.dice_table) if dt is None else None, "dice": None, "external": None,
           "pass_missing": _art(ART.pass_counts) if pc is None else None, "pass_counts": pc}
    if dt is not None and len(dt):
        ctx["dice"] = readable_folds(dt, "name", dt["group"] == "fold").to_dict("records")
    if ed is not None and len(ed) and "dice" in ed.columns:
        e = ed[ed["fold"].astype(str) == "mean"] if "fold" in ed.columns else ed
        g = e.groupby("source")["dice"].agg(["count", "mean", "std", "min"]).reset_index()
        ctx["external"] = g.to_dict("records")
    pg = run.csv(ART.pass_by_group)
    ctx["by_group"] = None
    if pg is not None and len(pg):
        from helpers.refine import pass_gap
        ctx["by_group"] = {"table": pg, "gap": pass_gap(pg), "rel": ART.pass_by_group.rel()}
    return ctx


def table6(run: Run) -> dict:
    ft = run.csv(ART.fold_table)
    if ft is None:
        return _missing(ART.fold_table)
    return {"rows": [dict(r, fold=fold_label(r["fold"])) for r in ft.to_dict("records")]}


def table7(run: Run) -> dict:
    t = run.csv(ART.table7)
    if t is None:
        return _missing(ART.table7)
    t = t.set_index(t["model"].astype(str)).loc[ev.model_order(t["model"].astype(str))].reset_index(drop=True)
    return {"rows": t.to_dict("records"), "not_learned": not_learned(run)}


def not_learned(run: Run) -> list[str]:
    """The models flagged "did not learn" (``learning.csv``; :func:`helpers.evidence.dynamics.learning`)."""
    learning = run.table("learning")
    if learning is None or learning.empty:
        return []
    return [str(m) for m, ok in zip(learning["model"], learning["learned"]) if ok is False]


def dynamics(run: Run) -> dict:
    """Did each classifier settle before it was tested, and how far apart are its folds?"""
    parts = [p for p in (run.csv(ART.plateau), run.csv(ART.baselines_plateau)) if p is not None]
    gaps = [g for g in (run.csv(ART.auc_gap), run.csv(ART.baselines_auc_gap)) if g is not None]
    if not parts or not gaps or pd.concat(parts).empty:
        return _missing(ART.plateau)
    settle = pd.concat(parts, ignore_index=True)
    gap = pd.concat(gaps, ignore_index=True).drop_duplicates(["model", "fold"])
    planned = to_float(run.profile.get("cls_epochs"))
    rows, cut = [], []
    for name in ev.model_order(settle["model"].astype(str)):
        s = settle[settle["model"].astype(str) == name]
        g = gap[gap["model"].astype(str) == name]
        folds = g[g["kind"].astype(str) == "fold"]
        pooled, mean = g[g["fold"].astype(str) == "pooled"], g[g["fold"].astype(str) == "mean"]
        ep = int(s["epochs"].max())
        if math.isfinite(planned) and ep < planned:
            cut.append({"model": name, "epochs": ep})
        settled = f'{store.bool_column(s, "settled").sum()}/{len(s)}' if "settled" in s else "n/a"
        row = {"model": name, "epochs": ep, "folds settled": settled,
               "last val AUC per fold": ", ".join(fixed(v, 2) for v in s["last_val_auc"])}
        if len(folds):
            row.update({"fold AUCs": ", ".join(fixed(v, 3) for v in folds["auc"]),
                        "mean of folds": fmt_auc(mean["auc"].iloc[0]) if len(mean) else "n/a",
                        "pooled": fmt_auc(pooled["auc"].iloc[0]) if len(pooled) else "n/a",
                        "fold thresholds": ", ".join(fixed(v, 2) for v in folds["threshold"])})
        rows.append(row)
    return {"rows": rows, "cut": cut, "planned": int(planned) if cut else None}


def ladder(run: Run) -> dict:
    """The de-confounding ladder of notebook 05b, read from ``ladder/ladder_table.csv``."""
    from helpers.evidence import probes
    from helpers.report import tables

    t = run.csv(ART.ladder_table)
    if t is None:
        return _missing(ART.ladder_table)
    if t.empty:
        return {"empty": True, "profile": run.profile.get("name", "?")}
    t = t.copy()
    t["within_source"] = t["within_source"].fillna("") if "within_source" in t else ""
    fav = probes.favoured(t)
    row = t[t["rung"].astype(str) == fav].iloc[0].to_dict()
    return {"empty": False, "table": tables.ladder_frame(t), "favoured": fav, "row": row, "tie": probes.TIE,
            "best_auc": str(t.loc[t["auc"].astype(float).idxmax(), "rung"]),
            "best_heat_excess": t["heat_excess"].max(),
            "caution": row["heat_excess"] < 0.5 * t["heat_excess"].max()}


def comparisons(run: Run) -> dict:
    c = run.table("comparisons")
    if c is None:
        return _missing(ART.comparisons)
    rows = []
    for r in c.itertuples(index=False):
        if not math.isfinite(to_float(r.n)):
            rows.append({"model": r.model, "note": r.note})
            continue
        rows.append({"model": r.model, "AUC hrnet": fmt_auc(r.auc_reference),
                     "AUC model": fmt_auc(r.auc_model),
                     "difference (hrnet - model)": fmt_auc(r.auc_diff, r.auc_diff_lo, r.auc_diff_hi),
                     "p (DeLong)": fmt_p(r.auc_p),
                     "McNemar b / c": f"{num(r.mcnemar_b)} / {num(r.mcnemar_c)}",
                     "p (McNemar)": fmt_p(r.mcnemar_p), "note": r.note or ""})
    return {"rows": pd.DataFrame(rows).fillna("") if rows else None}


def calibration(run: Run) -> dict:
    cal = run.table("calibration")
    if cal is None:
        return _missing(ART.calibration)
    return {"rows": cal.to_dict("records")}


def prevalence(run: Run) -> dict:
    t = run.table("ppv_npv")
    if t is None:
        return _missing(ART.ppv_npv)
    rows = []
    for m in dict.fromkeys(t["model"]):
        d = t[t["model"] == m]
        row = {"model": m}
        for what in ("ppv", "npv"):
            for p in (0.01, 0.05, 0.20):
                r = d[np.isclose(d["prevalence"], p)].iloc[0]
                row[f"{what.upper()} at {100 * p:g} %"] = fmt_pct(r[what], r[f"{what}_lo"], r[f"{what}_hi"])
        rows.append(row)
    return {"rows": rows, "study": t["study_prevalence"].median() if len(t) else np.nan}


def ledger(run: Run) -> dict:
    p, c = run.table("ledger_paper"), run.table("ledger_companion")
    if p is None or c is None:
        return _missing(ART.ledger_paper if p is None else ART.ledger_companion)
    return {"flagged": [str(n) for n, v in zip(p["name"], p["consistent"]) if v is False], "n_paper": len(p),
            "paper": p.to_dict("records"), "companion": c.to_dict("records"),
            "n_ok": sum(1 for v in c["consistent"] if v is True),
            "alternatives": [r for r in p.to_dict("records") if str(r.get("alternative") or "")]}


def shortcut_audits(run: Run) -> dict:
    at, null, st = run.csv(ART.audit_table), run.json(ART.permutation_null), run.csv(ART.stratified)
    ctx = {"missing": _art(ART.audit_table) if at is None else None, "null": null or None,
           "audits": at.to_dict("records") if at is not None and len(at) else None,
           "descriptions": audits.short_descriptions(), "strata": None, "within": [], "n_one": 0}
    if st is not None and len(st):
        rows = []
        for r in st.to_dict("records"):
            pos, neg = to_float(r["n_pos"]), to_float(r["n_neg"])
            one = pos == 0 or neg == 0
            rows.append(dict(r, one=one, few=not one and min(pos, neg) < 10))
        ctx["strata"], ctx["n_one"] = rows, sum(r["one"] for r in rows)
        src = st[st["stratum_type"].astype(str) == "source"]
        t7 = run.csv(ART.table7)
        overall = dict(zip(t7["model"].astype(str), t7["roc_auc"])) if t7 is not None and len(t7) else {}
        for m in ev.model_order(src["model"].astype(str)):
            d = src[src["model"].astype(str) == m]
            ctx["within"].append({"model": m, "overall": overall.get(m),
                                  "auc": list(zip(d["stratum"], d["auc"]))})
    return ctx


def saliency(run: Run) -> dict:
    hs, rc = run.table("heat_share_ci"), run.csv(ART.randomisation_check)
    ctx = {"missing": _art(ART.heat_share_ci) if hs is None else None, "empty": hs is not None and hs.empty,
           "shares": None, "differences": None, "randomisation": None}
    if hs is not None and not hs.empty:
        pooled = hs[hs["fold"] == "pooled"]
        ctx["shares"] = [dict(r, above=to_float(r["lo"]) > to_float(r["chance"]),
                              below=to_float(r["hi"]) < to_float(r["chance"]))
                         for r in pooled[pooled["quantity"] == "share_lung"].to_dict("records")]
        ctx["differences"] = pooled[pooled["quantity"] == "difference"].to_dict("records")
    if rc is not None and len(rc) and "spearman_trained_vs_random" in rc.columns:
        s = pd.to_numeric(rc["spearman_trained_vs_random"], errors="coerce")
        ok = s.dropna()
        if len(ok):
            ctx["randomisation"] = {"median": ok.median(), "q25": ok.quantile(0.25), "q75": ok.quantile(0.75),
                                    "n": len(ok), "of": len(s)}
    return ctx


def external(run: Run) -> dict:
    et = run.csv(ART.external_table)
    if et is None or et.empty:
        return {"run": False}
    et = et.assign(fold=et["fold"].astype(str), source=et["source"].astype(str))
    t7 = run.csv(ART.table7)
    internal = {} if t7 is None else {str(r["model"]): r for r in t7.to_dict("records")}
    side = []
    for model in ev.model_order(et["model"].astype(str).unique()):
        e = et[(et["model"] == model) & (et["source"] == "all")]
        mean = e[e["fold"] == "mean"]
        if mean.empty:
            continue
        folds = e[e["fold"] != "mean"]
        folds = folds.assign(k=pd.to_numeric(folds["fold"], errors="coerce")).sort_values("k")
        side.append({"model": model, "internal": internal.get(model), "external": mean.iloc[0].to_dict(),
                     "folds": list(folds["auc"])})
    e = et[et["fold"] == "mean"]
    within = e[(e["source"] != "all") & (e["n_pos"] > 0) & (e["n_neg"] > 0)]
    return {"run": True, "rel": {"table7": ART.table7.rel(), "external": ART.external_table.rel()},
            "heldout": heldout_kind(run),
            "side": side, "rows": e.to_dict("records"), "selection": _external_selection(run),
            "within": [{"model": m, "sources": within[within["model"] == m].to_dict("records")}
                       for m in ev.model_order(within["model"].astype(str).unique())]}


def heldout_kind(run: Run) -> dict | None:
    """The held-out set named from its sources (:func:`helpers.evidence.heldout.kind`): "external"
    only when no source of it gave training films; None without a held-out index."""
    from helpers.evidence import heldout

    ci, ei = run.csv(ART.cls_index), run.csv(ART.ext_cls_index)
    if ci is None or ei is None or "source" not in ci or "source" not in ei:
        return None
    return heldout.kind(ci["source"], ei["source"])


def _external_selection(run: Run) -> dict | None:
    """Which external films failed refinement, and the AUC when they are scored too."""
    from helpers.refine import refine_counts

    ri = run.csv(ART.ext_refine_index)
    if ri is None or ri.empty:
        return None
    rc = refine_counts(ri)
    tot = rc[(rc["source"] == "all") & (rc["label"] == "all")].iloc[0]
    ea = run.csv(ART.external_table_all)
    rows = None
    if int(tot.failed) and ea is not None and not ea.empty:
        ea = ea.assign(fold=ea["fold"].astype(str), source=ea["source"].astype(str))
        rows = ea[(ea["fold"] == "mean") & (ea["source"] == "all")].to_dict("records")
    return {"failed": int(tot.failed), "total": tot.total, "counts": rc[rc["label"] != "all"].astype(str),
            "rows": rows, "rel": {"index": ART.ext_refine_index.rel(), "all": ART.external_table_all.rel()}}


def limitations(run: Run) -> dict:
    ctx = {"synthetic": run.info["synthetic"], "sources": None, "small": None, "thresholds": None,
           "protocol": None, "signal": None, "weak_heat": None}
    c = run.csv(ART.cohort)
    if c is not None and len(c) and {"role", "label", "source", "images"} <= set(c.columns):
        cl = c[c["role"].astype(str) == "classify"]
        pv = cl.pivot_table(index="source", columns="label", values="images", aggfunc="sum", fill_value=0)
        if len(pv) and pv.shape[1] >= 2:
            ctx["sources"] = {"aligned": pv.max(axis=1).sum() / max(1, pv.values.sum()),
                              "by_label": [(lab, [(s, int(v)) for s, v in pv[lab].items() if v])
                                           for lab in pv.columns]}
    t7 = run.csv(ART.table7)
    if t7 is not None and len(t7) and "hrnet" in set(t7["model"].astype(str)):
        r = t7[t7["model"].astype(str) == "hrnet"].iloc[0]
        ctx["small"] = {**r.to_dict(), "n_patients": r.get("n_patients"),
                        "sens_width": 100 * (to_float(r["sensitivity_hi"]) - to_float(r["sensitivity_lo"])),
                        "auc_width": to_float(r["roc_auc_hi"]) - to_float(r["roc_auc_lo"])}
    ft = run.csv(ART.fold_table)
    if ft is not None and len(ft):
        thr = pd.to_numeric(ft.loc[~ft["fold"].astype(str).isin(["pooled", "mean"]), "threshold"],
                            errors="coerce").dropna()
        ctx["thresholds"] = list(thr) or None
    if run.profile:
        ctx["protocol"] = [(label, a, b) for label, a, b, in_paper in run.protocol() if in_paper and a != b]
    at = run.csv(ART.audit_table)
    if at is not None and len(at) and "verdict" in at.columns:
        sig = at[at["verdict"].astype(str) == "shortcut signal"]
        ctx["signal"] = list(zip(sig["audit"], sig["auc"])) or None
    hs = run.table("heat_share_ci")
    if hs is not None and len(hs):
        p = hs[(hs["quantity"] == "share_lung") & (hs["fold"] == "pooled") & (hs["label"] == "all")]
        weak = [r for r in p.itertuples(index=False) if not to_float(r.lo) > to_float(r.chance)]
        ctx["weak_heat"] = weak or None
    et = run.csv(ART.external_table)
    ctx["external"] = et is not None and not et.empty
    return ctx


def checklist(run: Run) -> dict:
    idx = run.csv(ART.cls_index)
    grouped = "n/a"
    if idx is not None and len(idx) and "fold" in idx.columns:
        gcol = "group_id" if "group_id" in idx.columns else "patient_id"
        grouped = "yes" if (idx.groupby(gcol)["fold"].nunique() <= 1).all() else "**no**"
    et, at = run.csv(ART.external_table), run.csv(ART.audit_table)
    revs = {m.get("git_revision") for m in run.manifests.values()}
    return {"cohort": run.csv(ART.cohort) is not None, "synthetic": run.info["synthetic"],
            "data": run.info["data"], "grouped": grouped, "predictions": run.csv(ART.all_preds) is not None,
            "n_audits": len(at) if at is not None else 0, "external": et is not None and len(et) > 0,
            "heldout": heldout_kind(run),
            "heat_share": run.csv(ART.hrnet_heat_share) is not None,
            "revisions": sorted(r for r in revs if r)}


def figures(run: Run) -> dict:
    idx = ART.figure_index.find_in(run.figures_dir)
    ok = idx is not None and len(idx) and "file" in idx.columns
    return {"index_rel": ART.figure_index.rel(),
            "index": [(r.file, getattr(r, "paper", "")) for r in idx.itertuples(index=False)] if ok else None}


def verdict(run: Run) -> dict:
    """The paper's claims against this run (:mod:`helpers.evidence.verdict`, ``verdict.csv``)."""
    t = run.table("verdict")
    if t is None:
        return _missing(ART.verdict)
    return {"missing": None, "rel": ART.verdict.rel(), "rows": t.to_dict("records")}


def sites(run: Run) -> dict:
    """Within-source AUC, COVID against each kind of negative, leave one site out, and the models
    that did not learn (:mod:`helpers.evidence.sites`, :func:`helpers.evidence.dynamics.learning`)."""
    def records(name: str) -> list[dict]:
        t = run.table(name)
        return [] if t is None else t.to_dict("records")

    rel = {k: getattr(ART, n).rel() for k, n in (("within", "within_source"), ("negatives", "by_negative"),
                                                  ("called", "negatives_called"), ("loso", "loso_table"),
                                                  ("learning", "learning"))}
    return {"rel": rel, "not_learned": not_learned(run), "within": records("within_source"),
            "negatives": records("by_negative"), "loso": records("loso_table"),
            "profile": run.profile.get("name", "?")}


#: part name -> its context function; the template is ``templates/summary/<name>.md.j2``
PARTS: dict[str, Callable[[Run], dict]] = {
    f.__name__: f for f in (banner, what_was_run, cohort, splits, segmentation, table6, table7, dynamics,
                            comparisons, calibration, prevalence, ledger, shortcut_audits, ladder, saliency,
                            external, limitations, checklist, figures, verdict, sites)}


def _render(run: Run, *names: str) -> str:
    return "".join(render.render(f"summary/{n}.md.j2", figures_rel=run.figures_rel, **PARTS[n](run))
                   for n in names)


def part(run: Run, name: str) -> str:
    """Part ``name`` of :data:`PARTS` rendered for ``run``; the failure note when it raises."""
    return render.isolated(_render, run, name)


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
    sections = SECTIONS + (["Figures"] if figures_rel else [])
    return render.document("summary.md.j2", profile=run.info["profile"], banner=_render(run, "banner"),
                           where=display_path(run.out),
                           sections=[(s, render.isolated(_render, run, *_SECTION_PARTS[s]))
                                     for s in sections])


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
