"""Identifiability metrics: how much of a ground-truth latent a learned representation holds.

- R²(z | ẑ): regress z on ẑ on a train split, score 1 − SSE/SST on held-out samples (linear or
  kernel-ridge with a small cross-validated grid), averaged over z's dimensions.
- MCC: mean |corr| over the one-to-one matching of learned to true dimensions that maximises it
  (Hungarian algorithm), with Pearson or Spearman correlation.
- block × block R² matrix: R²(z_k | ẑ_G) for every true block k and learned dimension group G.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.stats import rankdata
from sklearn.kernel_ridge import KernelRidge
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

KRR_GRID = {
    "kernelridge__alpha": [1.0, 0.1, 0.01, 0.001],
    "kernelridge__gamma": list(np.logspace(-2, 2, 4)),
}


def _split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(n * test_fraction)))
    return order[n_test:], order[:n_test]


def r2_scores(
    features: np.ndarray,
    targets: Mapping[str, np.ndarray],
    kind: str = "nonlinear",
    test_fraction: float = 0.5,
    seed: int = 0,
) -> dict[str, float]:
    """Held-out R² of each named target ([n] or [n, k]) from `features` [n, p], in ONE fit.

    kind="linear": least squares; kind="nonlinear": RBF kernel ridge on standardised features,
    α and γ by 3-fold grid search on the train split (one choice for all targets). Targets are
    standardised on the train split; each target's R² = mean over its dims of 1 − SSE/SST on the
    test split, so a constant prediction scores ≈ 0 and R² can be negative.
    """
    x = np.asarray(features, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    cols = [np.asarray(t, dtype=np.float64).reshape(len(x), -1) for t in targets.values()]
    y = np.concatenate(cols, axis=1)
    train, test = _split(len(x), test_fraction, seed)
    if kind == "linear":
        model = make_pipeline(StandardScaler(), LinearRegression())
    elif kind == "nonlinear":
        model = GridSearchCV(
            make_pipeline(StandardScaler(), KernelRidge(kernel="rbf")), KRR_GRID, cv=3
        )
    else:
        raise ValueError(f"kind must be 'linear' or 'nonlinear', got {kind!r}")
    y = (y - y[train].mean(0)) / (y[train].std(0) + 1e-12)
    model.fit(x[train], y[train])
    per_dim = r2_score(
        y[test], model.predict(x[test]).reshape(len(test), -1), multioutput="raw_values"
    )
    bounds = np.cumsum([0] + [c.shape[1] for c in cols])
    return {
        name: float(per_dim[a:b].mean())
        for name, a, b in zip(targets, bounds[:-1], bounds[1:], strict=True)
    }


def r2(
    features: np.ndarray,
    target: np.ndarray,
    kind: str = "nonlinear",
    test_fraction: float = 0.5,
    seed: int = 0,
) -> float:
    """Held-out R² of one target from `features` (see `r2_scores`)."""
    return r2_scores(features, {"target": target}, kind, test_fraction, seed)["target"]


def correlation_matrix(a: np.ndarray, b: np.ndarray, method: str = "pearson") -> np.ndarray:
    """|corr(a_i, b_j)| for columns of a [n, p] and b [n, q], Pearson or Spearman."""
    if method == "spearman":
        a, b = rankdata(a, axis=0), rankdata(b, axis=0)
    elif method != "pearson":
        raise ValueError(f"method must be 'pearson' or 'spearman', got {method!r}")
    a = (a - a.mean(0)) / (a.std(0) + 1e-12)
    b = (b - b.mean(0)) / (b.std(0) + 1e-12)
    return np.abs(a.T @ b) / len(a)


def mcc(true: np.ndarray, learned: np.ndarray, method: str = "pearson") -> float:
    """Mean correlation coefficient after the best one-to-one matching (Hungarian).

    true [n, k], learned [n, p], p ≥ k: each true dimension is matched to a distinct learned one.
    With p < k some true dimensions would go unmatched and the mean would cover only the best p,
    so that case is refused.
    """
    true, learned = np.asarray(true, float), np.asarray(learned, float)
    true, learned = true.reshape(len(true), -1), learned.reshape(len(learned), -1)
    if learned.shape[1] < true.shape[1]:
        raise ValueError(
            f"mcc needs at least as many learned dimensions as true ones: {learned.shape[1]} "
            f"learned < {true.shape[1]} true (a narrower representation cannot match them all)"
        )
    corr = correlation_matrix(true, learned, method)
    rows, cols = linear_sum_assignment(corr, maximize=True)
    return float(corr[rows, cols].mean())


def block_r2_matrix(
    targets: Mapping[str, np.ndarray],
    features: Mapping[str, np.ndarray],
    kind: str = "nonlinear",
    seed: int = 0,
) -> np.ndarray:
    """R[k, g] = R²(targets[k] | features[g]) for every target block k and feature group g."""
    columns = [r2_scores(f, targets, kind, seed=seed) for f in features.values()]
    return np.array([[col[k] for col in columns] for k in targets])


def reverse_r2(true: np.ndarray, learned: np.ndarray, kind: str = "nonlinear") -> float:
    """R²(ẑ | z): how much of the learned representation the truth explains (≈ 0 flags collapse
    onto noise; a representation that ignores z cannot be predicted from it)."""
    return r2(true, learned, kind)
