"""The whole pipeline, 01 -> 06, executed by papermill on the smoke profile in a temporary folder, with
assertions on the artefacts it leaves (Done-when of the foundation issue).

The chain runs from scratch, with every fold of notebooks 02, 04, 05, 05a, 05b and 05c as a task on
one local Ray cluster that the fixture starts and every notebook joins by its address: what
``./run_all.sh smoke --executor ray --ray-address ADDR`` runs. (Each notebook starting an embedded
cluster of its own, ``--executor ray`` without an address, cost about 9 s of start and stop per
notebook on 2 cores and proved the same thing six times; the embedded start is tested once, in
tests/unit/test_executor.py.) That the local loop writes the same fold files byte for byte is also
checked there (the classifier's and the UNet's folds); the local loop through the notebooks trains
in tests/notebooks/test_paper_path.py. (A replay of notebooks 02 and 04 here proved the same a
second time and was cut to keep the suite within 20 minutes.) When ``$HRNET_CXR_OUT_ROOT`` names an
empty folder (run_tests.sh makes a fresh one), the chain writes there, and the nbval pass that
follows executes the same notebooks with their defaults (the local loop) in the same folder: it
then exercises the resume path across executors instead of training every model a second time.
"""
import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def ray_address():
    """A local Ray cluster for the whole chain (started here, stopped after the module); each
    notebook's kernel joins it through ``$RAY_ADDRESS``, as ``run_all.sh --ray-address`` sets it."""
    import logging

    ray = pytest.importorskip("ray")
    if ray.is_initialized() or os.environ.get("RAY_ADDRESS"):
        pytest.fail("the smoke chain starts its own Ray cluster; none may be running in this process")
    ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
             namespace="hrnet-cxr")
    address = ray.get_runtime_context().gcs_address
    os.environ["RAY_ADDRESS"] = address
    try:
        yield address
    finally:
        del os.environ["RAY_ADDRESS"]
        ray.shutdown()


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, ray_address):
    from helpers.run import notebooks

    root = os.environ.get("HRNET_CXR_OUT_ROOT")
    out = Path(root) / "smoke" if root else None
    if out is None or (out.exists() and any(out.iterdir())):
        out = tmp_path_factory.mktemp("smoke")  # never resume from earlier results here
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    for nb in NOTEBOOKS:
        notebooks.execute(nb, out / "notebooks" / nb.name, {"OUT_DIR": str(out), "OVERRIDES": RAY})
    return out


RAY = {"executor": "ray"}  # the folds as Ray tasks, on the cluster of $RAY_ADDRESS


def _csv(out, rel):
    return pd.read_csv(out / rel, keep_default_na=False)


def test_every_fold_ran_as_a_ray_task(smoke_run):
    """Each network of the chain says, in its notebook, that its folds ran on Ray."""
    from helpers import config

    P = config.make_profile("smoke")
    expect = {"02": ["UNet"], "04": ["hrnet"],
              "05": [*P.baselines, "hrnet_unsegmented"],
              "05a": ["audit_source", "audit_lungs_blacked_out", "audit_mask_only"],
              "05b": [f"ladder_{r}" for r in P.ladder if r != "paper"],
              # one model per phantom site, trained without it
              "05c": sorted(k for k in json.loads((smoke_run / "sites/run_manifest.json").read_text())
                            ["timings_s"] if k.startswith("site_"))}
    assert len(expect["05c"]) == 2
    for prefix, names in expect.items():
        nb = next(n for n in NOTEBOOKS if n.name.split("_")[0] == prefix)
        text = (smoke_run / "notebooks" / nb.name).read_text()
        assert "[ray] using the Ray cluster at " in text, f"{nb.name}: did not join the chain's cluster"
        for name in names:  # a status line names every network whose folds it ran
            assert re.search(rf"(?:[\w-]+, )*{re.escape(name)}(?:, [\w-]+)* on Ray \(\d+ at once, .*folds in",
                             text), f"{nb.name}: the folds of {name} did not run as Ray tasks"


