import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from synthetic.mixing import InvertibleMLP, conditioned_matrix


@settings(max_examples=25, deadline=None)
@given(dim=st.integers(1, 12), layers=st.integers(1, 4), seed=st.integers(0, 10_000))
def test_inverse_undoes_forward(dim, layers, seed):
    g = InvertibleMLP(dim, layers, generator=torch.Generator().manual_seed(seed))
    x = torch.randn(64, dim, dtype=torch.float64)
    assert torch.allclose(g.inverse(g(x)), x, atol=1e-9)


@settings(max_examples=20, deadline=None)
@given(dim=st.integers(2, 10), seed=st.integers(0, 10_000))
def test_conditioned_matrix_respects_bound(dim, seed):
    w = conditioned_matrix(dim, torch.Generator().manual_seed(seed), max_cond=25.0)
    assert torch.linalg.cond(w) <= 25.0
    assert torch.allclose(w.norm(dim=0), torch.ones(dim, dtype=w.dtype))


def test_same_seed_same_generator_other_seed_other():
    a = InvertibleMLP(6, generator=torch.Generator().manual_seed(3))
    b = InvertibleMLP(6, generator=torch.Generator().manual_seed(3))
    c = InvertibleMLP(6, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a.weights, b.weights)
    assert not torch.equal(a.weights, c.weights)


def test_rank_deficient_generator_collapses_directions():
    g = InvertibleMLP(5, rank=3, generator=torch.Generator().manual_seed(0))
    assert torch.linalg.matrix_rank(g.weights[0]).item() == 3
    x = torch.randn(200, 5, dtype=torch.float64)
    # outputs of the first layer live in a 3-dimensional subspace
    assert torch.linalg.matrix_rank(x @ g.weights[0].T).item() == 3


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        InvertibleMLP(0)
    with pytest.raises(ValueError):
        InvertibleMLP(3, slope=0.0)
