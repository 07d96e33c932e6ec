"""The training loops on tiny generated data: shapes, contracts, resuming, determinism."""
import numpy as np
import pandas as pd
import pytest

from helpers import config, explain, segment, train


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(0)
    n, s = 12, 32
    masks = np.zeros((n, s, s), np.uint8)
    imgs = rng.integers(0, 60, (n, s, s)).astype(np.uint8)
    for i in range(n):
        r = 6 + i % 4
        masks[i, 16 - r:16 + r, 8:8 + r] = 1
        imgs[i][masks[i] > 0] += 120
    index = pd.DataFrame({"image_id": [f"im{i}" for i in range(n)], "patient_id": [f"p{i}" for i in range(n)],
                          "source": "toy", "fold": np.arange(n) % 2, "label": ["covid", "normal"] * (n // 2)})
    return imgs, masks, index


def _profile(**kw):
    base = dict(seg_size=32, cls_size=32, unet_epochs=2, unet_base_channels=4, unet_batch=4,
                cls_epochs=2, cls_batch=4, seg_folds=2, n_folds=2, head_hidden=8, bf16=False)
    base.update(kw)
    return config.make_profile("smoke", base)


def test_unet_cross_validate_writes_and_resumes(tiny, tmp_path):
    imgs, masks, index = tiny
    p = _profile()
    res = segment.cross_validate(p, imgs, masks, index, tmp_path, seed=0)
    assert set(res["history"].columns) >= {"fold", "epoch", "train_loss", "val_loss", "val_dice", "best"}
    assert len(res["dice"]) == len(index) and res["dice"]["dice"].between(0, 1).all()
    assert sorted(f.name for f in tmp_path.glob("fold*.pt")) == ["fold0.pt", "fold1.pt"]
    mtime = (tmp_path / "fold0.pt").stat().st_mtime_ns
    again = segment.cross_validate(p, imgs, masks, index, tmp_path, seed=0)
    assert (tmp_path / "fold0.pt").stat().st_mtime_ns == mtime  # reused, not retrained
    pd.testing.assert_frame_equal(again["dice"], res["dice"])
    prob = segment.predict(p, segment.load_fold_states(tmp_path), imgs)
    assert prob.shape == imgs.shape and prob.dtype == np.float32 and 0 <= prob.min() <= prob.max() <= 1
    tab = segment.dice_table(res["dice"])
    assert set(tab["group"]) == {"fold", "source", "all"}


def test_unet_training_is_deterministic(tiny):
    imgs, masks, index = tiny
    p = _profile()
    tr, va = np.arange(0, 8), np.arange(8, 12)
    _, h1 = segment.train_fold(p, imgs, masks, tr, va, seed=3)
    _, h2 = segment.train_fold(p, imgs, masks, tr, va, seed=3)
    pd.testing.assert_frame_equal(h1, h2)


def test_classifier_cross_validate_contract(tiny, tmp_path):
    imgs, _, index = tiny
    y = (index["label"] == "covid").astype(int).to_numpy()
    p = _profile()
    ext = {"external": {"images": imgs[:3], "y": y[:3], "index": index.iloc[:3]}}
    hook_calls = []
    preds = train.cross_validate(p, "resnet18", "r18", imgs, y, index, tmp_path, seed=0, extra=ext,
                                 after_fold=lambda k, m, t: hook_calls.append((k, len(t))) or {"rows": t})
    oof = preds[preds["set"] == "oof"]
    assert sorted(oof["image_id"]) == sorted(index["image_id"])  # every image predicted once
    assert (preds["set"] == "external").sum() == 3 * 2  # each fold model scores the external set
    assert oof["prob"].between(0, 1).all() and set(oof["pred"]) <= {0, 1}
    assert (oof.groupby("fold")["threshold"].nunique() == 1).all()
    assert hook_calls == [(0, 6), (1, 6)]
    assert (tmp_path / "r18" / "fold1_extra.npz").is_file() and (tmp_path / "r18" / "preds.csv").is_file()
    hist = pd.read_csv(tmp_path / "r18" / "history.csv")
    assert {"val_loss", "val_auc"} <= set(hist.columns) and len(hist) == 2 * p.cls_epochs
    assert hist["val_auc"].dropna().between(0, 1).all()
    again = train.cross_validate(p, "resnet18", "r18", imgs, y, index, tmp_path, seed=0, extra=ext)
    assert np.allclose(again["prob"].to_numpy(), preds["prob"].to_numpy())
    m = train.load_fold_model(p, "resnet18", tmp_path, "r18", 0)
    assert train.predict_proba(m, imgs[:2], "cpu").shape == (2,)


def test_gradcam_and_heat_share(tiny):
    imgs, masks, _ = tiny
    p = _profile()
    model = train.build(p, "hrnet_w18_small", "cpu")
    heat = explain.gradcam(model, imgs[:2], np.array([1, 0]))
    assert heat.shape == (2, 32, 32) and heat.min() >= 0 and heat.max() <= 1
    h = np.zeros((2, 4, 4))
    h[0, :2] = 1.0
    h[1] = 1.0
    m = np.zeros((2, 4, 4))
    m[:, :1] = 1
    assert np.allclose(explain.heat_share(h, m), [0.5, 0.25])
    assert np.isnan(explain.heat_share(np.zeros((1, 4, 4)), m[:1]))[0]
    assert np.allclose(explain.area_fraction(m), [0.25, 0.25])
    same = explain.map_similarity(h[:1], h[:1])
    assert same[0] == pytest.approx(1.0)


def test_input_standardisation():
    x = train.to_input(np.full((1, 8, 8), 255, np.uint8), "cpu")
    assert tuple(x.shape) == (1, 3, 8, 8) and float(x.max()) == pytest.approx((1 - train.MEAN) / train.STD)


def test_dead_start_is_restarted(tiny, monkeypatch):
    imgs, masks, _ = tiny
    calls = []
    real = segment._train_attempt

    def flaky(profile, images, masks_, tr, va, seed, device, desc):
        calls.append(seed)
        return (None, None) if len(calls) == 1 else real(profile, images, masks_, tr, va, seed, device, desc)

    monkeypatch.setattr(segment, "_train_attempt", flaky)
    state, hist = segment.train_fold(_profile(), imgs, masks, np.arange(8), np.arange(8, 12), seed=5)
    assert calls == [5, 5 + 7919] and (hist["attempt"] == 1).all() and state is not None


def test_dead_start_detector_on_a_frozen_network(tiny, monkeypatch):
    imgs, masks, _ = tiny
    import torch
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self, *a, **k: None)  # weights never change
    p = _profile(unet_epochs=6)
    attempt = segment._train_attempt(p, imgs, masks, np.arange(8), np.arange(8, 12), 0, "cpu", "t")
    assert attempt == (None, None)
