"""Issue 11, "apply the trained models to new radiographs": export a bundle from a finished run,
predict PNG, JPEG and DICOM files with it, and get the probabilities notebook 04 stored.

The module makes its own miniature run (``tiny_run.build_run``: phantoms, 2 folds, 1 epoch) so
it needs no earlier output and no real data.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tomllib
import torch
from PIL import Image

from helpers import explain, train
from helpers.data import decode
from helpers.deploy import bundle, cli, ood, predict

sys.path.insert(0, str(Path(__file__).parent))
import tiny_run  # noqa: E402
from test_bad_input import write_dicom  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_run.build_run(tmp_path_factory.mktemp("run") / "out")


@pytest.fixture(scope="module")
def bdir(run, tmp_path_factory):
    return bundle.export(run, tmp_path_factory.mktemp("b") / "bundle", ("hrnet", "hrnet_unsegmented"))


@pytest.fixture(scope="module")
def predictor(bdir):
    return predict.Predictor.from_bundle(bdir)


def _oof(run: Path) -> pd.DataFrame:
    p = pd.read_csv(run / "hrnet/folds/preds.csv", keep_default_na=False)
    idx = pd.read_csv(run / "curation/cls_index.csv", keep_default_na=False)
    p = p[p["set"] == "oof"].merge(idx[["image_id", "file"]], on="image_id")
    return p


# ----------------------------------------------------------------------------------------------
# export


def test_bundle_contents_checksums_and_model_card(run, bdir):
    meta = json.loads((bdir / "bundle.json").read_text())
    assert meta["format"] == bundle.FORMAT and meta["default_model"] == "hrnet"
    assert meta["profile"]["seg_size"] == 64 and meta["refinement"]["area_threshold_px"] > 0
    c = meta["classifiers"]["hrnet"]
    preds = pd.read_csv(run / "hrnet/folds/preds.csv")
    assert [f["threshold"] for f in c["folds"]] == [
        preds[(preds.fold == k) & (preds.set == "oof")].threshold.iloc[0] for k in (0, 1)]
    assert c["decision_threshold"] == pytest.approx(np.median([f["threshold"] for f in c["folds"]]))
    assert meta["classifiers"]["hrnet_unsegmented"]["input"] == "unsegmented"
    entries = meta["weights"]["unet"] + c["folds"]
    assert len(meta["weights"]["unet"]) == 2 and len(c["folds"]) == 2
    for e in entries:  # sha256 recorded for every weights file, and each is a plain state dict
        f = bdir / e["file"]
        assert hashlib.sha256(f.read_bytes()).hexdigest() == e["sha256"]
        state = torch.load(f, weights_only=True)
        assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert {r["model"] for r in meta["metrics"]["internal_table7"]} == {"hrnet", "hrnet_unsegmented"}
    assert "roc_auc_lo" in meta["metrics"]["internal_table7"][0]
    prov = meta["provenance"]
    assert prov["export_git_revision"] and prov["stage_git_revisions"]["hrnet"]
    assert "torch" in prov["export_packages"]
    src = pd.DataFrame(prov["data_sources"])
    assert src["images"].sum() == len(pd.read_csv(run / "curation/cls_index.csv"))
    assert set(src["license"]) == {"CC0 (generated)"}
    assert set(meta["ood"]["features"]) == set(ood.FEATURES) and 0 <= meta["ood"]["share_flagged"] <= 1
    card = (bdir / "MODEL_CARD.md").read_text()
    for heading in ("Intended use", "Training data", "Preprocessing", "Internal performance", "Calibration",
                    "Held-out performance", "Shortcut audits", "Subgroups and views", "Licences of the data"):
        assert f"## {heading}" in card
    assert "not a medical device" in card and "GENERATED PHANTOMS" in card
    assert "CC0 (generated)" in card and "_This section could not be built" not in card


def test_export_refuses_to_overwrite_and_unfinished_runs(run, bdir, tmp_path):
    with pytest.raises(bundle.BundleError, match="not empty"):
        bundle.export(run, bdir)
    with pytest.raises(bundle.BundleError, match="'resnet18' was not trained in this run"):
        bundle.export(run, tmp_path / "b2", ("resnet18",))
    unsaved = tmp_path / "unsaved"
    shutil.copytree(run, unsaved)
    (unsaved / "hrnet/folds/fold1.pt").unlink()
    with pytest.raises(bundle.BundleError, match="weights of 'hrnet' were not saved"):
        bundle.export(unsaved, tmp_path / "b2")
    assert not (tmp_path / "b2").exists() and not list(tmp_path.glob(".b2.partial-*"))
    half = tmp_path / "half"
    shutil.copytree(run / "curation", half / "curation")
    with pytest.raises(bundle.BundleError, match="02_unet_training"):
        bundle.export(half, tmp_path / "b3")
    assert cli.main(["export", str(run), str(bdir)]) == 2


def test_altered_weights_are_refused(bdir, tmp_path):
    bad = tmp_path / "bundle"
    shutil.copytree(bdir, bad)
    f = bad / "weights/hrnet/fold1.pt"
    data = bytearray(f.read_bytes())
    data[-100] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(bundle.BundleError, match="checksum mismatch .*fold1.pt"):
        predict.Predictor.from_bundle(bad)
    assert cli.main(["predict", str(tmp_path), "--bundle", str(bad), "--out",
                     str(tmp_path.parent / "o")]) == 2


def test_console_script_declared():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert meta["project"]["scripts"]["hrnet-cxr"] == "helpers.deploy.cli:main"


# ----------------------------------------------------------------------------------------------
# the probabilities of notebook 04


def test_one_fold_reproduces_notebook_04(run, bdir):
    oof = _oof(run)
    for k in (0, 1):
        part = oof[oof["fold"] == k]
        pred = predict.Predictor.from_bundle(bdir, folds=[k], heatmaps=False)
        assert pred.threshold == part["threshold"].iloc[0]
        got = pred.predict_many(part["file"], show_progress=False)
        assert (got["status"] == "ok").all()
        np.testing.assert_allclose(got["probability"].astype(float), part["prob"], atol=1e-5, rtol=0)
        assert ((got["decision"] == "covid").astype(int).to_numpy() == part["pred"].to_numpy()).all()


def test_default_averages_every_fold(run, bdir, predictor):
    oof = _oof(run).head(6)
    rows = predictor.predict_many(oof["file"], show_progress=False)
    singles = [predict.Predictor.from_bundle(bdir, folds=[k], heatmaps=False)
               .predict_many(oof["file"], show_progress=False)["probability"].astype(float).to_numpy()
               for k in (0, 1)]
    fold_p = np.stack(singles, 1)
    np.testing.assert_allclose(rows["probability"].astype(float), fold_p.mean(1), atol=1e-6)
    np.testing.assert_allclose(rows["prob_min"].astype(float), fold_p.min(1), atol=1e-6)
    np.testing.assert_allclose(rows["prob_sd"].astype(float), fold_p.std(1), atol=1e-6)
    assert predictor.threshold == pytest.approx(np.median(predictor.thresholds))
    want = np.where(fold_p.mean(1) >= predictor.threshold, "covid", "normal")
    assert (rows["decision"].to_numpy() == want).all()
    votes = (fold_p >= np.array(predictor.thresholds)).sum(1)
    for r, v in zip(rows.itertuples(), votes):
        assert r.folds_positive == f"{v}/2"
        assert ("fold_disagreement" in r.flags) == (v == 1)
        assert 0 <= r.heat_share_lung <= 1 and 0 < r.lung_area_fraction < 1


def test_heat_maps_equal_those_of_explain(bdir, predictor, run):
    c = predictor.meta["classifiers"]["hrnet"]
    ref = train.build(predictor.profile, c["architecture"], "cpu")
    ref.load_state_dict(bundle.load_state(bdir, c["folds"][0]))
    ref.eval()
    x = np.load(run / "refine/segmented.npy")[:4]
    cat = np.array([0, 1, 1, 0])
    np.testing.assert_allclose(explain.gradcam(predictor.classifiers[0], x, cat),
                               explain.gradcam(ref, x, cat), atol=1e-6)


def test_run_folder_gives_the_same_probabilities(run, predictor, tmp_path):
    files = list(_oof(run)["file"].head(3))
    assert cli.main(["predict", *files, "--run", str(run), "--out", str(tmp_path / "o"),
                     "--no-heatmaps"]) == 0
    got = pd.read_csv(tmp_path / "o/predictions.csv")
    want = predictor.predict_many(files, show_progress=False)
    np.testing.assert_allclose(got["probability"], want["probability"].astype(float), atol=1e-6)


# ----------------------------------------------------------------------------------------------
# files of every kind, and bad ones


@pytest.fixture(scope="module")
def inputs(run, tmp_path_factory):
    """A folder of one film in many encodings plus broken files; returns (folder, film uint8)."""
    d = tmp_path_factory.mktemp("inputs")
    src = Path(_oof(run)["file"].iloc[0])
    a = decode.read_image(src)
    shutil.copy(src, d / "a_png8.png")
    Image.fromarray(a).save(d / "b_jpeg.jpg", quality=95)
    Image.fromarray(a.astype(np.uint16) * 257).save(d / "c_png16.png")
    g = a.astype(np.uint16) * 16
    write_dicom(d / "d_mono2.dcm", g, slope=1.0, intercept=-1024)       # 16-bit with rescale
    write_dicom(d / "e_mono1.dcm", 4095 - g, "MONOCHROME1")
    write_dicom(d / "f_window.dcm", g, window=(2048, 4096))
    from pydicom.uid import JPEGLSLossless

    write_dicom(d / "g_compressed.dcm", g, syntax=JPEGLSLossless)
    write_dicom(d / "h_multiframe.dcm", np.stack([g, g]), frames=2)
    write_dicom(d / "i_no_pixels.dcm", g, pixels=False)
    write_dicom(d / "j_lateral.dcm", g, view="LL")
    (d / "k_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    Image.fromarray(np.full((128, 128), 77, np.uint8)).save(d / "l_blank.png")
    Image.fromarray(a[:40, :40]).save(d / "m_tiny.png")
    (d / "notes.txt").write_text("not an image")  # skipped inside a folder
    return d, a


WANT = {"a_png8": "ok", "b_jpeg": "ok", "c_png16": "ok", "d_mono2": "ok", "e_mono1": "ok",
        "f_window": "ok", "g_compressed": "unreadable", "h_multiframe": "unreadable",
        "i_no_pixels": "unreadable", "j_lateral": "rejected", "k_corrupt": "unreadable",
        "l_blank": "rejected", "m_tiny": "rejected"}
REASON = {"g_compressed": "compressed as JPEG-LS", "h_multiframe": "multi-frame DICOM (2 frames)",
          "i_no_pixels": "without pixel data", "j_lateral": "not frontal: view LL",
          "k_corrupt": "unreadable image", "l_blank": "near-constant", "m_tiny": "too small"}


def test_folder_of_mixed_files_via_the_cli(inputs, bdir, predictor, tmp_path, capsys):
    folder, a = inputs
    before = sorted(p.name for p in folder.iterdir())
    out = tmp_path / "pred"
    assert cli.main(["predict", str(folder), "--bundle", str(bdir), "--out", str(out)]) == 1
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing written next to the inputs
    df = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(df) == len(lines) == len(WANT)
    stems = df["input"].map(lambda s: Path(s).stem)
    assert dict(zip(stems, df["status"])) == WANT
    for s, r in zip(stems, df.itertuples()):
        if s in REASON:
            assert REASON[s] in r.reason and r.probability == "" and r.mask_png == ""
    ok = df[df["status"] == "ok"]
    ref = predictor.predict(a)["probability"]
    # the same film as 8-bit PNG, JPEG (lossy), 16-bit PNG and DICOM (16-bit with rescale,
    # MONOCHROME1, windowed): the lossless ones give the probability of the film itself
    lossless = ok[~ok["input"].str.endswith(".jpg")]
    np.testing.assert_allclose(lossless["probability"].astype(float), ref, atol=1e-5)
    for r in ok.itertuples():
        assert (out / r.mask_png).is_file() and (out / r.heatmap_png).is_file()
        assert r.decision in ("covid", "normal") and 0 <= float(r.probability) <= 1
        assert len(r.fold_probs.split(";")) == 2
    mono1 = [x for x in lines if x["input"].endswith("e_mono1.dcm")][0]
    assert "MONOCHROME1 inverted" in mono1["notes"] and isinstance(mono1["fold_probs"], list)
    assert "13 input(s)" in capsys.readouterr().out
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["status_counts"]["ok"] == len(ok)


def test_outputs_are_never_overwritten_or_put_among_inputs(inputs, bdir, tmp_path):
    folder, _ = inputs
    out = tmp_path / "o"
    out.mkdir()
    (out / "predictions.csv").write_text("earlier results\n")
    f = str(folder / "a_png8.png")
    assert cli.main(["predict", f, "--bundle", str(bdir), "--out", str(out)]) == 2
    assert (out / "predictions.csv").read_text() == "earlier results\n"
    with pytest.raises(ValueError, match="inside the input folder"):
        predict.prepare_out(folder / "results", [folder])
    with pytest.raises(ValueError, match="next to the inputs"):
        predict.prepare_out(folder, [Path(f)])
    assert cli.main(["predict", f, "--bundle", str(bdir), "--out", str(tmp_path / "new")]) == 0


def test_failed_mask_gives_no_probability(bdir, inputs):
    _, a = inputs
    pred = predict.Predictor.from_bundle(bdir, heatmaps=False)
    pred.area_threshold = 10 ** 9  # no mask can pass
    r = pred.predict(a)
    assert r["status"] == "no_lung_mask" and r["probability"] is None and r["decision"] is None
    assert "area check" in r["reason"]


def test_out_of_distribution_flags(predictor, inputs):
    _, a = inputs
    r = predictor.predict(255 - a)  # a negative film: far outside the training grey levels
    assert r["status"] in ("ok", "no_lung_mask")
    assert any(f.startswith("outside_training_range:") for f in r["flags"])
    ranges = {"features": {"mean": {"lo": 10.0, "hi": 20.0}, "sd": {"lo": 1.0, "hi": 2.0}}}
    assert ood.range_flags({"mean": 25.0, "sd": 1.5}, ranges) == ["outside_training_range:mean"]
    assert ood.range_flags({"mean": float("nan"), "sd": 0.5}, ranges) == ["outside_training_range:sd"]
    feats = pd.DataFrame({k: np.arange(1000.0) for k in ood.FEATURES})
    tr = ood.training_ranges(feats)
    assert tr["features"]["mean"]["lo"] == pytest.approx(4.995) and tr["share_flagged"] == pytest.approx(0.01)