def test_folds_patient_disjoint(smoke_run):
    for rel in ("curation/cls_index.csv", "curation/seg_index.csv"):
        df = _csv(smoke_run, rel)
        assert df.groupby("patient_id")["fold"].nunique().max() == 1, rel
        assert df["fold"].nunique() >= 3


def test_unet_dice_on_held_out_folds(smoke_run):
    dice = _csv(smoke_run, "unet/dice.csv")
    assert len(dice) == len(_csv(smoke_run, "curation/seg_index.csv"))
    assert dice["dice"].between(0, 1).all()
    assert dice["dice"].mean() >= 0.90, dice.groupby("fold")["dice"].mean()


def test_refinement_counts_every_image(smoke_run):
    ri = _csv(smoke_run, "refine/refine_index.csv")
    pc = _csv(smoke_run, "refine/pass_counts.csv").set_index("label")
    assert pc.loc["all", "total"] == len(ri) == len(_csv(smoke_run, "curation/cls_index.csv"))
    assert pc.loc["all", "passed"] + pc.loc["all", "failed"] == len(ri)
    seg = np.load(smoke_run / "refine/segmented.npy")
    img = np.load(smoke_run / "curation/cls_images.npy")
    mask = np.load(smoke_run / "refine/masks_refined_cls.npy")
    assert (seg[mask == 0] == 0).all() and (seg[mask > 0] == img[mask > 0]).all()


def test_hrnet_oof_predictions_and_metrics(smoke_run):
    p = _csv(smoke_run, "hrnet/folds/preds.csv")
    oof = p[p["set"] == "oof"]
    ri = _csv(smoke_run, "refine/refine_index.csv")
    assert len(oof) == int((ri["passed"].astype(str) == "True").sum())
    assert oof["image_id"].is_unique and oof["prob"].between(0, 1).all()
    from sklearn.metrics import roc_auc_score
    auc = roc_auc_score(oof["y"], oof["prob"])
    assert auc >= 0.75, f"HRNet on segmented phantoms: out-of-fold AUC {auc:.3f}"
    ft = _csv(smoke_run, "hrnet/fold_table.csv")
    pooled = ft[ft["fold"].astype(str) == "pooled"].iloc[0]
    tp = ((oof.y == 1) & (oof.pred == 1)).sum()
    assert pooled["tp"] == tp  # the table is recomputed from the stored predictions


def test_all_models_on_identical_images(smoke_run):
    allp = _csv(smoke_run, "baselines/all_preds.csv")
    models = set(allp["model"])
    from helpers import config
    assert {"hrnet", "hrnet_unsegmented", *config.make_profile("smoke").baselines} <= models
    ids = {m: tuple(sorted(g["image_id"] + ":" + g["fold"].astype(str))) for m, g in allp.groupby("model")}
    assert len(set(ids.values())) == 1
    t7 = _csv(smoke_run, "baselines/table7.csv")
    assert set(t7["model"]) == models and t7["roc_auc"].between(0, 1).all()


def test_segmentation_moves_heat_into_the_lungs(smoke_run):
    # Figs. 9 and 12 show COVID-positive detections; on those images the model trained on segmented
    # input must put more of its Grad-CAM heat inside the lungs than the one trained on full images
    # (which can use the planted site marker outside them). Paired over the same images.
    a = _csv(smoke_run, "hrnet/heat_share.csv")
    b = _csv(smoke_run, "baselines/heat_share.csv")
    m = a.merge(b, on="image_id", suffixes=("_seg", "_unseg"))
    m = m[m["label_seg"] == "covid"]
    seg = pd.to_numeric(m["share_lung_seg"], errors="coerce")
    unseg = pd.to_numeric(m["share_lung_unseg"], errors="coerce")
    assert len(m) > 50
    assert seg.mean() > unseg.mean(), \
        f"heat inside lungs (covid): segmented {seg.mean():.3f} vs {unseg.mean():.3f}"
    assert (seg > unseg).mean() > 0.5  # on most images, not only on average


