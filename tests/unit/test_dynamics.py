"""Training dynamics from stored files: plateau epochs of a history, the pooled-vs-fold AUC gap."""
import numpy as np
import pandas as pd
import pytest

from helpers.evidence import dynamics


def _history(curves: dict) -> pd.DataFrame:
    rows = []
    for (model, fold), losses in curves.items():
        for e, v in enumerate(losses, start=1):
            rows.append({"model": model, "fold": fold, "epoch": e, "val_loss": v, "val_auc": 0.5 + 0.05 * e})
    return pd.DataFrame(rows)


def test_plateau_epoch_known_answers():
    h = _history({
        ("m", 0): [1.0, 0.8, 0.6, 0.5, 0.5, 0.5, 0.5, 0.5],    # flat from epoch 4
        ("m", 1): [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3],    # still falling at the end
        ("m", 2): [0.7, 0.6, 0.595, 0.594, 0.6, 0.61, 0.6, 0.6],  # < 2 % better after epoch 2
    })
    t = dynamics.plateau_epochs(h, smooth=1, window=2, tol=0.02).set_index("fold")
    assert t.loc[0, "plateau_epoch"] == 4 and t.loc[0, "reached"]
    assert np.isnan(t.loc[1, "plateau_epoch"]) and not t.loc[1, "reached"]
    assert t.loc[2, "plateau_epoch"] == 2
    assert t.loc[1, "best_epoch"] == 8 and t.loc[1, "last_val_loss"] == pytest.approx(0.3)
    assert t.loc[0, "last_val_auc"] == pytest.approx(0.9)
    assert set(t["epochs"]) == {8}


def test_plateau_smoothing_ignores_a_staircase():
    # falls in steps: every other epoch improves by only 1 %, which unsmoothed reads as a plateau
    h = _history({("m", 0): [1.0, 0.99, 0.8, 0.79, 0.6, 0.59, 0.4, 0.39, 0.38, 0.38]})
    raw = dynamics.plateau_epochs(h, smooth=1, window=1, tol=0.02)
    sm = dynamics.plateau_epochs(h, smooth=3, window=1, tol=0.02)
    assert raw["plateau_epoch"].iloc[0] == 1
    assert sm["plateau_epoch"].iloc[0] == 8   # 3-epoch mean 0.390 -> 0.383: under 2 %


def test_settled_judges_the_end_of_the_run():
    # a constant-rate run whose validation AUC jumps in its last epochs is not settled, even
    # though its loss showed an early plateau; a decayed run whose last three AUCs agree is
    h = pd.DataFrame({"model": "m", "fold": [0] * 8 + [1] * 8, "epoch": list(range(1, 9)) * 2,
                      "val_loss": [0.66, 0.53, 0.46, 0.59, 0.42, 0.50, 0.45, 2.01,
                                   0.66, 0.53, 0.48, 0.46, 0.40, 0.39, 0.39, 0.39],
                      "val_auc": [0.82, 0.87, 0.90, 0.85, 0.88, 0.88, 0.92, 0.69,
                                  0.82, 0.87, 0.88, 0.89, 0.90, 0.905, 0.91, 0.90]})
    t = dynamics.plateau_epochs(h, final=3, auc_tol=0.03).set_index("fold")
    assert t.loc[0, "last_auc_range"] == pytest.approx(0.23) and not t.loc[0, "settled"]
    assert t.loc[1, "last_auc_range"] == pytest.approx(0.01) and t.loc[1, "settled"]
    short = dynamics.plateau_epochs(h[h["epoch"] <= 2], final=3)
    assert short["last_auc_range"].isna().all() and not short["settled"].any()


def test_plateau_needs_columns():
    with pytest.raises(KeyError, match="val_loss"):
        dynamics.plateau_epochs(pd.DataFrame({"epoch": [1]}))


