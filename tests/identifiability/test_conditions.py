"""The theory's conditions: set algebra, support, coverage, invertibility, predictions."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from identifiability.conditions import (
    CAPACITY,
    CAPACITY_FACTOR,
    THEOREM,
    activation_gates,
    atom_formula,
    atoms,
    check_prediction,
    correlation_floor,
    coverage_check,
    decide_prediction,
    described_dims,
    expected_cover_time,
    information_ceiling,
    jacobian_check,
    jacobians,
    mask_distribution,
    near_capacity,
    predict,
    samples_to_cover,
    set_algebra,
    support_check,
    symbolic_invertibility,
    symbolic_region_jacobian,
)
from synthetic.mixing import InvertibleMLP
from synthetic.seeding import stream
from synthetic.worlds import World, WorldConfig

FAST = settings(max_examples=40, deadline=None)
SLOW = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def families(max_blocks: int = 6):
    """Non-empty families of non-empty subsets of range(K), with K."""
    return st.integers(1, max_blocks).flatmap(
        lambda k: st.tuples(
            st.just(k),
            st.lists(
                st.sets(st.integers(0, k - 1), min_size=1).map(lambda s: tuple(sorted(s))),
                min_size=1,
                max_size=6,
            ),
        )
    )


# ---------------------------------------------------------------- set algebra


@FAST
@given(families())
def test_atoms_partition_the_described_blocks(case):
    _, family = case
    found = atoms(family)
    flat = [b for a in found for b in a]
    assert len(flat) == len(set(flat)), "atoms overlap"
    assert set(flat) == set().union(*map(set, family))
    assert all(a for a in found)


@FAST
@given(families())
def test_every_observed_subset_is_a_union_of_atoms(case):
    _, family = case
    found = atoms(family)
    for s in family:
        inside = [a for a in found if set(a) <= set(s)]
        assert all(not set(a) & set(s) for a in found if a not in inside)
        assert set().union(*map(set, inside)) == set(s)


@FAST
@given(families())
def test_atom_formula_rebuilds_each_atom_from_intersections_and_differences(case):
    _, family = case
    for atom in atoms(family):
        inside, outside = atom_formula(atom, family)
        rebuilt = set.intersection(*(set(family[i]) for i in inside))
        rebuilt -= set().union(*(set(family[j]) for j in outside))
        assert rebuilt == set(atom)


@FAST
@given(families(), st.data())
def test_removing_a_pattern_never_makes_the_partition_finer(case, data):
    k, family = case
    drop = data.draw(st.integers(0, len(family) - 1))
    fewer = [s for i, s in enumerate(family) if i != drop]
    if not fewer:
        return
    coarse, fine = set_algebra(fewer, k), set_algebra(family, k)
    assert len(coarse.atoms) <= len(fine.atoms)
    for a in coarse.atoms:  # each remaining atom is a union of the full family's atoms
        parts = [f for f in fine.atoms if set(f) & set(a)]
        assert all(set(f) <= set(a) for f in parts)
    assert set(coarse.dropped) >= set(fine.dropped)
    assert set(coarse.shared) >= set(fine.shared)


def test_set_algebra_of_the_theory_examples():
    overlap = set_algebra([(0, 1), (1, 2)], 4)
    assert overlap.atoms == ((0,), (1,), (2,))
    assert overlap.dropped == (3,) and overlap.shared == (1,)
    together = set_algebra([(0, 1), (0, 1, 2), (2,)], 3)
    assert together.atoms == ((0, 1), (2,))
    assert together.atoms_split((0,)) == ((0, 1),)
    assert together.atoms_within((0, 1, 2)) == ((0, 1), (2,))


# ---------------------------------------------------------------- support and coverage


@pytest.mark.parametrize(
    ("config", "size"),
    [
        (WorldConfig(block_dims=(1,) * 4), 15),
        (WorldConfig(block_dims=(1,) * 4, allow_empty=True), 16),
        (WorldConfig(block_dims=(1,) * 4, always=(2,)), 8),
        (WorldConfig(block_dims=(1,) * 4, include_prob=(0.5, 0.0, 1.0, 0.3)), 4),
        (WorldConfig(block_dims=(1,) * 3, subsets=((0, 1), (1,), (0, 1))), 2),
        (WorldConfig(block_dims=(1,) * 3, subsets=((0,), (1,)), subset_probs=(1.0, 0.0)), 1),
    ],
)
def test_support_counts_patterns_and_probabilities_sum_to_one(config, size):
    dist = mask_distribution(config)
    assert len(dist) == size
    assert all(p > 0 for p in dist.values())
    assert math.isclose(sum(dist.values()), 1.0, abs_tol=1e-9)


@pytest.mark.parametrize(
    "config",
    [
        WorldConfig(block_dims=(1, 2, 1), include_prob=(0.2, 0.5, 0.8)),
        WorldConfig(block_dims=(1, 1, 1), include_prob=(0.5,), selection=1.0, latent_corr=0.3),
        WorldConfig(
            block_dims=(1, 1, 1), subsets=((0,), (0, 1), (2,)), subset_probs=(0.2, 0.3, 0.5)
        ),
        WorldConfig(block_dims=(1, 1, 1), include_prob=(0.3,), always=(1,), allow_empty=True),
    ],
)
def test_mask_distribution_matches_the_sampler(config):
    n = 40_000
    masks = World(config).sample(n, stream(1, "eval")).m.numpy().astype(bool)
    seen, counts = np.unique(masks, axis=0, return_counts=True)
    dist = mask_distribution(config, n_mc=100_000)
    empirical = {
        tuple(np.flatnonzero(row).tolist()): c / n for row, c in zip(seen, counts, strict=True)
    }
    assert set(empirical) <= set(dist)
    for pattern, p in dist.items():
        assert abs(empirical.get(pattern, 0.0) - p) <= 4 * math.sqrt(p * (1 - p) / n) + 2e-3


def test_support_check_flags_a_declared_pattern_of_probability_zero():
    full = WorldConfig(block_dims=(1,) * 3, subsets=((0, 1), (1,)), subset_probs=(0.5, 0.5))
    broken = WorldConfig(block_dims=(1,) * 3, subsets=((0, 1), (1,)), subset_probs=(1.0, 0.0))
    assert support_check(full).holds
    verdict = support_check(broken)
    assert not verdict.holds and verdict.numbers["missing"] == 1
    assert not support_check(WorldConfig(block_dims=(1, 1)), family=[(0,), (1,), ()]).holds


@given(st.lists(st.floats(1e-3, 1.0), min_size=1, max_size=30), st.floats(0.01, 0.5))
@FAST
def test_samples_to_cover_is_minimal_and_below_the_simple_union_bound(weights, delta):
    p = np.asarray(weights) / np.sum(weights)
    n = samples_to_cover(p, delta)
    assert np.sum((1 - p) ** n) <= delta
    assert n == 0 or np.sum((1 - p) ** (n - 1)) > delta
    assert n <= math.ceil(math.log(len(p) / delta) / p.min())


@pytest.mark.parametrize("n_patterns", [1, 2, 7, 20])
def test_expected_cover_time_is_the_coupon_collector_number_for_equal_probabilities(n_patterns):
    harmonic = sum(1 / i for i in range(1, n_patterns + 1))
    assert expected_cover_time([1 / n_patterns] * n_patterns) == pytest.approx(
        n_patterns * harmonic, rel=1e-3
    )


@pytest.mark.parametrize(
    "config",
    [
        WorldConfig(block_dims=(1,) * 3, include_prob=(0.2, 0.5, 0.8)),
        WorldConfig(
            block_dims=(1,) * 3, subsets=((0,), (1, 2), (0, 2)), subset_probs=(0.6, 0.3, 0.1)
        ),
    ],
)
def test_coverage_sample_size_is_met_empirically(config):
    delta, trials = 0.1, 1000
    dist = mask_distribution(config)
    n = samples_to_cover(dist.values(), delta)
    world = World(config)
    masks = world.sample_masks(
        torch.zeros(n * trials, config.latent_dim), torch.Generator().manual_seed(0)
    ).reshape(trials, n, -1)
    misses = sum(not coverage_check(m, dist, delta).holds for m in masks)
    assert misses / trials <= delta + 3 * math.sqrt(delta * (1 - delta) / trials)
    short = coverage_check(masks[0, :1], dist, delta)
    assert not short.holds and short.numbers["n_needed"] == n and short.numbers["seen"] == 1


# ---------------------------------------------------------------- invertibility


def _mlp(dim: int, layers: int, seed: int, rank: int | None = None) -> InvertibleMLP:
    return InvertibleMLP(dim, layers, generator=torch.Generator().manual_seed(seed), rank=rank)


@pytest.mark.parametrize("dim", [2, 5, 10])
def test_jacobian_check_accepts_an_invertible_mlp_and_rejects_a_rank_deficient_one(dim):
    points = torch.randn(64, dim, generator=torch.Generator().manual_seed(0))
    good = jacobian_check(_mlp(dim, 3, 0), points)
    assert good.holds and good.numbers["rank_min"] == dim
    assert 1 <= good.numbers["cond_min"] <= good.numbers["cond_max"] < 1e8
    bad = jacobian_check(_mlp(dim, 3, 0, rank=dim - 1), points)
    assert not bad.holds and bad.numbers["rank_max"] == dim - 1
    assert bad.numbers["cond_min"] > 1e12


def test_jacobians_match_finite_differences():
    mlp, x = _mlp(4, 3, 1), torch.randn(8, 4, dtype=torch.float64)
    jac, eps = jacobians(mlp, x), 1e-6
    for i in range(4):
        step = torch.zeros(4, dtype=torch.float64)
        step[i] = eps
        fd = (mlp(x + step) - mlp(x - step)) / (2 * eps)
        assert torch.allclose(jac[:, :, i], fd, atol=1e-6)


class SkipMLP(InvertibleMLP):
    """The same weights with a skip connection, y = x + g(x): not the chain W_L G … G W_1 whose
    closed-form determinant the symbolic check evaluates."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + super().forward(x)


