"""The paper profile's code path, end to end: notebooks 01 -> 06 with ``PROFILE="paper"`` and
overrides that shrink only the data and the epochs (a handful of phantoms, 2 folds, 1-2 epochs).

Everything else is the paper's: the Table 4 UNet at full width on 512 px masks, ``hrnet_w18`` at
512 px with Table 3 augmentation and the learning-rate steps of section 4.3, the three Table 7
baselines at 512 px, the audit networks, the 50,000 px area threshold. The run is not science;
it proves that the full-size code path runs (the paper profile is otherwise only run on a GPU).

It is part of every ``./run_tests.sh`` (and so of CI); alone:
``./run_tests.sh tests/notebooks/test_paper_path.py``.
"""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.paper
ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# data and epochs only; the proposed model trains 2 epochs so that the learning-rate step (scaled
# from 30/60/90 of 100 epochs to epoch 1 of 2) acts
SHRINK = {"data": "synthetic", "n_patients": 4, "images_per_patient": [1, 1], "n_seg_pairs": 6,
          "phantom_size": 128, "seg_folds": 2, "n_folds": 2, "unet_epochs": 1, "cls_epochs": 2,
          "baseline_epochs": 1, "audit_epochs": 1, "n_permutations": 20, "gradcam_per_class": 1}


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory):
    from helpers.run import notebooks

    out = tmp_path_factory.mktemp("paper")
    (out / "notebooks").mkdir()
    for nb in NOTEBOOKS:
        notebooks.execute(nb, out / "notebooks" / nb.name,
                         {"PROFILE": "paper", "OUT_DIR": str(out), "OVERRIDES": SHRINK})
    return out


def test_paper_sizes_and_networks_ran(paper_run):
    from helpers import config

    P = config.make_profile("paper")
    assert (P.seg_size, P.cls_size, P.unet_base_channels, P.hrnet) == (512, 512, 32, "hrnet_w18")
    assert P.cls_augment and P.augment and P.lr_schedule == "steps"
    seg = pd.read_csv(paper_run / "curation/seg_index.csv")
    assert len(seg) == SHRINK["n_seg_pairs"]
    assert np.load(paper_run / "curation/seg_images.npy", mmap_mode="r").shape[1:] == (512, 512)
    assert np.load(paper_run / "refine/segmented.npy", mmap_mode="r").shape[1:] == (512, 512)
    unet = pd.read_csv(paper_run / "unet/dice.csv")
    assert len(unet) == len(seg) and unet["dice"].between(0, 1).all()
    models = set(pd.read_csv(paper_run / "baselines/all_preds.csv")["model"])
    assert {"hrnet", "hrnet_unsegmented", "resnet152", "densenet121", "efficientnet_b4"} <= models
    audits = pd.read_csv(paper_run / "audits/audit_table.csv")
    assert {"source", "lungs_blacked_out", "mask_only"} <= set(audits["audit"])


def test_paper_learning_rate_steps_acted(paper_run):
    h = pd.read_csv(paper_run / "hrnet/folds/history.csv")
    for _, fold in h.groupby("fold"):
        lr = fold.sort_values("epoch")["lr"].to_numpy()
        assert len(lr) == 2 and lr[0] == pytest.approx(0.01) and lr[1] == pytest.approx(0.001)


def test_paper_figures_and_summary_written(paper_run):
    idx = pd.read_csv(paper_run / "figures/index.csv")
    assert {"table6_hrnet_folds.png", "table7_models.png", "fig09_12_gradcam.png"} <= set(idx["file"])
    for f in idx["file"]:
        assert (paper_run / "figures" / f).read_bytes()[:4] == b"\x89PNG"
    m = json.loads((paper_run / "hrnet/run_manifest.json").read_text())
    assert m["profile"] == "paper"
    summary = (paper_run / "figures/SUMMARY.md").read_text()
    assert '"cls_epochs": 2' in summary and '"n_folds": 2' in summary  # says what was shrunk