def test_auc_gap_table_known_answer():
    # two folds, each perfectly ranked, on different scales: fold AUCs 1, pooled 12/16 = 0.75
    preds = pd.DataFrame({
        "fold": [0] * 4 + [1] * 4, "set": "oof", "model": "m",
        "y": [0, 0, 1, 1] * 2, "prob": [0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9],
        "threshold": [0.25] * 4 + [0.65] * 4,
    })
    ext = preds.assign(set="external", prob=0.5)  # ignored: not out-of-fold
    t = dynamics.auc_gap_table(pd.concat([preds, ext]))
    folds = t[t["kind"] == "fold"]
    assert list(folds["auc"]) == [1.0, 1.0] and list(folds["threshold"]) == [0.25, 0.65]
    mean = t[t["fold"].astype(str) == "mean"].iloc[0]
    pooled = t[t["fold"].astype(str) == "pooled"].iloc[0]
    assert mean["auc"] == 1.0 and pooled["auc"] == pytest.approx(0.75)
    assert pooled["auc_gap"] == pytest.approx(0.25) and mean["threshold_range"] == pytest.approx(0.4)
    assert mean["threshold"] == pytest.approx(0.45) and pooled["n"] == 8
    assert folds["auc_gap"].isna().all()


def test_auc_gap_table_one_class_fold_and_several_models():
    preds = pd.DataFrame({
        "fold": [0, 0, 0, 1, 1, 1] * 2, "set": "oof", "model": ["a"] * 6 + ["b"] * 6,
        "y": [0, 1, 1, 1, 1, 1] * 2, "prob": [0.1, 0.9, 0.8, 0.7, 0.6, 0.5] * 2, "threshold": 0.5,
    })
    t = dynamics.auc_gap_table(preds)
    assert sorted(t["model"].unique()) == ["a", "b"]
    a = t[t["model"] == "a"].set_index(t[t["model"] == "a"]["fold"].astype(str))
    assert a.loc["0", "auc"] == 1.0 and np.isnan(a.loc["1", "auc"])
    assert a.loc["mean", "auc"] == 1.0   # the one-class fold is left out of the mean
    assert a.loc["mean", "threshold_range"] == 0.0


def _loss_history(model: str, losses_per_fold: list[list[float]]) -> pd.DataFrame:
    return pd.DataFrame([dict(model=model, fold=k, epoch=e + 1, train_loss=v)
                         for k, losses in enumerate(losses_per_fold) for e, v in enumerate(losses)])


def test_a_model_whose_training_loss_never_falls_did_not_learn():
    from helpers.evidence.dynamics import constant_loss, learning

    ln2 = float(np.log(2))
    assert constant_loss(0.5) == pytest.approx(ln2) and constant_loss(0.2) < ln2
    flat = [[0.70, 0.69, 0.695, 0.69, 0.688, 0.691]] * 3             # cpu-film's curve: near ln 2
    falls = [[0.70, 0.60, 0.45, 0.30, 0.20, 0.15]] * 3
    late_fall = [[0.70, 0.69, 0.69, 0.69, 0.69, 0.50]]                # falls before the end: learned
    early_only = [[0.70, 0.40, 0.69, 0.69, 0.69, 0.69]]               # fell, then went back: did not
    h = pd.concat([_loss_history("flat", flat), _loss_history("falls", falls),
                   _loss_history("late", late_fall), _loss_history("early", early_only)])
    t = learning(h, 0.5).set_index("model")
    assert not t.loc["flat", "learned"] and t.loc["flat", "folds_not_learned"] == 3
    assert t.loc["falls", "learned"] and t.loc["falls", "folds_not_learned"] == 0
    assert t.loc["late", "learned"] and not t.loc["early", "learned"]
    # against the right floor: at 20 % COVID a constant predictor already reaches 0.50
    imbalanced = _loss_history("m", [[0.52, 0.51, 0.505, 0.50]])
    assert not learning(imbalanced, {"m": 0.2}).set_index("model").loc["m", "learned"]
    assert learning(imbalanced, 0.5).set_index("model").loc["m", "learned"]
    # one of three folds failing does not flag the model; two of three do
    mixed = _loss_history("m", [falls[0], flat[0], falls[0]])
    assert learning(mixed, 0.5).iloc[0]["learned"]
    mixed = _loss_history("m", [flat[0], flat[0], falls[0]])
    assert not learning(mixed, 0.5).iloc[0]["learned"]
