"""``MODEL_CARD.md`` of a bundle (issue 11), generated from the run's artefacts like ``SUMMARY.md``.

In the spirit of Mitchell et al. (2019), "Model Cards for Model Reporting": intended use, training
data, preprocessing, internal and external performance with 95 % intervals, calibration, the
shortcut audits, the subgroups and views tested and not tested, and the data licences. No number
is computed here in a new way: tables come from the run's saved CSVs through the parts of
:mod:`helpers.report.summary` (the same text as the run's summary) and from the bundle's own
``bundle.json``.

Structure as in the summary: :data:`SECTIONS` lists each heading's parts; the card's own parts
(:data:`PARTS`) are context functions of the run and ``bundle.json`` whose sentences live in
``templates/model_card/<part>.md.j2`` (the intended use is template text only), the others are
parts of the summary. ``templates/model_card.md.j2`` frames the card. A section whose part raises
reads ``_This section could not be built: Type: message_`` while the others still render; a part
of the summary fails on its own, as in the summary.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd

from helpers.report import render
from helpers.report import summary as sm
from helpers.report.tables import fold_label
from helpers.run.artefacts import ART


def intended_use(run: sm.Run, meta: dict) -> dict:
    """Which non-COVID labels the classifier saw in training (from the cohort table)."""
    c = run.csv(ART.cohort)
    labels: list[str] = []
    if c is not None and len(c) and {"role", "label"} <= set(c.columns):
        labels = sorted(set(c.loc[c["role"].astype(str) == "classify", "label"].astype(str)) - {"covid"})
    return {"negatives": labels, "only_normal": labels in ([], ["normal"])}


def shipped_rule(run: sm.Run, meta: dict) -> dict:
    """The bundle's decision rule (mean of the fold probabilities at its one threshold) scored on
    the films no fold trained on, with the held-out set named from its sources."""
    from helpers.evidence import heldout

    name = meta["default_model"]
    c = meta["classifiers"][name]
    preds = run.csv(ART.external_preds)  # held-out films: set "external" (and "external_all")
    t = pd.DataFrame() if preds is None or preds.empty or "set" not in preds else heldout.shipped_rule(
        preds, name, c["decision_threshold"], n_boot=1000, seed=0)
    return {"model": name, "threshold": c["decision_threshold"], "rule": c["decision_rule"],
            "rows": t.to_dict("records"), "heldout": sm.heldout_kind(run),
            "rel": ART.external_preds.rel()}


def ethics(run: sm.Run, meta: dict) -> dict:
    """Ethical considerations: who may use the model, the sex and age of each class (a confound
    a model can learn), the licences that bind the weights, and the paper to cite."""
    c = run.csv(ART.cohort)
    demo, restricted = [], []
    if c is not None and len(c) and {"role", "label", "images"} <= set(c.columns):
        cl = c[c["role"].astype(str) == "classify"].copy()
        cl["images"] = pd.to_numeric(cl["images"], errors="coerce").fillna(0)
        for label, part in cl.groupby("label"):
            w = part["images"].to_numpy()
            female = pd.to_numeric(part.get("female_%"), errors="coerce").to_numpy()
            age = pd.to_numeric(part.get("age_median"), errors="coerce").to_numpy()
            def weighted(x):
                ok = ~pd.isna(x)
                return float((x[ok] * w[ok]).sum() / w[ok].sum()) if w[ok].sum() else None

            demo.append({"label": str(label), "images": int(w.sum()), "female": weighted(female),
                         "age": weighted(age)})
    ds = pd.DataFrame(meta["provenance"].get("data_sources") or [])
    if len(ds) and "license" in ds:
        lic = ds["license"].astype(str)
        restricted = sorted(set(ds.loc[lic.str.contains("NC", case=True), "source"].astype(str)))
    return {"demo": demo, "restricted": restricted}


def _rows(t: pd.DataFrame | None, model: str) -> list[dict]:
    return [] if t is None or t.empty else t[t["model"].astype(str) == model].to_dict("records")


def key_caveats(run: sm.Run, meta: dict) -> dict:
    """The readings that decide whether the shipped model detects COVID-19 or its hospital: the AUC
    inside a source that gave both classes, the thumbnail floors against the model, the share of a
    never-seen site's non-COVID films called COVID, the refinement's failures, and the models that
    did not learn; every number from the run's saved tables."""
    name = meta["default_model"]
    t7 = run.csv(ART.table7)
    floors, own = [], None
    if t7 is not None and len(t7):
        t7 = t7.assign(model=t7["model"].astype(str))
        own = next(iter(t7[t7["model"] == name].to_dict("records")), None)
        floors = t7[t7["model"].str.startswith("thumbnail")].to_dict("records")
    within = [r for r in _rows(run.table("within_source"), name)
              if min(float(r["n_pos"]), float(r["n_neg"])) >= 5]
    pg = run.csv(ART.pass_by_group)
    failed = gap = None
    if pg is not None and len(pg):
        from helpers.refine import pass_gap

        allrow = pg[(pg["label"].astype(str) == "all") & (pg["source"].astype(str) == "all")]
        failed = allrow.iloc[0].to_dict() if len(allrow) else None
        gap = pass_gap(pg)
    return {"model": name, "own": own, "floors": floors, "within": within,
            "loso": _rows(run.table("loso_table"), name), "heldout_sites": _heldout_sites(run, meta),
            "failed": failed, "gap": gap, "not_learned": sm.not_learned(run)}


