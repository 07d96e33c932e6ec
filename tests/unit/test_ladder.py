"""The de-confounding ladder: cumulative rungs, probe audits on phantoms, the favoured-rung rule."""
import numpy as np
import pandas as pd
import pytest

from helpers import config, inputs, ladder, refine
from helpers.data import phantoms
from helpers.evidence import probes as PR


def test_rungs_match_the_config_and_accumulate():
    assert tuple(ladder.RUNGS) == config.LADDER_RUNGS
    P = config.make_profile("cpu-deconf")
    rungs = ladder.rung_profiles(P)
    assert [r for r, _, _ in rungs] == list(config.LADDER_RUNGS)
    by = {r: p for r, p, _ in rungs}
    assert not (by["paper"].cls_crop_lungs or by["paper"].cls_lung_standardise or by["paper"].cls_augment)
    assert by["crop"].cls_crop_lungs and not by["crop"].cls_lung_standardise
    assert by["standardise"].cls_crop_lungs and by["standardise"].cls_lung_standardise
    assert by["augment"].cls_augment and not by["augment"].cls_film_only
    assert by["film"].cls_film_only and by["film"].cls_augment and by["film"].cls_crop_lungs
    # everything but the ladder's own fields is the profile's: same recipe on every rung
    for r, p, _ in rungs:
        assert p.cls_epochs == P.cls_epochs and p.lr_schedule == P.lr_schedule and p.hrnet == P.hrnet
    # the paper rung of cpu-deconf is notebook 04's model, so it is reused, not retrained
    assert ladder.same_inputs_and_training(by["paper"], P)
    assert not ladder.same_inputs_and_training(by["crop"], P)
    # a film rung without the crop rung still crops (it acts on the crop)
    solo = ladder.rung_profiles(config.make_profile("cpu", {"ladder": ["film"]}))
    assert solo[0][1].cls_crop_lungs and solo[0][1].cls_film_only
    with pytest.raises(ValueError, match="ladder"):
        config.make_profile("cpu", {"ladder": ["blur"]})


@pytest.fixture(scope="module")
def cohort():
    """40 phantoms, half COVID-like, from two sites whose site marker follows the class."""
    rng = np.random.default_rng(3)
    out = [phantoms.render(rng, 64, i % 2 == 0, "ab"[i % 2], severity=0.8) for i in range(40)]
    imgs = np.stack([o[0] for o in out])
    lungs = np.stack([o[1] for o in out]).astype(np.uint8)
    refined = np.stack([refine.refine_mask(m, 2, 1) for m in lungs])
    y = np.array([i % 2 == 0 for i in range(40)], dtype=int)
    index = pd.DataFrame({"image_id": [f"i{i}" for i in range(40)],
                          "patient_id": [f"p{i}" for i in range(40)],
                          "fold": np.arange(40) % 4, "source": ["a" if v else "b" for v in y],
                          "label": np.where(y == 1, "covid", "normal")})
    return imgs, lungs, refined, y, index


def test_probe_audits_on_a_confounded_cohort(cohort):
    imgs, lungs, refined, y, index = cohort
    P = config.make_profile("smoke")
    seg = imgs * (refined > 0)
    k = inputs.Kept(index=index, positions=np.arange(len(index)), y=y, segmented=seg, unsegmented=imgs,
                    refined=refined, lungs=lungs, shapes=None)
    x = inputs.view(k, P)
    probes = PR.probe_audits(x, y, index, seed=0, val_fraction=0.2)
    # without the films' shapes the film-shape probe cannot run; every label probe does
    assert set(probes) == set(PR.PROBES) - {"not_square_from_inputs"}
    for key, p in probes.items():
        assert len(p) == len(index) and p["prob"].between(0, 1).all(), key
    # site "a" draws its nuisance outside the lungs only (phantoms.render): the probe with the
    # lungs blacked out finds it, the source probe on the segmented inputs cannot see it
    from sklearn.metrics import roc_auc_score
    auc = {k: roc_auc_score(p["y"], p["prob"]) for k, p in probes.items()}
    assert auc["lungs_blacked_out"] > 0.8, auc
    assert auc["lowlevel_outside"] > 0.8, auc
    assert abs(auc["source"] - 0.5) < abs(auc["lungs_blacked_out"] - 0.5), auc


def _table(rows):
    cols = ["rung", "auc", "auc_lo", "auc_hi", "shortcut_excess", "heat_share_lungs", "lung_area"]
    t = pd.DataFrame(rows, columns=cols)
    t["heat_excess"] = t["heat_share_lungs"] - t["lung_area"]
    return t


def test_favoured_ignores_internal_auc_and_breaks_ties_by_heat():
    t = _table([["paper", 0.95, 0.9, 0.97, 0.40, 0.30, 0.25],   # best AUC, strongest shortcuts
                ["crop", 0.80, 0.7, 0.85, 0.21, 0.60, 0.55],
                ["standardise", 0.70, 0.6, 0.8, 0.20, 0.75, 0.55]])  # tied on audits, more heat
    assert PR.favoured(t) == "standardise"
    t.loc[2, "shortcut_excess"] = 0.30  # no longer tied: the audits decide
    assert PR.favoured(t) == "crop"
    assert PR.favoured(t.assign(shortcut_excess=np.nan)) == ""


def test_rung_row_and_within_source():
    preds = pd.DataFrame({"set": "oof", "y": [0, 1, 0, 1, 0, 1], "prob": [.1, .9, .2, .8, .6, .4],
                          "patient_id": list("abcdef"), "source": ["s1"] * 4 + ["s2"] * 2})
    probe = pd.DataFrame({"y": [0, 1, 0, 1], "prob": [0.5, 0.5, 0.5, 0.5]})
    share = pd.DataFrame({"share_lung": [0.6, 0.8], "area_lung": [0.5, 0.5]})
    row = PR.rung_row("paper", "text", preds, {k: probe for k in PR.PROBES}, share, 50, 0)
    assert row["shortcut_excess"] == pytest.approx(0.0)
    assert row["heat_share_lungs"] == pytest.approx(0.7) and row["heat_excess"] == pytest.approx(0.2)
    assert row["within_source"] == "s1 1.00 (n=4); s2 0.00 (n=2)"
    assert row["auc"] == pytest.approx(8 / 9)


def test_favoured_profile_trains_the_film_rung():
    # cpu-film is the film rung of cpu-deconf as a main model: same classifier settings, except
    # the light augmentation that lets it learn (Table 3 kept its loss at the class prior)
    from dataclasses import replace

    rungs = {r: p for r, p, _ in ladder.rung_profiles(config.make_profile("cpu-deconf"))}
    film = config.make_profile("cpu-film")
    assert film.cls_augment_mode == "light" and rungs["film"].cls_augment_mode == "table3"
    assert not ladder.same_inputs_and_training(rungs["film"], film)
    assert ladder.same_inputs_and_training(rungs["film"], replace(film, cls_augment_mode="table3"))
    for stage in ("curation", "unet", "refine"):
        assert config.stage_settings(film, stage) == config.stage_settings(config.make_profile("cpu"), stage)