@pytest.mark.parametrize("layers", [1, 2])
def test_symbolic_check_says_no_for_a_generator_that_is_not_a_chain(layers):
    mlp = _mlp(3, layers, 7)
    skip = SkipMLP(3, layers, generator=torch.Generator().manual_seed(7))
    assert torch.equal(skip.weights, mlp.weights)
    assert symbolic_invertibility(mlp).holds
    verdict = symbolic_invertibility(skip)
    assert verdict.numbers["factorises"] == 0.0 and not verdict.holds
    assert "not a plain LeakyReLU chain" in verdict.reason


@SLOW
@given(st.integers(2, 3), st.integers(1, 3), st.integers(0, 10_000), st.booleans())
def test_symbolic_and_numeric_invertibility_agree(dim, layers, seed, deficient):
    mlp = _mlp(dim, layers, seed, rank=dim - 1 if deficient else None)
    points = torch.randn(32, dim, generator=torch.Generator().manual_seed(seed))
    symbolic, numeric = symbolic_invertibility(mlp), jacobian_check(mlp, points)
    assert symbolic.numbers["factorises"] == 1.0
    assert symbolic.holds == numeric.holds == (not deficient)
    jac, gates = symbolic_region_jacobian(mlp)
    det = jac.det()
    numeric_det = torch.linalg.det(jacobians(mlp, points)).numpy()
    for x_gates, value in zip(activation_gates(mlp, points)[:8], numeric_det[:8], strict=True):
        exact = float(det.subs(dict(zip(gates, x_gates.tolist(), strict=True))))
        assert value == pytest.approx(exact, rel=1e-6, abs=1e-12)