def _heldout_sites(run: sm.Run, meta: dict) -> list[dict]:
    """Per held-out source with non-COVID films: the share of them the shipped rule calls COVID
    (Wilson interval), and whether the source is external (never in training) or a patient
    hold-out (its hospital gave training films)."""
    sr = shipped_rule(run, meta)
    new = set((sr["heldout"] or {}).get("new", []))
    out = []
    for r in sr["rows"]:
        if str(r["source"]) == "all" or not float(r["n_neg"]) > 0:
            continue
        out.append({"source": r["source"], "n_neg": r["n_neg"], "fp": r["fp"],
                    "share": 1 - r["specificity"], "share_lo": 1 - r["specificity_hi"],
                    "share_hi": 1 - r["specificity_lo"], "external": str(r["source"]) in new})
    return out


def model(run: sm.Run, meta: dict) -> dict:
    return {"profile": meta["profile"], "refinement": meta["refinement"],
            "n_unet": len(meta["weights"]["unet"]),
            "classifiers": [{**c, "name": name, "default": name == meta["default_model"],
                             "thresholds": [(fold_label(f["fold"]), f["threshold"]) for f in c["folds"]]}
                            for name, c in meta["classifiers"].items()],
            "format": meta["format"], "created": meta["created_utc"], "provenance": meta["provenance"]}


def training_data(run: sm.Run, meta: dict) -> dict:
    ds = pd.DataFrame(meta["provenance"].get("data_sources") or [])
    return {"rel": ART.cls_index.rel(), "sources": None if ds.empty else ds[
        ["source", "label", "images", "images_used", "patients", "license"]].rename(
        columns={"images_used": "used (mask passed)"})}


def preprocessing(run: sm.Run, meta: dict) -> dict:
    return meta["preprocessing"]


def calibration(run: sm.Run, meta: dict) -> dict:
    cal, src = run.table("calibration"), ART.calibration.rel()
    if cal is None or cal.empty:
        cal, src = run.csv(ART.table7), ART.table7.rel()
    if cal is None or cal.empty or "brier" not in cal:
        return {"rows": None}
    cal = cal[cal["model"].astype(str).isin(set(meta["classifiers"]))]
    return {"rows": cal.to_dict("records"), "src": src}


def audit_meaning(run: sm.Run, meta: dict) -> dict:
    at = run.csv(ART.audit_table)
    if at is None or at.empty:
        return {"ran": False}
    sig = at[at["verdict"].astype(str) == "shortcut signal"]
    return {"ran": True, "signal": list(zip(sig["audit"], sig["auc"]))}