def test_every_figure_written(smoke_run):
    idx = _csv(smoke_run, "figures/index.csv")
    expected = {"fig07_augmentation.png", "fig10_unet_curves.png", "fig06_refinement.png",
                "table6_hrnet_folds.png", "table7_models.png", "fig13_hrnet_confusion.png",
                "fig14_baseline_confusion.png", "fig09_12_gradcam.png", "fig09_12_heat_share.png"}
    assert expected <= set(idx["file"])
    for f in idx["file"]:
        png = smoke_run / "figures" / f
        assert png.stat().st_size > 5000 and png.read_bytes()[:4] == b"\x89PNG"
    assert "phantoms" in idx["data"].iloc[0]  # smoke figures say they are not radiographs


def test_run_manifests(smoke_run):
    for stage in ("curation", "unet", "refine", "hrnet", "baselines", "figures"):
        m = json.loads((smoke_run / stage / "run_manifest.json").read_text())
        assert m["profile"] == "smoke" and m["git_revision"] and m["packages"]["torch"].startswith("2.14.1")
        assert m["timings_s"]["total"] >= 0 and m["seed"] == 0
    # notebooks 05, 05a and 05c train their networks in one call; each network's fold time is kept
    from helpers import config

    P = config.make_profile("smoke")
    parts = {s: json.loads((smoke_run / s / "run_manifest.json").read_text())["timings_s"]
             for s in ("baselines", "audits", "sites")}
    assert {"train", "hrnet_unsegmented", *P.baselines} <= set(parts["baselines"])
    assert {"train", "audit_source", "audit_lungs_blacked_out", "audit_mask_only"} <= set(parts["audits"])
    assert sum(k.startswith("site_") for k in parts["sites"]) == 2  # both phantom sites left out
    assert all(v > 0 for t in parts.values() for k, v in t.items() if k != "total")


def test_audits_detect_the_planted_shortcut(smoke_run):
    t = _csv(smoke_run, "audits/audit_table.csv").set_index("audit")
    auc = pd.to_numeric(t["auc"])
    assert auc["source"] > 0.9          # the two phantom sites are recognisable
    assert auc["lungs_blacked_out"] > 0.75  # the label is predictable without the lungs (shortcut on)
    assert auc["lowlevel_outside"] > 0.75   # ... even by a linear model on outside-lung statistics
    null = json.loads((smoke_run / "audits/permutation_null.json").read_text())
    assert 0.4 < null["null_mean"] < 0.6 and null["p_value"] < 0.05


def test_evidence_and_summary(smoke_run):
    fig = smoke_run / "figures"
    for f in ("ev_calibration.png", "ev_ppv_npv.png", "ev_auc_forest.png", "ev_heat_share.png",
              "ev_audits.png"):
        assert (fig / f).stat().st_size > 5000, f
    companion = _csv(smoke_run, "figures/ledger_companion.csv")
    assert len(companion) and (companion["consistent"].astype(str) == "True").all()
    paper = _csv(smoke_run, "figures/ledger_paper.csv")
    assert (paper["consistent"].astype(str) == "False").sum() >= 6
    text = (fig / "SUMMARY.md").read_text()
    assert "GENERATED PHANTOMS" in text and "## Shortcut audits" in text and "## Claims ledger" in text


