"""``MODEL_CARD.md`` of a bundle (issue 11), generated from the run's artefacts like ``SUMMARY.md``.

In the spirit of Mitchell et al. (2019), "Model Cards for Model Reporting": intended use, training
data, preprocessing, internal and external performance with 95 % intervals, calibration, the
shortcut audits, the subgroups and views tested and not tested, and the data licences. No number
is computed here in a new way: tables come from the run's saved CSVs through the section builders
of :mod:`helpers.report.summary` (the same text as the run's summary) and from the bundle's own
``bundle.json``.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from helpers.report import summary as sm
from helpers.report.formats import fixed as _fmt
from helpers.run.artefacts import ART

INTENDED_USE = [
    "- **Research only.** This model reproduces a published method so that its claims can be "
    "checked. It is **not a medical device** and must not be used to diagnose, triage, screen, "
    "rule out or monitor COVID-19 or any other condition, nor to make any decision about a person.",
    "- It answers one narrow question, *COVID-19 vs normal* on a frontal adult chest radiograph "
    "like those of its training sources. It was never shown other diseases (bacterial or other "
    "viral pneumonia, effusion, tumours, tuberculosis, ...): such films get a COVID/normal "
    "probability that means nothing.",
    "- Do not use it on lateral views, children, CT, photographs or screenshots of films, or "
    "images from sources unlike the training data; the out-of-distribution flags catch some, not "
    "all, of these.",
]


def _section(run, fn) -> list[str]:
    try:
        return [b for b in fn(run) if b is not None]
    except Exception as exc:  # a broken section must not hide the others (as in SUMMARY.md)
        return [f"_This section could not be built: {type(exc).__name__}: {exc}_"]


def _model_details(meta: dict) -> list[str]:
    p = meta["profile"]
    L = []
    for name, c in meta["classifiers"].items():
        thr = ", ".join(f"fold {f['fold'] + 1}: {_fmt(f['threshold'])}" for f in c["folds"])
        L.append(f"- `{name}`{' (default)' if name == meta['default_model'] else ''}: timm "
                 f"`{c['architecture']}` with the Fig. 11 head, {len(c['folds'])} fold models trained "
                 f"from scratch on {c['input']} {p['cls_size']} px images; thresholds chosen on each "
                 f"fold's inner validation split (Youden's J): {thr}. Decision: {c['decision_rule']} "
                 f"= **{_fmt(c['decision_threshold'])}**.")
    r = meta["refinement"]
    L += [f"- Lung segmentation: the mean of {len(meta['weights']['unet'])} fold UNets "
          f"(`{p['unet_arch']}`, base width {p['unet_base_channels']}) at {p['seg_size']} px, thresholded "
          f"at 0.5, dilated x{r['dilate_iters']} and closed x{r['close_iters']} (3 x 3 kernel; "
          f"{r['dilate_iters_at_512']} and {r['close_iters_at_512']} at 512 px), kept when the refined "
          f"mask covers at least {r['area_threshold_px']} px ({r['area_threshold_512']:,} px at 512 px; "
          "section 3.2). A film whose mask fails gets no probability (status `no_lung_mask`).",
          f"- Profile `{p['name']}`; bundle format `{meta['format']}`, exported "
          f"{meta['created_utc']} at revision `{meta['provenance']['export_git_revision']}`; stages "
          "trained at " + ", ".join(f"{s} `{v}`"
                                    for s, v in meta["provenance"]["stage_git_revisions"].items())
          + "."]
    return L


def _training_data(meta: dict) -> list[str]:
    ds = pd.DataFrame(meta["provenance"].get("data_sources") or [])
    if ds.empty:
        return ["_No classification index in the run._"]
    t = ds[["source", "label", "images", "images_used", "patients", "license"]].rename(
        columns={"images_used": "used (mask passed)"})
    return [f"Classification images by source and class (`{ART.cls_index.rel()}`; *used* = the "
            "lung mask passed refinement, so the fold classifiers trained and were tested on them):",
            "", sm.md_table(t), ""]


def _preprocessing(meta: dict) -> list[str]:
    pp = meta["preprocessing"]
    return [f"- Decoding: {pp['reader']}: 16-bit PNG and DICOM are mapped min..max to 8 bits after "
            "the DICOM modality LUT (rescale slope / intercept) and VOI LUT or window; MONOCHROME1 is "
            "inverted. Multi-frame, colour and pixel-less DICOM objects are refused.",
            f"- Geometry: {pp['geometry']} to {pp['seg_size']} px for the UNets and {pp['cls_size']} px "
            "for the classifier.",
            f"- Classifier input: the film times the refined lung mask (lungs kept, the rest zero); "
            f"{pp['classifier_input']}.",
            "- Prediction runs exactly this code (`helpers.deploy.predict`), so a film gives the probability "
            "notebook 04 would have given it."]


def _calibration(run, meta: dict) -> list[str]:
    cal = run.table("calibration")
    src = f"`{ART.calibration.rel()}`"
    if cal is None or cal.empty:
        cal, src = run.csv(ART.table7), f"`{ART.table7.rel()}`"
    if cal is None or cal.empty or "brier" not in cal:
        return ["_No calibration table in the run (notebooks 05/06 write it)._"]
    models = set(meta["classifiers"])
    c = cal[cal["model"].astype(str).isin(models)]
    rows = [{"model": r.get("model"), "Brier": sm.fmt_auc(r.get("brier")),
             "ECE (10 bins)": sm.fmt_auc(r.get("ece")),
             "mean predicted probability": sm.fmt_pct(r.get("mean_prob")) if "mean_prob" in c else "",
             "observed prevalence": sm.fmt_pct(r.get("prevalence")) if "prevalence" in c else ""}
            for r in c.to_dict("records")]
    return [f"Pooled out-of-fold probabilities ({src}); the probability a bundle reports is the mean "
            "of the fold models, whose calibration was not measured separately. Brier 0.25 is a "
            "constant 0.5.", "", sm.md_table(pd.DataFrame(rows))]


def _audit_meaning(run) -> list[str]:
    at = run.csv(ART.audit_table)
    if at is None or at.empty:
        return ["- _The shortcut audits were not run (notebook 05)._"]
    sig = at[at["verdict"].astype(str) == "shortcut signal"]
    if sig.empty:
        return ["- For this model: no audit found a route to the label that bypasses the disease; "
                "this does not prove there is none."]
    names = ", ".join(f"`{a}` (AUC {sm.fmt_auc(x)})" for a, x in zip(sig["audit"], sig["auc"]))
    return [f"- **For this model:** {names} found shortcut signal. The label can be predicted "
            "from what these audits keep (the source, the image outside the lungs, cheap image "
            "statistics), so a high probability may reflect *where a film comes from* rather than "
            "disease. Segmentation removes most of the film outside the lungs, but the dilated mask "
            "keeps a border, and processing differences between sources survive inside the lungs.",
            "- Where the within-source AUCs below are much lower than the overall AUC, the overall "
            "figure owes much to the mix of sources."]


def _subgroups(run, meta: dict) -> list[str]:
    L = []
    st = run.csv(ART.stratified)
    if st is not None and len(st):
        d = st[st["model"].astype(str).isin(set(meta["classifiers"]))]
        rows = [{"model": r["model"], "by": r["stratum_type"], "stratum": r["stratum"],
                 "n (pos/neg)": f"{sm.num(r['n'])} ({sm.num(r['n_pos'])}/{sm.num(r['n_neg'])})",
                 "sensitivity": sm.fmt_pct(r["sensitivity"]), "specificity": sm.fmt_pct(r["specificity"]),
                 "AUC": sm.fmt_auc(r["auc"])} for r in d.to_dict("records")]
        L += [f"Tested on (pooled out-of-fold, `{ART.stratified.rel()}`):", "",
              sm.md_table(pd.DataFrame(rows)), ""]
    else:
        L.append("- _No stratified results in the run (notebook 05)._")
    c = run.csv(ART.cohort)
    if c is not None and len(c) and "views" in c:
        cl = c[c["role"].astype(str) == "classify"]
        L.append("- Views in the training data: " + "; ".join(
            f"{r.source} {r.label}: {r.views}" for r in cl.itertuples(index=False)) + ".")
        if "age_median" in cl:
            L.append("- Age (median per source and class, where known): " + "; ".join(
                f"{r.source} {r.label} {_fmt(r.age_median, 0)} ({sm.num(r.age_known)} known)"
                for r in cl.itertuples(index=False)) + ".")
    L += ["- **Not tested on:** lateral or other non-frontal views (excluded at curation), children "
          "(adults only where the source states the age), other lung diseases, other hospitals, "
          "scanners or post-processing than those of the sources above, portable films outside "
          "these sources, and any prospective or clinical setting. Sex and age subgroups were not "
          "analysed separately."]
    et = run.csv(ART.external_table)
    if et is None or et.empty:
        L.append("- No external validation set: every number above is internal cross-validation.")
    return L


def _ood(meta: dict) -> list[str]:
    o = meta.get("ood") or {}
    feats = o.get("features") or {}
    if not feats:
        return ["_No training ranges stored._"]
    rows = [{"feature": k, "what": v["what"], "0.5 %": _fmt(v["lo"]), "99.5 %": _fmt(v["hi"]),
             "median": _fmt(v["median"])} for k, v in feats.items()]
    return ["Computed flags in every prediction row (`helpers.deploy.ood`): "
            "`outside_training_range:<feature>` "
            f"outside the central 99 % of the {o.get('n_images')} training images "
            f"({100 * float(o.get('share_flagged', float('nan'))):.1f} % of the training images get at "
            "least one such flag), `fold_disagreement` (the fold models' decisions differ), "
            "`heat_not_in_lungs` (Grad-CAM heat inside the lungs no better than uniform).", "",
            sm.md_table(pd.DataFrame(rows))]


def _licences(meta: dict) -> list[str]:
    ds = pd.DataFrame(meta["provenance"].get("data_sources") or [])
    if ds.empty:
        return ["_Not recorded._"]
    g = ds.groupby(["source", "license", "registry_licence", "homepage"],
                   dropna=False)["images"].sum().reset_index()
    L = ["The weights are derived from these images; their terms travel with the model (a "
         "non-commercial licence on any training source restricts the use of the weights as well):",
         "", sm.md_table(g.rename(columns={"license": "licence (manifest)",
                                           "registry_licence": "licence (source registry)"})), ""]
    return L


def model_card_markdown(run_dir: str | Path, meta: dict) -> str:
    """The model card of a bundle as markdown text (``meta``: the bundle's ``bundle.json``).

    Reads the run's saved tables only; the evidence tables (calibration, heat share) are the ones
    notebook 06 saved in ``run_dir/figures/``."""
    run = sm.Run(Path(run_dir), meta["provenance"].get("run_config") or None, None)
    models = ", ".join(f"`{m}`" for m in meta["classifiers"])
    L = [f"# Model card: {models} from profile `{meta['profile']['name']}`", ""]
    L += sm.banner(run)
    L += ["Generated by `helpers.report.model_card` at export from the run's artefacts (copied to "
          "`evidence/`) and `bundle.json`; no number is typed by hand.", ""]
    sections = [
        ("Intended use", lambda: INTENDED_USE),
        ("Model", lambda: _model_details(meta)),
        ("Training data", lambda: _training_data(meta) + _section(run, sm.cohort_section)),
        ("Preprocessing", lambda: _preprocessing(meta)),
        ("Internal performance", lambda: _section(run, sm.table6_section) + _section(run, sm.table7_section)),
        ("Calibration", lambda: _calibration(run, meta)),
        ("External performance", lambda: _section(run, sm.external_section)),
        ("Shortcut audits", lambda: _section(run, sm.audits_section) + _audit_meaning(run)),
        ("Subgroups and views", lambda: _subgroups(run, meta)),
        ("Out-of-distribution flags", lambda: _ood(meta)),
        ("Limitations", lambda: _section(run, sm.limitations_section)),
        ("Licences of the data", lambda: _licences(meta)),
    ]
    for name, fn in sections:
        L += [f"## {name}", ""]
        try:
            L += fn()
        except Exception as exc:
            L.append(f"_This section could not be built: {type(exc).__name__}: {exc}_")
        L.append("")
    text = "\n".join(L)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.rstrip() + "\n"


def write_model_card(run_dir: str | Path, bundle_dir: str | Path, meta: dict) -> Path:
    from helpers.run import store

    dest = Path(bundle_dir) / "MODEL_CARD.md"
    text = model_card_markdown(run_dir, meta)
    store.write_atomic(dest, lambda tmp: Path(tmp).write_text(text))
    return dest