# ---------------------------------------------------------------- information bounds


def test_information_ceiling_is_one_when_invertible_and_counts_the_rank_when_not():
    assert all(v == pytest.approx(1.0) for v in information_ceiling(World(WorldConfig())).values())
    config = WorldConfig(block_dims=(2, 2, 2), img_nuisance_dim=2, img_rank=4)
    ceiling = information_ceiling(World(config))
    dims = (*config.block_dims, config.img_nuisance_dim)
    assert sum(v * d for v, d in zip(ceiling.values(), dims, strict=True)) == pytest.approx(4.0)


def test_information_ceiling_falls_with_noise():
    levels = [information_ceiling(World(WorldConfig(noise=s)))["z0"] for s in (0.0, 0.1, 1.0)]
    assert levels[0] > levels[1] > levels[2] > 0


def test_correlation_floor_is_the_gaussian_r2():
    world = World(WorldConfig(block_dims=(1, 1, 1), latent_corr=0.5))
    assert correlation_floor(world, (0,), ()) == 0.0
    assert correlation_floor(world, (0,), (1,)) == pytest.approx(0.25)
    assert correlation_floor(world, (0,), (1, 2)) == pytest.approx(2 * 0.25 / 1.5)


# ---------------------------------------------------------------- predictions


def configs():
    """Small valid world configs, independent-inclusion or explicit-subset."""

    def build(k, dims, mode, probs, family, always, selection, corr):
        kwargs = {"block_dims": tuple(dims[:k]), "latent_corr": corr, "selection": selection}
        if mode:
            kwargs["subsets"] = tuple(tuple(sorted(s)) for s in family if max(s) < k) or ((0,),)
        else:
            kwargs["include_prob"] = tuple(probs[:k])
        kwargs["always"] = tuple(b for b in always if b < k)
        try:
            return WorldConfig(**kwargs)
        except ValueError:
            return WorldConfig(block_dims=tuple(dims[:k]))

    return st.builds(
        build,
        st.integers(1, 4),
        st.lists(st.integers(1, 2), min_size=4, max_size=4),
        st.booleans(),
        st.lists(st.sampled_from([0.0, 0.3, 0.5, 1.0]), min_size=4, max_size=4),
        st.lists(st.sets(st.integers(0, 3), min_size=1), min_size=1, max_size=4),
        st.sets(st.integers(0, 3), max_size=1),
        st.sampled_from([0.0, 1.0]),
        st.sampled_from([0.0, 0.4]),
    )