def test_evidence_recomputes_table7_from_the_stored_predictions(smoke_run):
    """Notebook 06's evidence layer, fed the chain's stored predictions, gives notebook 05's Table 7
    numbers again (Brier score, ROC-AUC per model), and every number the ledger checks of this run is
    consistent."""
    from helpers.evidence import recomputed as E

    lt = E.ledger_tables(smoke_run)
    assert len(lt["companion"]) and all(v is True for v in lt["companion"]["consistent"])
    preds = E.load_predictions(smoke_run)
    t7 = _csv(smoke_run, "baselines/table7.csv").set_index("model")
    cal = E.calibration(preds)
    assert len(cal) >= 5
    assert cal.set_index("model")["brier"].to_numpy() == pytest.approx(
        t7.loc[cal["model"], "brier"].astype(float).to_numpy())
    c = E.comparisons(preds, n_boot=100)
    assert len(c) >= 4
    assert c.set_index("model")["auc_model"].to_numpy() == pytest.approx(
        t7.loc[c["model"], "roc_auc"].astype(float).to_numpy())


def test_summary_rewritten_from_the_artefacts(smoke_run, tmp_path):
    """SUMMARY.md written again from the chain's artefacts: no section fails, the phantom banner is
    there, and the classification row of the proposed model carries Table 7's AUC."""
    from helpers.report import summary as S

    text = S.write_summary(smoke_run, tmp_path / "SUMMARY.md", figures_rel="figures").read_text()
    assert "could not be built" not in text and S.PHANTOM_BANNER in text
    auc = _csv(smoke_run, "baselines/table7.csv").set_index("model").loc["hrnet", "roc_auc"]
    section = re.search(r"^## Classification\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M).group(1)
    row = next(line for line in section.splitlines() if line.startswith("| hrnet |"))
    assert [c.strip() for c in row.strip("|").split("|")][5].startswith(f"{float(auc):.3f}")


def test_summary_tables_and_captions_agree_at_two_seeds(smoke_run, tmp_path):
    """Notebook 06's own output (seed 0) and its saving path again with seed 1: within each,
    SUMMARY.md, the evidence CSVs and the captions of index.csv show the same numbers."""
    import sys

    sys.path.insert(0, str(ROOT / "tests" / "unit"))
    import figure_agreement as fa

    fa.check_agreement(smoke_run / "figures", seed=0)
    fa.run_figures_stage(smoke_run, tmp_path / "seed1", seed=1)
    fa.check_agreement(tmp_path / "seed1", seed=1)
    assert fa.formatted_intervals(smoke_run / "figures") != fa.formatted_intervals(tmp_path / "seed1")


# --- the executed notebooks as a reader sees them ------------------------------------------------
DRAWS = re.compile(r"plots\.\w+\(|figures\.(fig\w*|table\d|ev_\w+)\(|\w+_fig\b|build\(cfg(, \w+)?\)\.fig")
MIN_IMAGES = {"01": 1, "02": 2, "03": 1, "04": 1, "05": 1, "05a": 1, "05b": 1, "05c": 0, "06": 12}


def _outputs(cell):
    for o in cell.get("outputs", []):
        if o["output_type"] == "stream":
            yield o, {"text/plain": "".join(o["text"])}
        elif "data" in o:
            yield o, {k: "".join(v) if isinstance(v, list) else v for k, v in o["data"].items()}


def test_executed_notebooks_show_their_figures_inline(smoke_run):
    for path in sorted((smoke_run / "notebooks").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        n_images = 0
        for cell in nb["cells"]:
            if cell["cell_type"] != "code":
                continue
            src = "".join(cell["source"])
            images = sum("image/png" in data for _, data in _outputs(cell))
            n_images += images
            if DRAWS.search(src):
                assert images >= 1, f"{path.name}: a cell that draws shows no image:\n{src[:300]}"
            for o, data in _outputs(cell):
                if "image/png" not in data:
                    assert not data.get("text/plain", "").startswith("<Figure"), \
                        f"{path.name}: a figure printed as text instead of an image:\n{src[:300]}"
        assert n_images >= MIN_IMAGES[path.name.split("_")[0]], f"{path.name}: {n_images} images"


def test_executed_notebooks_have_clean_outputs(smoke_run):
    frozen = re.compile(r"\b0%\||\d+/\d+ \[\d\d:\d\d<")  # tqdm bars saved mid-way
    repr_end = re.compile(r"^(PosixPath|WindowsPath|np\.(int|float)\d*)\(")
    for path in sorted((smoke_run / "notebooks").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            for o, data in _outputs(cell):
                text = data.get("text/plain", "")
                where = f"{path.name}, cell {''.join(cell['source'])[:80]!r}"
                assert not frozen.search(text), f"{where}: a progress bar saved mid-way: {text[:200]}"
                assert not (o["output_type"] == "stream" and o["name"] == "stderr"), \
                    f"{where}: stderr output: {text[:300]}"
                assert o["output_type"] != "error", f"{where}: error"
                if o["output_type"] == "execute_result":
                    assert not repr_end.match(text), f"{where}: ends with a bare repr: {text[:120]}"


def test_every_registered_artefact_was_written(smoke_run):
    """The registry (``artefacts.ART``) names files the notebooks really write: after the chain, each
    exists (the external set's only with an external set, which the smoke chain has not)."""
    from helpers.run.artefacts import ART, EXTERNAL_PREFIX, Artefact

    arts = {n: a for n, a in vars(ART).items() if isinstance(a, Artefact)}
    missing = [a.rel() for n, a in arts.items()
               if not a.file.startswith(EXTERNAL_PREFIX) and not a.exists(smoke_run)]
    assert not missing, f"registered but not written: {missing}"
    assert len(arts) > 40


def test_smoke_covers_several_folders_pneumonia_sites_and_the_geometry_cue(smoke_run):
    """The sites issue's smoke coverage: a cohort read from two phantom folders with the pneumonia
    label, each phantom site left out once, the planted aspect cue caught by the geometry-only
    audit, and the refinement pass rate per label x source."""
    from helpers import config

    P = config.make_profile("smoke")
    flow = _csv(smoke_run, "curation/flow.csv")
    assert set(flow["source"]) == {"phantoms (phantoms)", "phantoms (phantoms-pneumonia)"}
    cls = _csv(smoke_run, "curation/cls_index.csv")
    assert set(cls["label"]) == {"covid", "normal", "pneumonia"}
    assert (cls.loc[cls["label"] == "pneumonia", "y"] == 0).all()
    assert cls["path"].str.startswith("phantoms-pneumonia/").sum() == (cls["label"] == "pneumonia").sum()
    # every phantom site gives both classes, so a within-site AUC exists for each
    both = cls.groupby("source")["y"].nunique()
    assert (both == 2).all(), both
    within = _csv(smoke_run, "figures/within_source.csv")
    assert {"phantom-a", "phantom-b"} <= set(within.loc[within["model"] == "hrnet", "source"])
    loso = _csv(smoke_run, "figures/loso_table.csv")
    assert set(loso.loc[loso["model"] == "hrnet", "site"]) == {"phantom-a", "phantom-b"}
    share = pd.to_numeric(loso["share"])
    assert share.between(0, 1).all() and (pd.to_numeric(loso["n_neg"]) >= P.loso_min_negatives).all()
    # the aspect cue: only COVID films are written taller than wide, and the header shows it
    t = _csv(smoke_run, "audits/audit_table.csv").set_index("audit")
    assert pd.to_numeric(t.loc["geometry", "auc"]) > 0.7
    assert pd.to_numeric(t.loc["not_square_from_inputs", "auc"]) > 0.7   # padded squares show it
    pg = _csv(smoke_run, "refine/pass_by_group.csv")
    assert {"covid", "normal", "pneumonia", "non-covid", "all"} <= set(pg["label"])
    allrow = pg[(pg["label"] == "all") & (pg["source"] == "all")].iloc[0]
    assert int(allrow["total"]) == len(cls)
    assert (smoke_run / "figures" / "ev_sites.png").stat().st_size > 5000