def subgroups(run: sm.Run, meta: dict) -> dict:
    st, c, et = run.csv(ART.stratified), run.csv(ART.cohort), run.csv(ART.external_table)
    ctx = {"rel": ART.stratified.rel(), "strata": None, "cohort": None, "ages": False,
           "external": et is not None and not et.empty}
    if st is not None and len(st):
        ctx["strata"] = st[st["model"].astype(str).isin(set(meta["classifiers"]))].to_dict("records")
    if c is not None and len(c) and "views" in c:
        cl = c[c["role"].astype(str) == "classify"]
        ctx["cohort"], ctx["ages"] = list(cl.itertuples(index=False)), "age_median" in cl
    return ctx


def ood(run: sm.Run, meta: dict) -> dict:
    o = meta.get("ood") or {}
    features = [dict(v, feature=k) for k, v in (o.get("features") or {}).items()]
    share = float(o.get("share_flagged", float("nan"))) if features else None
    return {"features": features, "n_images": o.get("n_images"), "share_flagged": share}


def licences(run: sm.Run, meta: dict) -> dict:
    ds = pd.DataFrame(meta["provenance"].get("data_sources") or [])
    if ds.empty:
        return {"sources": None}
    g = ds.groupby(["source", "license", "registry_licence", "homepage"], dropna=False)["images"].sum()
    return {"sources": g.reset_index().rename(columns={"license": "licence (manifest)",
                                                       "registry_licence": "licence (source registry)"})}


#: the card's own parts: name -> context function of (run, meta); template ``model_card/<name>.md.j2``
PARTS: dict[str, Callable[[sm.Run, dict], dict]] = {
    f.__name__: f for f in (key_caveats, shipped_rule, intended_use, model, training_data, preprocessing,
                            calibration, audit_meaning, subgroups, ood, licences, ethics)}

#: (heading, parts) in order; ``summary/<name>`` is a part of the summary
#: (:data:`helpers.report.summary.PARTS`)
SECTIONS: list[tuple[str, list[str]]] = [
    ("Key caveats", ["key_caveats"]), ("Intended use", ["intended_use"]), ("Model", ["model"]),
    ("Training data", ["training_data", "summary/cohort"]),
    ("Preprocessing", ["preprocessing"]),
    ("Performance of the shipped decision rule", ["shipped_rule"]),
    ("Internal performance (per-fold, out-of-fold)", ["summary/table6", "summary/table7"]),
    ("Calibration", ["calibration"]), ("Held-out performance", ["summary/external"]),
    ("Tests a new hospital cannot fool", ["summary/sites"]),
    ("Shortcut audits", ["summary/shortcut_audits", "audit_meaning"]), ("Subgroups and views", ["subgroups"]),
    ("Out-of-distribution flags", ["ood"]), ("Limitations", ["summary/limitations"]),
    ("Licences of the data", ["licences"]), ("Ethical considerations", ["ethics"]),
]


def _section(run: sm.Run, meta: dict, names: list[str]) -> str:
    """A section's parts; a part of the summary is isolated on its own, as in the summary."""
    return "".join(sm.part(run, n.removeprefix("summary/")) if n.startswith("summary/") else
                   render.render(f"model_card/{n}.md.j2", **PARTS[n](run, meta)) for n in names)


def model_card_markdown(run_dir: str | Path, meta: dict) -> str:
    """The model card of a bundle as markdown text (``meta``: the bundle's ``bundle.json``).

    Reads the run's saved tables only; the evidence tables (calibration, heat share) are the ones
    notebook 06 saved in ``run_dir/figures/``."""
    run = sm.Run(Path(run_dir), meta["provenance"].get("run_config") or None, None)
    return render.document("model_card.md.j2", models=list(meta["classifiers"]),
                           profile=meta["profile"]["name"], banner=sm.part(run, "banner"),
                           sections=[(title, render.isolated(_section, run, meta, names))
                                     for title, names in SECTIONS])


def write_model_card(run_dir: str | Path, bundle_dir: str | Path, meta: dict) -> Path:
    from helpers.run import store

    dest = Path(bundle_dir) / "MODEL_CARD.md"
    text = model_card_markdown(run_dir, meta)
    store.write_atomic(dest, lambda tmp: Path(tmp).write_text(text))
    return dest
