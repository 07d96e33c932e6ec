"""The one linear reader of the evidence layer: an L2 logistic regression fitted on features
(audit statistics, thumbnail pixels) and asked for P(COVID).

Both the low-level shortcut audits (:mod:`helpers.evidence.audits`) and the thumbnail floors
(:mod:`helpers.evidence.floors`) fit it per fold. A fitting part that holds one class cannot train a
classifier: it predicts that class's frequency (a constant, AUC 0.5) instead of raising.
"""
from __future__ import annotations

import numpy as np
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

__all__ = ["logistic", "fit_predict"]


def logistic(C: float, seed: int, *, impute: bool = False, scale: bool = True,
             max_iter: int = 2000) -> Pipeline:
    """[median imputation] -> [standardisation] -> L2 logistic regression (lbfgs)."""
    steps = []
    if impute:
        steps.append(("impute", SimpleImputer(strategy="median", keep_empty_features=True)))
    if scale:
        steps.append(("scale", StandardScaler()))
    steps.append(("logreg", LogisticRegression(C=C, solver="lbfgs", max_iter=max_iter,
                                               random_state=seed)))
    return Pipeline(steps)


def fit_predict(X_fit: np.ndarray, y_fit: np.ndarray, X_pred: np.ndarray, C: float, seed: int,
                **model) -> np.ndarray:
    """P(y = 1) for ``X_pred``, float64 (N,), from :func:`logistic` (``model``: its keyword
    arguments) fitted on ``(X_fit, y_fit)``; the class frequency where ``y_fit`` holds one class
    (0.5 where it is empty)."""
    if len(np.unique(y_fit)) < 2:
        return np.full(len(X_pred), float(np.mean(y_fit)) if len(y_fit) else 0.5)
    fitted = logistic(C, seed, **model).fit(X_fit, y_fit)
    return fitted.predict_proba(X_pred)[:, 1].astype(np.float64)
