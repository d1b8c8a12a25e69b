import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment
from scipy.stats import spearmanr
from sklearn.kernel_ridge import KernelRidge
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from identifiability.metrics import (
    KRR_GRID,
    block_r2_matrix,
    correlation_matrix,
    mcc,
    r2,
    r2_scores,
    reverse_r2,
)

rng = np.random.default_rng(0)


def test_linear_r2_matches_sklearn_on_the_same_split():
    x = rng.normal(size=(400, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + rng.normal(scale=0.7, size=400)
    order = np.random.default_rng(0).permutation(400)
    test, train = order[:200], order[200:]
    reference = r2_score(y[test], LinearRegression().fit(x[train], y[train]).predict(x[test]))
    assert r2(x, y, "linear") == pytest.approx(reference, abs=1e-9)


@pytest.mark.parametrize("kind", ["linear", "nonlinear"])
def test_identity_gives_one_and_independent_noise_gives_zero(kind):
    z = rng.normal(size=(600, 2))
    assert r2(z, z, kind) > 0.99
    assert abs(r2(rng.normal(size=(600, 4)), z, kind)) < 0.05


def test_nonlinear_r2_sees_through_a_smooth_invertible_map():
    z = rng.normal(size=(800, 2))
    x = np.stack([np.tanh(z[:, 0]) + 0.3 * z[:, 1], z[:, 1] ** 3 + z[:, 1]], 1)
    assert r2(x, z, "nonlinear") > 0.95
    assert r2(x, z, "linear") < r2(x, z, "nonlinear")


@settings(max_examples=15, deadline=None)
@given(k=st.integers(1, 6), extra=st.integers(0, 3), seed=st.integers(0, 1000))
def test_mcc_is_one_for_permuted_elementwise_monotone_maps(k, extra, seed):
    g = np.random.default_rng(seed)
    z = g.normal(size=(500, k))
    learned = np.concatenate([z, g.normal(size=(500, extra))], 1)[:, g.permutation(k + extra)]
    learned = np.sign(g.normal(size=k + extra)) * learned**3  # monotone, with random signs
    assert mcc(z, learned, "spearman") == pytest.approx(1.0, abs=1e-9)
    assert mcc(z, np.tanh(learned), "pearson") > 0.6  # Pearson sees only the linear part


def test_mcc_matches_scipy_hungarian_on_spearman_matrix():
    z, zh = rng.normal(size=(300, 3)), rng.normal(size=(300, 4))
    corr = np.abs(spearmanr(z, zh).statistic[:3, 3:])
    rows, cols = linear_sum_assignment(-corr)
    assert mcc(z, zh, "spearman") == pytest.approx(corr[rows, cols].mean(), abs=1e-9)
    assert np.allclose(correlation_matrix(z, zh, "spearman"), corr)


def test_mcc_of_independent_noise_is_small():
    assert mcc(rng.normal(size=(2000, 3)), rng.normal(size=(2000, 3))) < 0.1


def test_block_matrix_is_diagonal_for_separated_blocks():
    a, b = rng.normal(size=(500, 2)), rng.normal(size=(500, 2))
    matrix = block_r2_matrix(
        {"a": a, "b": b}, {"fa": a * 2 + 1, "fb": np.tanh(b) + b}, kind="nonlinear"
    )
    assert matrix.shape == (2, 2)
    assert matrix[0, 0] > 0.95 and matrix[1, 1] > 0.9
    assert abs(matrix[0, 1]) < 0.05 and abs(matrix[1, 0]) < 0.05


def test_block_matrix_rows_are_targets_and_columns_are_feature_groups():
    """An asymmetric map: dims "ab" carry blocks a and b, dims "a" carry a alone, and no group
    carries c, so R[k, g] = R²(z_k | ẑ_g) is [[1, 1], [0, 1], [0, 0]]; each entry is the
    separate linear fit of that target on that group."""
    g = np.random.default_rng(4)
    a, b, c = g.normal(size=(400, 2)), g.normal(size=400), g.normal(size=(400, 3))
    targets = {"a": a, "b": b, "c": c}
    features = {
        "a": a @ g.normal(size=(2, 2)),
        "ab": np.column_stack([a, b]) @ g.normal(size=(3, 3)),
    }
    matrix = block_r2_matrix(targets, features, kind="linear")
    assert matrix.shape == (3, 2)
    for row, target in enumerate(targets.values()):
        for col, group in enumerate(features.values()):
            assert matrix[row, col] == pytest.approx(r2(group, target, "linear"), abs=1e-9)
    assert matrix[0, 0] > 0.99 and matrix[0, 1] > 0.99 and matrix[1, 1] > 0.99
    assert matrix[1, 0] < 0.05 and (matrix[2] < 0.05).all()


def test_nonlinear_r2_is_a_kernel_ridge_fit_standardised_on_the_train_half_alone():
    """The reference fit by hand: the same split, targets standardised with train-half statistics
    only, the same (α, γ) grid; each target's R² the mean over its dims of the joint fit."""
    g = np.random.default_rng(5)
    x = g.normal(size=(240, 2))
    a = np.column_stack([np.sin(2 * x[:, 0]), x[:, 0] * x[:, 1]]) + 0.3 * g.normal(size=(240, 2))
    b = x[:, 1] ** 2 + 0.3 * g.normal(size=240) + 5.0
    order = np.random.default_rng(0).permutation(240)
    test, train = order[:120], order[120:]
    y = np.column_stack([a, b])
    y = (y - y[train].mean(0)) / y[train].std(0)
    model = GridSearchCV(make_pipeline(StandardScaler(), KernelRidge(kernel="rbf")), KRR_GRID, cv=3)
    per_dim = r2_score(
        y[test], model.fit(x[train], y[train]).predict(x[test]), multioutput="raw_values"
    )
    got = r2_scores(x, {"a": a, "b": b}, "nonlinear")
    assert got["a"] == pytest.approx(per_dim[:2].mean(), abs=1e-9)
    assert got["b"] == pytest.approx(per_dim[2], abs=1e-9)


def test_reverse_r2_flags_a_representation_of_noise():
    z = rng.normal(size=(500, 2))
    assert reverse_r2(z, z @ np.array([[1.0, 2.0], [0.5, -1.0]]), "linear") > 0.99
    assert reverse_r2(z, rng.normal(size=(500, 3)), "linear") < 0.05
    # one of z's two dims kept: z explains all of it, it explains half of z
    assert reverse_r2(z, z[:, :1], "linear") > 0.99
    assert r2(z[:, :1], z, "linear") == pytest.approx(0.5, abs=0.05)


def test_bad_kind_raises():
    with pytest.raises(ValueError):
        r2(np.zeros((10, 1)), np.zeros(10), "cubic")
    with pytest.raises(ValueError):
        mcc(np.zeros((10, 1)), np.zeros((10, 1)), "kendall")


def test_joint_fit_scores_each_target_like_separate_linear_fits():
    x = rng.normal(size=(300, 4))
    a, b = x[:, :2] @ rng.normal(size=(2, 2)), rng.normal(size=300)
    joint = r2_scores(x, {"a": a, "b": b}, "linear")
    assert joint["a"] == pytest.approx(r2(x, a, "linear"), abs=1e-9)
    assert joint["b"] == pytest.approx(r2(x, b, "linear"), abs=1e-9)


def test_unpredictable_targets_in_a_joint_fit_lower_a_predictable_ones_r2():
    """Why experiments fit described and undescribed blocks separately: one (α, γ) serves the
    whole joint fit, and pure-noise targets pull it toward heavy regularisation."""
    g = np.random.default_rng(3)
    z = g.normal(size=(1000, 2))
    v = np.stack([np.sin(2 * z[:, 0]) + z[:, 1], np.cos(z[:, 1]) * z[:, 0], z[:, 1] ** 3], 1)
    alone = r2_scores(v, {"z": z})["z"]
    joint = r2_scores(v, {"z": z, "noise": g.normal(size=(1000, 6))})["z"]
    assert alone > 0.8
    assert joint < alone - 0.01


def test_mcc_refuses_fewer_learned_than_true_dimensions():
    z = np.random.default_rng(0).standard_normal((200, 3))
    assert mcc(z, z[:, [2, 0, 1]]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="2 learned < 3 true"):
        mcc(z, z[:, :2])  # the two kept dims match perfectly: a mean over them would say 1.0