def _relabel(config: WorldConfig, perm: list[int]) -> WorldConfig:
    inv = np.argsort(perm)
    probs = config.probs
    return WorldConfig(
        block_dims=tuple(config.block_dims[i] for i in inv),
        include_prob=tuple(probs[i] for i in inv),
        subsets=tuple(tuple(sorted(perm[b] for b in s)) for s in config.subsets),
        subset_probs=config.subset_probs,
        always=tuple(perm[b] for b in config.always),
        latent_corr=config.latent_corr,
        selection=config.selection,
    )


def _canonical(prediction, perm=None):
    mapped = (lambda bs: tuple(sorted(perm[b] for b in bs))) if perm else tuple
    return sorted(
        (
            e.quantity,
            mapped(e.blocks),
            None if e.subset is None else mapped(e.subset),
            e.kind,
            None if math.isnan(e.bound) else round(e.bound, 6),
            e.basis,
        )
        for e in prediction.expectations
    )


@SLOW
@given(configs(), st.data(), st.sampled_from(["smartclip", "clip"]))
def test_relabeling_blocks_permutes_the_prediction_and_nothing_else(config, data, objective):
    perm = data.draw(st.permutations(range(config.n_blocks)))
    before, after = predict(config, objective), predict(_relabel(config, perm), objective)
    assert _canonical(after) == _canonical(before, perm)
    assert {tuple(sorted(perm[b] for b in a)) for a in before.algebra.atoms} == set(
        after.algebra.atoms
    )
    assert {k: v.holds for k, v in before.assumptions.items()} == {
        k: v.holds for k, v in after.assumptions.items()
    }


def test_prediction_for_blocks_always_described_together():
    config = WorldConfig(subsets=((0, 1), (0, 1, 2), (2, 3)), block_dims=(2, 2, 2, 2))
    p = predict(config)
    assert p.guarantee and p.algebra.atoms == ((0, 1), (2,), (3,))
    by_key = {(e.quantity, e.blocks, e.subset): e for e in p.expectations}
    assert by_key["block_r2", (1,), (0,)].kind == "high"  # dims of z0 carry z1: one atom
    assert by_key["block_r2", (2,), (0,)].kind == "low"
    assert by_key["disentangle_in_r2", (1,), (0, 1)].kind == "high"
    split = predict(config, subsets=[(0,)])
    assert {
        e.kind
        for e in split.expectations
        if e.quantity.startswith("disentangle") and e.blocks in ((0,), (1,))
    } == {"none"}


def test_prediction_for_a_never_described_block_and_for_clip():
    config = WorldConfig(block_dims=(2, 2, 2), include_prob=(0.5, 1.0, 0.0))
    smart = {e.blocks: e for e in predict(config).expectations if e.quantity == "preserve_r2"}
    assert smart[(0,)].kind == smart[(1,)].kind == "high" and smart[(2,)].kind == "low"
    clip = {
        e.blocks: e for e in predict(config, "clip").expectations if e.quantity == "preserve_r2"
    }
    assert clip[(1,)].kind == "high" and clip[(0,)].kind == "degraded"
    assert clip[(0,)].basis == "conjecture" and clip[(2,)].kind == "low"
    assert not any(
        e.quantity.startswith("disentangle") for e in predict(config, "clip").expectations
    )


