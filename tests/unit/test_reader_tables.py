"""What a reader sees: Table 6 and Table 7 frames, fold numbering, progress lines."""
from types import SimpleNamespace

import numpy as np
import pandas as pd

from helpers.evidence import metrics
from helpers.report import tables
from helpers.run import progress


def _preds(seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for k, shift in enumerate((0.0, 0.4, -0.3)):  # fold models on different scales
        y = rng.integers(0, 2, 40)
        p = np.clip(0.5 + shift + (y - 0.5) * 0.3 + rng.normal(0, 0.1, 40), 0, 1)
        rows.append(pd.DataFrame({"image_id": [f"{k}-{i}" for i in range(40)],
                                  "patient_id": [f"{k}-{i}" for i in range(40)],
                                  "fold": k, "set": "oof", "y": y, "prob": p, "threshold": 0.5 + shift,
                                  "pred": (p >= 0.5 + shift).astype(int), "model": "hrnet"}))
    return pd.concat(rows, ignore_index=True)


CFG = SimpleNamespace(profile=SimpleNamespace(baselines=("resnet152", "densenet121", "efficientnet_b4"),
                                              data="real", name="cpu"), data_dir="x", out_dir=None)


def test_table6_numbers_folds_from_one_and_shows_thresholds():
    ft = metrics.fold_table(_preds())
    t = tables.table6_frame(CFG, ft)
    assert t["Fold"].tolist() == ["1", "2", "3", "Pooled", "Average"]
    assert t["Threshold"].tolist()[:3] == ["0.50", "0.90", "0.20"]
    assert list(t.columns[:5]) == ["Fold", "Images (COVID / non-COVID)", "Accuracy %", "Sensitivity %",
                                   "Specificity %"]


def test_pooled_vs_mean_note_explains_a_pooled_auc_below_every_fold():
    ft = metrics.fold_table(_preds())
    folds = ft[~ft["fold"].astype(str).isin(["pooled", "mean"])]
    pooled = float(ft[ft["fold"].astype(str) == "pooled"]["auc"].iloc[0])
    assert pooled < folds["auc"].min()  # the scales differ by fold
    note = tables.pooled_vs_mean_note(ft)
    assert f"{pooled:.3f}" in note and "lower than every fold's" in note and "0.20-0.90" in note


def test_table7_puts_hrnet_first_with_readable_names_and_the_papers_values():
    allp = pd.concat([_preds().assign(model=m) for m in
                      ("resnet152", "thumbnail_logreg_segmented", "hrnet", "hrnet_unsegmented")])
    t7 = metrics.summarise_models(allp, n_boot=50)
    t = tables.table7_frame(CFG, t7)
    assert t["Model"].tolist() == ["HRNet, segmented lungs (proposed)", "HRNet, full image", "ResNet152",
                                   "Thumbnail logistic regression, segmented lungs"]
    assert t.loc[0, "Accu. paper"] == "99.26" and t.loc[2, "Sens. paper"] == "95.12"
    assert t.loc[1, "Accu. paper"] == "-" and "ROC-AUC [95% CI]" in t.columns


def test_readable_folds_only_touches_fold_ids():
    df = pd.DataFrame({"fold": [0, 1, "pooled"], "x": [1, 2, 3]})
    assert tables.readable_folds(df)["fold"].tolist() == ["1", "2", "pooled"]
    assert df["fold"].tolist() == [0, 1, "pooled"]  # the input is not changed


def test_progress_line_ends_in_its_final_state(capsys):
    with progress.Line("unet fold 1/3", 3, "epoch") as line:
        for i in range(3):
            line.step(f"val loss {0.5 - i / 10:.2f}")
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("unet fold 1/3: 3/3 epochs in ") and "val loss 0.30" in out[0]
    assert list(progress.iterate(range(4), "decode", unit="batch")) == [0, 1, 2, 3]
    assert "4/4 batches" in capsys.readouterr().out


def test_model_names_say_what_the_inputs_were():
    """Titles follow the profile's input settings, never a fixed "segmented lungs"."""
    from helpers import config, preprocess

    sites = config.make_profile("cpu-sites")
    assert tables.model_label("hrnet", config.make_profile("cpu")) == "HRNet, segmented lungs (proposed)"
    assert "augmentation" not in tables.model_label("thumbnail_logreg_segmented", sites)  # a regression
    label = tables.model_label("hrnet", sites)
    assert label.startswith("HRNet, segmented lungs, square lung crop kept inside the film")
    assert "standardised" in label and "light augmentation" in label
    assert tables.model_label("hrnet_unsegmented", sites).startswith("HRNet, full image, square lung crop")
    assert "Table 3 augmentation" in tables.model_label("hrnet", config.make_profile("paper"))
    assert preprocess.describe_inputs(sites, False, short=True) == \
        "full image, lung crop in film, standardised, light aug."
    assert tables.model_label("resnet152", sites) == "ResNet152"


def test_a_table_figure_keeps_a_title_wider_than_its_table_inside_the_figure():
    """Table 6's title names the inputs (for cpu-sites about 150 characters, wider than its seven
    columns); every text of the figure, title included, must lie inside the figure."""
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from helpers.report import plots

    df = pd.DataFrame({"Fold": ["1", "2"], "AUC": ["0.819", "0.828"]})
    title = ("Table 6 - HRNet on segmented lungs, square lung crop kept inside the film (no padding), "
             "grey levels standardised inside the lungs, light augmentation, per test fold")
    fig = plots.table_figure(df, title, "a caption")
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    box = fig.bbox
    texts = [t for t in fig.texts if t.get_text()]
    assert any("per test fold" in t.get_text() for t in texts)
    for t in texts:
        b = t.get_window_extent(renderer)
        assert b.x0 >= box.x0 - 1 and b.x1 <= box.x1 + 1 and b.y0 >= box.y0 - 1 and b.y1 <= box.y1 + 1, \
            f"text outside the figure: {t.get_text()[:40]!r}"
    plt.close(fig)
