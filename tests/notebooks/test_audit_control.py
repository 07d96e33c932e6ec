"""The audits against a known truth: the same phantom cohort with the site shortcut on and off.

With the shortcut on (site marker outside the lungs tied to the label), a CNN that sees the image
with the lungs blacked out predicts the label well; with it off, it should not. True lung masks
(dilated like the refinement step) stand in for the UNet so the control runs in under a minute.
"""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from helpers import config, refine, train
from helpers.data import decode, phantoms, splits
from helpers.data import manifest as mf
from helpers.evidence import audits


def _blacked_out_auc(tmp_path, strength):
    p = config.make_profile("smoke")
    root = phantoms.generate(tmp_path / f"s{strength}", n_patients=p.n_patients, n_seg_pairs=p.n_seg_pairs,
                             size=p.phantom_size, shortcut_strength=strength, seed=5,
                             finding_contrast=p.finding_contrast)
    df = mf.read_manifest(root)
    cls = df[df.split_role == "classify"].reset_index(drop=True)
    cls["image_id"] = cls["path"]
    cls["fold"] = splits.patient_folds(cls.patient_id, cls.label, p.n_folds, 0)
    y = (cls.label == "covid").astype(int).to_numpy()
    imgs = decode.load_stack([root / f for f in cls.path], p.cls_size)
    masks = decode.load_stack([root / f for f in cls.mask_path], p.cls_size, mask=True)
    masks = np.stack([refine.refine_mask(m, 1, 1) for m in masks])
    preds = train.cross_validate(p, p.audit_model, "blackout", audits.blackout_lungs(imgs, masks), y, cls,
                                 tmp_path / f"cv{strength}", 0, save_weights=False)
    return roc_auc_score(preds.y, preds.prob)


@pytest.mark.slow
def test_lungs_blacked_out_audit_tracks_the_shortcut(tmp_path):
    on = _blacked_out_auc(tmp_path, 0.9)
    off = _blacked_out_auc(tmp_path, 0.0)
    assert on > 0.8, f"shortcut on: AUC {on:.3f}"
    assert off < 0.7, f"shortcut off: AUC {off:.3f}"
    assert on - off > 0.2