def test_correlated_worlds_raise_the_bound_on_what_is_lost_by_the_correlation_floor():
    """Equicorrelated unit blocks (ρ): R²(z_b | g other blocks) = g ρ² / (1 + (g − 1) ρ). Block 2 is
    never described, so its preserve_r2 bound is low + 2ρ²/(1 + ρ) (given blocks 0 and 1);
    outside the caption subset (0,), block 1's bound is low + ρ²; where the floor alone reaches
    1 − low there is no claim."""
    low = 0.2
    config = WorldConfig(block_dims=(1, 1, 1), include_prob=(0.5, 0.5, 0.0), latent_corr=0.5)
    by_key = {(e.quantity, e.blocks, e.subset): e for e in predict(config, low=low).expectations}
    dropped = by_key["preserve_r2", (2,), None]
    assert (dropped.kind, dropped.bound) == ("low", pytest.approx(low + 2 * 0.25 / 1.5))
    outside = by_key["disentangle_out_r2", (1,), (0,)]
    assert (outside.kind, outside.bound) == ("low", pytest.approx(low + 0.25))
    not_in_atom = by_key["block_r2", (1,), (0,)]
    assert (not_in_atom.kind, not_in_atom.bound) == ("low", pytest.approx(low + 0.25))
    strong = WorldConfig(block_dims=(1, 1, 1), include_prob=(0.5, 0.5, 0.0), latent_corr=0.9)
    vacuous = {(e.quantity, e.blocks): e for e in predict(strong, low=low).expectations}
    assert vacuous["preserve_r2", (2,)].kind == "none"  # 2·0.81/1.9 + 0.2 ≥ 1
    assert "vacuous" in vacuous["preserve_r2", (2,)].reason


@pytest.mark.parametrize(
    ("config", "kwargs", "failed"),
    [
        (WorldConfig(selection=2.0), {}, ("independent_masks",)),
        (WorldConfig(), {"sparsity_weight": 0.0}, ("sparsity",)),
        (WorldConfig(), {"embed_dim": 4}, ("width",)),
        (WorldConfig(noise=0.5), {}, ("noiseless",)),
        (WorldConfig(img_rank=5), {}, ("invertible",)),
        (WorldConfig(), {"n_samples": 10}, ("coverage",)),
    ],
)
def test_a_broken_assumption_voids_the_guarantee_and_bounds_take_over(config, kwargs, failed):
    p = predict(config, **kwargs)
    assert not p.guarantee and p.failed == failed
    assert {e.basis for e in p.expectations} <= {"void", "bound"}
    assert "void" in {e.basis for e in p.expectations}
    if failed in (("noiseless",), ("invertible",)):
        ceiling = information_ceiling(World(config))
        low = [e for e in p.expectations if e.basis == "bound"]
        assert low and all(e.bound == pytest.approx(ceiling[f"z{e.blocks[0]}"] + 0.05) for e in low)
        assert {e.quantity for e in low} == {"preserve_r2", "block_r2"}  # v also reads t
    if failed == ("width",):
        (cap,) = [e for e in p.expectations if len(e.blocks) > 1]
        assert cap.kind == "low" and cap.bound == pytest.approx(4 / 8 + 0.05)


def test_described_dims_count_only_the_blocks_some_caption_describes():
    assert described_dims(WorldConfig(block_dims=(2, 4), include_prob=(0.5,))) == 6
    assert described_dims(WorldConfig(block_dims=(2, 4, 3), include_prob=(0.5, 0.5, 0.0))) == 6


def test_near_capacity_is_the_band_from_the_described_dims_to_c_times_them():
    # below d the width assumption itself fails: that is "void", not "capacity"
    assert [near_capacity(w, 10, 1.5) for w in (9, 10, 14, 15, 30)] == [
        False,
        True,
        True,
        False,
        False,
    ]
    assert not near_capacity(10, 10, 1.0)  # c = 1: the theorem's own condition, no band


def test_the_measured_rule_has_a_band():
    # the map found a band above d where the released loss misses P1 or P2
    assert CAPACITY_FACTOR > 1


def test_near_capacity_labels_the_theorems_claims_and_ample_width_keeps_them():
    small = WorldConfig(block_dims=(2, 2), include_prob=(0.5,))  # d = 4
    near = predict(small, embed_dim=4)
    ample = predict(small, embed_dim=math.ceil(CAPACITY_FACTOR * 4))
    assert near.guarantee and ample.guarantee  # no assumption fails either way
    assert near.near_capacity and not ample.near_capacity
    assert (near.status, ample.status) == ("holds; near capacity", "holds")
    assert predict(small, embed_dim=3).status == "void"
    # the same claims with the same bounds; only their basis moves theorem -> capacity
    moved = [dataclasses.replace(e, basis=THEOREM) for e in near.expectations]
    assert moved == list(ample.expectations)
    assert {e.basis for e in ample.expectations} == {THEOREM}
    assert {e.basis for e in near.expectations} == {CAPACITY}


def test_capacity_never_replaces_void_and_is_smartclips_alone():
    small = WorldConfig(block_dims=(2, 2), include_prob=(0.5,))
    assert CAPACITY not in {e.basis for e in predict(small, embed_dim=3).expectations}
    no_sparsity = predict(small, embed_dim=4, sparsity_weight=0.0)
    assert CAPACITY not in {e.basis for e in no_sparsity.expectations}
    assert not predict(small, "clip", embed_dim=4).near_capacity
    # the factor is a parameter: factor 1 is the theorem's own width condition
    assert not predict(small, embed_dim=4, capacity_factor=1.0).near_capacity


def test_check_prediction_compares_measured_values():
    config = WorldConfig(block_dims=(2, 1), include_prob=(0.5, 0.0))
    p = predict(config, embed_dim=1)
    values = {("preserve_r2", 0, None): 0.95, ("preserve_r2", 1, None): 0.5}
    outcomes = {(o.expectation.blocks, o.expectation.kind): o for o in check_prediction(p, values)}
    assert outcomes[(0,), "high"].held is True
    assert outcomes[(1,), "low"].held is False
    assert outcomes[(0,), "low"].held is False  # the width bound: 1/2 + slack < 0.95
    assert all(o.expectation.quantity == "preserve_r2" for o in outcomes.values())


def test_an_expectation_over_several_blocks_compares_their_dim_weighted_mean():
    """The width bound covers blocks of 3 and 1 dims: its value is (3·0.3 + 1·0.9)/4 = 0.45, within
    the bound 2/4 + 0.05 (the unweighted mean, 0.6, would not be)."""
    config = WorldConfig(block_dims=(3, 1), include_prob=(1.0, 1.0))
    p = predict(config, embed_dim=2)
    values = {("preserve_r2", 0, None): 0.3, ("preserve_r2", 1, None): 0.9}
    (width,) = [o for o in check_prediction(p, values) if len(o.expectation.blocks) == 2]
    assert width.expectation.bound == pytest.approx(2 / 4 + 0.05)
    assert width.value == pytest.approx(0.45) and width.held is True


def test_decide_prediction_counts_a_claim_some_seeds_miss_as_undecided():
    """Three seeds measure preserve_r2 of both blocks well; block_r2 of block 0's dims is measured
    by two seeds only (the third seed's mask gave block 0 no dims): that claim is undecided, not
    dropped, while a claim no seed measures (block_r2 of block 1's dims) is left out."""
    config = WorldConfig(block_dims=(1, 1), include_prob=(0.5, 0.5))
    p = predict(config)
    good = {("preserve_r2", 0, None): 0.95, ("preserve_r2", 1, None): 0.96}
    with_dims = {**good, ("block_r2", 0, (0,)): 0.97}
    decisions = decide_prediction(p, [with_dims, {**with_dims}, good])
    by_claim = {
        (d.expectation.quantity, d.expectation.blocks, d.expectation.subset): d for d in decisions
    }
    assert by_claim["preserve_r2", (0,), None].verdict == "held"
    missed = by_claim["block_r2", (0,), (0,)]
    assert missed.verdict == "undecided" and math.isnan(missed.decided.values[2])
    assert ("block_r2", (1,), (1,)) not in by_claim
    assert ("block_r2", (0,), (1,)) not in by_claim
    # a value measured as NaN in every seed (a broken embedding) stays: undecided, not left out
    broken = {**good, ("preserve_r2", 1, None): math.nan}
    nan_claims = {
        d.expectation.blocks: d.verdict
        for d in decide_prediction(p, [broken] * 3)
        if d.expectation.quantity == "preserve_r2"
    }
    assert nan_claims == {(0,): "held", (1,): "undecided"}
    # the same claims all measured: decided on their values
    full = decide_prediction(p, [with_dims] * 3)
    assert {d.verdict for d in full if d.expectation.quantity == "block_r2"} == {"held"}
