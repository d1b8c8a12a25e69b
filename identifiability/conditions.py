"""The theory's assumptions as executable checks, and its predictions for a given world.

Checks return a `Verdict` (holds, the numbers behind it, a one-line reason):
- invertibility of a generator: numeric Jacobian rank and condition number over samples
  (`jacobian_check`), and for small LeakyReLU MLPs a symbolic check with sympy
  (`symbolic_invertibility`: det J = ∏_l det W_l · ∏ gates on every activation region);
- support of the caption masks: which patterns have positive probability (`mask_distribution`,
  `support_check`) and whether a finite sample covers them (`coverage_check`, `samples_to_cover`);
- the set algebra of the caption subsets (`set_algebra`): atoms, dropped and shared blocks.

`predict(world, objective)` turns these into expected outcomes in the quantities that
`experiments/synthetic_recovery.py` measures, before any training; `check_prediction` compares.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import sympy as sp
import torch
from torch.func import jacrev, vmap

from identifiability.verdicts import Decided
from synthetic.mixing import InvertibleMLP
from synthetic.seeding import stream
from synthetic.worlds import World, WorldConfig

Subset = tuple[int, ...]


@dataclass(frozen=True)
class Verdict:
    """Outcome of one check: whether it holds, the numbers behind it and a one-line reason."""

    holds: bool
    numbers: dict[str, float]
    reason: str


# ---------------------------------------------------------------- invertibility of generators


def jacobians(fn: Callable[[torch.Tensor], torch.Tensor], points: torch.Tensor) -> torch.Tensor:
    """J[i] = ∂fn/∂x at points[i], [n, out, in], by `vmap(jacrev(fn))` in float64."""
    return vmap(jacrev(fn))(points.double())


def jacobian_check(
    fn: Callable[[torch.Tensor], torch.Tensor], points: torch.Tensor, rtol: float = 1e-10
) -> Verdict:
    """Local invertibility over samples: rank J(x) = #{σ_j > rtol·σ_max} equals the input size
    at every point; cond J(x) = σ_max/σ_min (∞ where σ_min = 0), min and max over the points."""
    sv = torch.linalg.svdvals(jacobians(fn, points))
    dim = points.shape[-1]
    rank = (sv > rtol * sv[:, :1]).sum(1)
    cond = torch.where(sv[:, -1] > 0, sv[:, 0] / sv[:, -1], torch.inf)
    numbers = {
        "dim": float(dim),
        "rank_min": float(rank.min()),
        "rank_max": float(rank.max()),
        "cond_min": cond.min().item(),
        "cond_max": cond.max().item(),
    }
    holds = numbers["rank_min"] == dim
    reason = (
        f"full rank {dim} at all {len(points)} points, cond ≤ {numbers['cond_max']:.3g}"
        if holds
        else f"rank {numbers['rank_min']:.0f} < {dim} at some of {len(points)} points"
    )
    return Verdict(holds, numbers, reason)


def generator_inputs(world: World, n: int = 256, seed: int = 0) -> dict[str, torch.Tensor]:
    """Samples of the generators' inputs: (z, s_I) for g_I and (z ⊙ m, m, s_T) for g_T."""
    b = world.sample(n, stream(seed, "check"))
    dims = torch.tensor(world.config.block_dims)
    m_dims = b.m.repeat_interleave(dims, dim=1)
    return {
        "image": torch.cat([b.z, b.s_img], 1),
        "text": torch.cat([b.z * m_dims, b.m, b.s_txt], 1),
    }


def generator_invertibility(world: World, n: int = 256, seed: int = 0) -> dict[str, Verdict]:
    """`jacobian_check` of g_I and g_T at n sampled inputs."""
    inputs = generator_inputs(world, n, seed)
    return {
        "image": jacobian_check(world.g_img, inputs["image"]),
        "text": jacobian_check(world.g_txt, inputs["text"]),
    }


def _rational(x: float) -> sp.Rational:
    return sp.Rational(float(x))


def symbolic_region_jacobian(mlp: InvertibleMLP) -> tuple[sp.Matrix, list[sp.Symbol]]:
    """J(g) = ∂y/∂x of y = W_L G_{L-1} W_{L-1} … G_1 W_1 x, G_l = diag(g_{l,1..d}) symbolic gates,
    weights as exact rationals: the generator's Jacobian on the activation region where
    g_{l,i} = 1 (unit active) or slope (inactive). Returns J and the gates in layer order."""
    w = mlp.weights.double().numpy()
    n_layers, dim = w.shape[0], w.shape[-1]
    xs = sp.symbols(f"x0:{dim}")
    gates = [sp.symbols(f"g{layer}_0:{dim}") for layer in range(n_layers - 1)]
    y = sp.Matrix(xs)
    for layer in range(n_layers):
        y = sp.Matrix(w[layer].tolist()).applyfunc(_rational) * y
        if layer < n_layers - 1:
            y = sp.diag(*gates[layer]) * y
    return y.jacobian(xs), [g for layer in gates for g in layer]


def activation_gates(mlp: InvertibleMLP, x: torch.Tensor) -> np.ndarray:
    """[n, (L-1)·dim] gate values at x: 1 where a hidden pre-activation is ≥ 0, else slope."""
    w = mlp.weights.double()
    h, gates = x.double(), []
    for layer in range(len(w) - 1):
        h = h @ w[layer].T
        gates.append(torch.where(h >= 0, torch.ones_like(h), torch.full_like(h, mlp.slope)))
        h = torch.nn.functional.leaky_relu(h, mlp.slope)
    return torch.cat(gates, 1).numpy() if gates else np.ones((len(x), 0))


def symbolic_invertibility(
    mlp: InvertibleMLP,
    rtol: float = 1e-10,
    max_regions: int = 4096,
    n_points: int = 64,
    seed: int = 0,
) -> Verdict:
    """Symbolic check of a square LeakyReLU generator. det J is computed exactly (sympy, exact
    rational weights) as a polynomial in the gates of `symbolic_region_jacobian`; the check
    first confirms that this closed form describes the generator: at `n_points` sampled inputs
    it must equal the determinant of the generator's actual Jacobian (`jacobians`, autograd on
    its forward) with the gates active there, up to 1e-6 of Hadamard's bound ∏_j ‖J_{:,j}‖
    (`factorises`; a generator whose forward is not the
    chain W_L G … G W_1, e.g. with a skip connection, fails here). Each region's det is then
    evaluated exactly and compared with Hadamard's bound ∏_j ‖J_{:,j}‖: relative det 1 for
    orthogonal columns, 0 iff singular; the map is invertible iff the closed form holds and the
    relative det exceeds rtol on all 2^((L-1)·dim) regions."""
    jac, gates = symbolic_region_jacobian(mlp)
    n_regions = 2 ** len(gates)
    if n_regions > max_regions:
        raise ValueError(f"{n_regions} activation regions exceed max_regions={max_regions}")
    det = jac.det(method="berkowitz")
    det_fn = sp.lambdify(gates, det, "numpy")
    points = torch.randn(n_points, mlp.dim, generator=stream(seed, "check"), dtype=torch.float64)
    jac_at = jacobians(mlp, points)
    actual = torch.linalg.det(jac_at).numpy()
    hadamard = jac_at.norm(dim=1).prod(dim=1).numpy()  # |det| ≤ ∏ column norms: the scale
    closed = np.array([float(det_fn(*g)) for g in activation_gates(mlp, points)])
    mismatch = float(np.max(np.abs(actual - closed) / hadamard))
    factorises = mismatch < 1e-6
    slope = sp.Rational(str(mlp.slope))
    jac_fn = sp.lambdify(gates, jac, "numpy")
    relative = []
    for values in itertools.product((sp.Integer(1), slope), repeat=len(gates)):
        region_det = abs(float(det.subs(dict(zip(gates, values, strict=True)))))
        columns = np.linalg.norm(np.asarray(jac_fn(*map(float, values)), float), axis=0)
        relative.append(region_det / float(np.prod(columns)))
    numbers = {
        "regions": float(n_regions),
        "factorises": float(factorises),
        "closed_form_mismatch": mismatch,
        "relative_det_min": min(relative),
        "relative_det_max": max(relative),
    }
    holds = factorises and numbers["relative_det_min"] > rtol
    reason = (
        f"det J ≠ 0 on all {n_regions} regions (relative det ≥ {numbers['relative_det_min']:.3g})"
        if holds
        else f"det J vanishes (relative det {numbers['relative_det_min']:.3g} ≤ {rtol:g}) "
        f"on some of {n_regions} regions"
        if factorises
        else f"the chain's closed-form det J misses the generator's Jacobian (relative error "
        f"{mismatch:.3g}): not a plain LeakyReLU chain"
    )
    return Verdict(holds, numbers, reason)


def information_ceiling(
    world: World, n: int = 256, seed: int = 0, rtol: float = 1e-10
) -> dict[str, float]:
    """Upper bound on R²(u_i | x) for u = (z, s_I) ~ N(0, C), x = g_I(u) + σε, any estimator:
    by the Van Trees (Bayesian Cramér-Rao) inequality E[(û_i − u_i)²] ≥ [(C⁻¹ + F/σ²)⁻¹]_ii with
    F = E[JᵀJ], J = ∂g_I/∂u, so R²_i ≤ 1 − [(C⁻¹ + F/σ²)⁻¹]_ii / C_ii. Computed as
    C^½ Q diag(σ²/(σ² + λ)) Qᵀ C^½ from C^½ F C^½ = Q Λ Qᵀ; at σ = 0 the directions with λ = 0
    (≤ rtol·λ_max) are lost and the rest determined, which is exact for the rank-deficient
    generator. Averaged over each block's coordinates; keys "z{k}" and "s_img"."""
    c = world.config
    cov = torch.block_diag(world.latent_cov(), torch.eye(c.img_nuisance_dim, dtype=torch.float64))
    jac = jacobians(world.g_img, generator_inputs(world, n, seed)["image"])
    evals, evecs = torch.linalg.eigh(cov)
    root = evecs @ torch.diag(evals.sqrt()) @ evecs.T
    lam, q = torch.linalg.eigh(root @ (jac.transpose(1, 2) @ jac).mean(0) @ root)
    lam = torch.where(lam > rtol * lam.max(), lam, 0.0)
    keep = (
        c.noise**2 / (c.noise**2 + lam) if c.noise else (lam == 0).double()
    )  # posterior variance factor per whitened direction
    posterior = root @ q @ torch.diag(keep) @ q.T @ root
    r2 = (1 - posterior.diagonal() / cov.diagonal()).clamp(0, 1).numpy()
    slices = [*c.block_slices, slice(c.latent_dim, None)]
    names = [f"z{k}" for k in range(c.n_blocks)] + ["s_img"]
    return {
        name: float(r2[s].mean()) if s.start < len(r2) else 0.0
        for name, s in zip(names, slices, strict=True)
    }


def correlation_floor(world: World, targets: Subset, given: Subset) -> float:
    """R²(z_targets | z_given) = 1 − mean_i [Σ_tt − Σ_tg Σ_gg⁻¹ Σ_gt]_ii for Gaussian z ~ N(0, Σ):
    what any representation of the given blocks explains about the others through correlation."""
    slices = world.config.block_slices
    t = np.concatenate([np.arange(slices[k].start, slices[k].stop) for k in targets])
    if not given:
        return 0.0
    g = np.concatenate([np.arange(slices[k].start, slices[k].stop) for k in given])
    cov = world.latent_cov().numpy()
    explained = cov[np.ix_(t, g)] @ np.linalg.solve(cov[np.ix_(g, g)], cov[np.ix_(g, t)])
    return float(np.mean(np.diag(explained) / np.diag(cov)[t]))


# ---------------------------------------------------------------- support of the caption masks


def _pattern_probs(
    config: WorldConfig, patterns: Sequence[Subset], n_mc: int, seed: int
) -> np.ndarray:
    """p(m) for independent inclusion: ∏_k p_k^{m_k}(1 − p_k)^{1−m_k}, p_k = σ(logit p_k +
    selection·z_k[0]) averaged over z by Monte Carlo when selection ≠ 0; probabilities clamped
    to [1e-12, 1 − 1e-12] as the sampler does; `always` blocks included with probability 1."""
    k = config.n_blocks
    p = np.clip(np.asarray(config.probs, float), 1e-12, 1 - 1e-12)
    bits = np.zeros((len(patterns), k))
    for row, s in enumerate(patterns):
        bits[row, list(s)] = 1.0
    free = np.array([b not in config.always for b in range(k)])
    logits = np.log(p) - np.log1p(-p)
    if config.selection:
        rng = np.random.default_rng(seed)
        corr = np.full((k, k), config.latent_corr) + (1 - config.latent_corr) * np.eye(k)
        first = rng.standard_normal((n_mc, k)) @ np.linalg.cholesky(corr).T
        logits = logits + config.selection * first
    q = 1 / (1 + np.exp(-np.atleast_2d(logits)))  # [n or 1, k]
    log_on, log_off = np.log(q[:, free]), np.log1p(-q[:, free])
    probs = np.exp(log_on @ bits[:, free].T + log_off @ (1 - bits[:, free]).T)  # [n or 1, P]
    if not config.allow_empty and not config.always:
        probs = probs / -np.expm1(log_off.sum(1, keepdims=True))  # the sampler redraws ∅
    return probs.mean(0)


def mask_distribution(
    config: WorldConfig, n_mc: int = 20_000, seed: int = 0
) -> dict[Subset, float]:
    """p(S) for every caption subset S in `config.support()`. Explicit subsets: their
    `subset_probs` (uniform if none), `always` added, merged, ∅ removed and renormalised unless
    allowed. Independent inclusion: see `_pattern_probs` (p(S) = E_z p(S | z) under selection)."""
    support = [tuple(s) for s in config.support()]
    if not config.subsets:
        return dict(zip(support, _pattern_probs(config, support, n_mc, seed).tolist(), strict=True))
    probs = config.subset_probs or (1 / len(config.subsets),) * len(config.subsets)
    merged: dict[Subset, float] = dict.fromkeys(support, 0.0)
    for s, p in zip(config.subsets, probs, strict=True):
        key = tuple(sorted(set(s) | set(config.always)))
        if key in merged:
            merged[key] += p
    total = sum(merged.values())
    return {s: p / total for s, p in merged.items()}


def declared_patterns(config: WorldConfig) -> list[Subset]:
    """The caption subsets the config names: every listed subset (`always` added, ∅ only if
    allowed), whatever its probability; for independent inclusion, the support itself."""
    if not config.subsets:
        return [tuple(s) for s in config.support()]
    named = {tuple(sorted(set(s) | set(config.always))) for s in config.subsets}
    return sorted(named - ({()} if not config.allow_empty else set()), key=lambda s: (len(s), s))


def support_check(config: WorldConfig, family: Iterable[Subset] | None = None) -> Verdict:
    """Full support of p(z, m) over a family of caption subsets (default: `declared_patterns`):
    every S in the family has p(S) > 0. Given S, z is Gaussian and p(S | z) a product of
    logistic terms in (0, 1), so p(z, S) > 0 for all z whenever p(S) > 0."""
    support = set(config.support())
    family = [tuple(sorted(s)) for s in (declared_patterns(config) if family is None else family)]
    missing = [s for s in family if s not in support]
    numbers = {
        "family": float(len(family)),
        "support": float(len(support)),
        "missing": float(len(missing)),
    }
    reason = (
        f"all {len(family)} caption subsets have positive probability"
        if not missing
        else f"{len(missing)} of {len(family)} caption subsets have probability 0: {missing[:4]}"
    )
    return Verdict(not missing, numbers, reason)


def samples_to_cover(probs: Iterable[float], delta: float = 0.05) -> int:
    """Smallest n with Σ_S (1 − p_S)^n ≤ δ, so P(some pattern unseen in n draws) ≤ δ by the union
    bound; never more than ⌈log(P/δ) / p_min⌉ since (1 − p)^n ≤ exp(−n p)."""
    p = np.asarray([q for q in probs if q > 0], float)
    hi = math.ceil(math.log(len(p) / delta) / p.min())
    lo = 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if np.sum((1 - p) ** mid) <= delta else (mid, hi)
    return hi


def expected_cover_time(probs: Iterable[float]) -> float:
    """Coupon collector with unequal probabilities: E[T] = ∫_0^∞ (1 − ∏_S (1 − e^{−p_S t})) dt."""
    p = np.asarray([q for q in probs if q > 0], float)
    ts = np.concatenate([[0.0], np.geomspace(1e-3 / p.max(), 50 / p.min(), 4000)])
    integrand = 1 - np.prod(-np.expm1(-np.outer(ts, p)), axis=1)
    return float(np.trapezoid(integrand, ts))


def coverage_check(
    masks: torch.Tensor | np.ndarray, distribution: Mapping[Subset, float], delta: float = 0.05
) -> Verdict:
    """Does a sample of masks [n, K] contain every pattern of the support at least once?
    Reports the counts and n needed for coverage with probability ≥ 1 − δ (`samples_to_cover`)."""
    m = np.asarray(masks) > 0.5
    counts = {s: int(np.all(m == _indicator(s, m.shape[1]), axis=1).sum()) for s in distribution}
    missing = [s for s, count in counts.items() if count == 0]
    numbers = {
        "n": float(len(m)),
        "patterns": float(len(distribution)),
        "seen": float(len(distribution) - len(missing)),
        "min_count": float(min(counts.values())),
        "n_needed": float(samples_to_cover(distribution.values(), delta)),
        "expected_cover_time": expected_cover_time(distribution.values()),
    }
    reason = (
        f"all {len(distribution)} patterns seen in {len(m)} samples (min count "
        f"{numbers['min_count']:.0f}; {numbers['n_needed']:.0f} suffice at δ={delta})"
        if not missing
        else f"{len(missing)} patterns unseen in {len(m)} samples, e.g. {missing[:3]}; "
        f"{numbers['n_needed']:.0f} samples needed at δ={delta}"
    )
    return Verdict(not missing, numbers, reason)


def _indicator(s: Subset, k: int) -> np.ndarray:
    row = np.zeros(k, bool)
    row[list(s)] = True
    return row


# ---------------------------------------------------------------- set algebra of caption subsets


def atoms(subsets: Iterable[Iterable[int]]) -> tuple[Subset, ...]:
    """Partition of the described blocks by signature: block b's signature is the set of subsets
    containing it; blocks with equal signatures form one atom. Sorted by smallest block."""
    family = [frozenset(s) for s in subsets]
    groups: dict[tuple[bool, ...], list[int]] = {}
    for b in sorted(set().union(*family)):
        groups.setdefault(tuple(b in s for s in family), []).append(b)
    return tuple(sorted(tuple(g) for g in groups.values()))


def atom_formula(atom: Iterable[int], subsets: Sequence[Iterable[int]]) -> tuple[Subset, Subset]:
    """(inside, outside): indices of the subsets that contain the atom and of those that do not,
    so that atom = ⋂_{i ∈ inside} S_i ∖ ⋃_{j ∈ outside} S_j (intersections and differences of
    observed masks)."""
    a = set(atom)
    inside = tuple(i for i, s in enumerate(subsets) if a <= set(s))
    outside = tuple(i for i, s in enumerate(subsets) if not a & set(s))
    return inside, outside


@dataclass(frozen=True)
class SetAlgebra:
    """What the observed caption subsets determine: the atoms SmartCLIP can recover, the blocks no
    caption describes (dropped) and the blocks every caption describes (what CLIP keeps)."""

    n_blocks: int
    subsets: tuple[Subset, ...]
    atoms: tuple[Subset, ...]
    described: Subset
    dropped: Subset
    shared: Subset

    def atoms_within(self, subset: Iterable[int]) -> tuple[Subset, ...]:
        """Atoms contained in the subset (what a caption with this subset identifies)."""
        s = set(subset)
        return tuple(a for a in self.atoms if set(a) <= s)

    def atoms_split(self, subset: Iterable[int]) -> tuple[Subset, ...]:
        """Atoms the subset cuts (partly inside): isolating that part is not predicted."""
        s = set(subset)
        return tuple(a for a in self.atoms if set(a) & s and not set(a) <= s)

    def atom_of(self, block: int) -> Subset | None:
        return next((a for a in self.atoms if block in a), None)


def set_algebra(subsets: Iterable[Iterable[int]], n_blocks: int) -> SetAlgebra:
    """Atoms, described (⋃ S), dropped (the rest) and shared (⋂ S) blocks of a subset family."""
    family = tuple(tuple(sorted(set(s))) for s in subsets)
    described = set().union(*map(set, family))
    shared = set.intersection(*map(set, family)) if family else set()
    return SetAlgebra(
        n_blocks=n_blocks,
        subsets=family,
        atoms=atoms(family),
        described=tuple(sorted(described)),
        dropped=tuple(b for b in range(n_blocks) if b not in described),
        shared=tuple(sorted(shared)),
    )


# ---------------------------------------------------------------- predictions

THEOREM, BOUND, VOID, CONJECTURE = "theorem", "bound", "void", "conjecture"
CAPACITY = "capacity"
CAPACITY_FACTOR = 2.0
"""c of the near-capacity rule: SmartCLIP with the released loss (weights 10/10/λ, mean|m|) is
near capacity when d ≤ D < c·d, D the embedding width and d the described latent dims. Measured
by `experiments/capacity.py` at 6,000 steps, 3 seeds a cell (docs/results/capacity/summary.md):
every width below 2d missed P1 or P2 in some world shape (5 blocks × 3 dims: not held at d + 1,
held from 1.53d; 8 × 2: not held at d + 1, undecided at 1.5d and 2d). 2 is the widest width
mapped, so c = 2 is a lower bound."""


def described_dims(config: WorldConfig) -> int:
    """d = Σ d_k over the blocks some caption describes: the width SmartCLIP needs ("width")."""
    algebra = set_algebra(config.support(), config.n_blocks)
    return sum(config.block_dims[b] for b in algebra.described)


def near_capacity(embed_dim: int, needed: int, factor: float = CAPACITY_FACTOR) -> bool:
    """True iff the width meets the theorem's condition but not the measured margin:
    needed ≤ embed_dim < factor · needed."""
    return needed <= embed_dim < factor * needed


@dataclass(frozen=True)
class Expectation:
    """One predicted outcome. `kind`: "high" (value ≥ bound), "low" (value ≤ bound), "degraded"
    (value < bound), "none" (no claim). `blocks`: the target blocks (several: dim-weighted mean;
    none: the image nuisance). `subset`: the caption subset S for disentangle_*, the block whose
    mask dims are used for block_r2. `basis`: "theorem" (follows from the assumptions, which all
    hold), "bound" (information-theoretic, holds regardless), "void" (the theorem's claim, but an
    assumption fails), "capacity" (the theorem's claim, every assumption holds, but the width is
    near capacity: `near_capacity`, where the released loss was measured to lose part of a block
    to a mask with too few dims), "conjecture" (P4: to measure, not assumed)."""

    quantity: str
    blocks: Subset
    subset: Subset | None
    kind: str
    bound: float
    basis: str
    reason: str

    def holds(self, value: float) -> bool | None:
        if self.kind == "high":
            return value >= self.bound
        if self.kind == "low":
            return value <= self.bound
        if self.kind == "degraded":
            return value < self.bound
        return None


@dataclass(frozen=True)
class Prediction:
    """The theory's expected outcome for one world and objective, made before training."""

    objective: str
    block_dims: tuple[int, ...]
    algebra: SetAlgebra
    assumptions: dict[str, Verdict]
    expectations: tuple[Expectation, ...]

    @property
    def guarantee(self) -> bool:
        """True iff every assumption holds ("guarantee holds"), else "guarantee void"."""
        return all(v.holds for v in self.assumptions.values())

    @property
    def failed(self) -> tuple[str, ...]:
        return tuple(name for name, v in self.assumptions.items() if not v.holds)

    @property
    def near_capacity(self) -> bool:
        """True iff the guarantee holds and the theorem's claims are labelled "capacity"."""
        return any(e.basis == CAPACITY for e in self.expectations)

    @property
    def status(self) -> str:
        """ "holds", "holds; near capacity" or "void": the guarantee as the claim tables show it."""
        if not self.guarantee:
            return "void"
        return "holds; near capacity" if self.near_capacity else "holds"


def _flag(holds: bool, numbers: dict[str, float], good: str, bad: str) -> Verdict:
    return Verdict(holds, numbers, good if holds else bad)


def assumptions(
    world: World,
    objective: str,
    algebra: SetAlgebra,
    embed_dim: int,
    sparsity_weight: float,
    n_samples: int | None = None,
    delta: float = 0.05,
) -> dict[str, Verdict]:
    """The theory's assumptions for this world and objective, each as a `Verdict`."""
    c = world.config
    gens = generator_invertibility(world)
    invertible = Verdict(
        gens["image"].holds and gens["text"].holds,
        {f"{g}_{k}": v for g, verdict in gens.items() for k, v in verdict.numbers.items()},
        f"g_I: {gens['image'].reason}; g_T: {gens['text'].reason}",
    )
    keep = algebra.described if objective == "smartclip" else algebra.shared
    need = sum(c.block_dims[b] for b in keep)
    out = {
        "invertible": invertible,
        "noiseless": _flag(
            c.noise == 0, {"noise": c.noise}, "x, t are noiseless", f"noise σ = {c.noise:g} > 0"
        ),
        "full_support": support_check(c),
        "independent_masks": _flag(
            c.selection == 0,
            {"selection": c.selection},
            "p(m | z) = p(m)",
            f"p(m | z) ≠ p(m): inclusion logit shifted by {c.selection:g}·z_k[0]",
        ),
        "width": _flag(
            embed_dim >= need,
            {"embed_dim": float(embed_dim), "needed": float(need)},
            f"embedding width {embed_dim} ≥ {need} latent dims to keep",
            f"embedding width {embed_dim} < {need} latent dims to keep",
        ),
    }
    if objective == "smartclip":
        out["sparsity"] = _flag(
            sparsity_weight > 0,
            {"weight": sparsity_weight},
            f"sparsity term on (weight {sparsity_weight:g})",
            "no sparsity term: masks need not be minimal",
        )
    if n_samples is not None:
        dist = mask_distribution(c)
        needed = samples_to_cover(dist.values(), delta)
        out["coverage"] = _flag(
            n_samples >= needed,
            {"n_samples": float(n_samples), "n_needed": float(needed)},
            f"{n_samples} training samples ≥ {needed} to see every pattern (δ = {delta:g})",
            f"{n_samples} training samples < {needed} to see every pattern (δ = {delta:g})",
        )
    return out


def predict(
    world: World | WorldConfig,
    objective: str = "smartclip",
    *,
    embed_dim: int = 16,
    sparsity_weight: float = 2.0,
    n_samples: int | None = None,
    subsets: Iterable[Subset] | None = None,
    high: float = 0.9,
    low: float = 0.2,
    slack: float = 0.05,
    capacity_factor: float = CAPACITY_FACTOR,
) -> Prediction:
    """Expected outcome per quantity of `experiments/synthetic_recovery.py`, before training.

    SmartCLIP (P1-P3): preserve_r2 ≥ high for every described block, ≤ low + floor for dropped
    ones (floor = R² through latent correlation; no claim if floor + low ≥ 1); nuisance_v_r2 ≤ low
    for each evaluated subset S, on v = u⊙m̂(t)/‖u⊙m̂(t)‖ with captions of S: at the optimum the
    alignment term makes v a function of the caption, t = g_T(z_S, m, s_T), and s_I is independent
    of (z, m, s_T), so R²(s_I | v) = 0. No claim on u (`nuisance_r2` is reported only): a
    dimension that no caption's mask selects never meets the loss and may keep s_I. For CLIP the
    same argument holds for v = u/‖u‖ (subset None). For each evaluated subset S (default: the
    support) disentangle_in_r2 ≥ high for blocks of atoms inside S and disentangle_out_r2 ≤
    low + R²(z_b | z_S) for the others; no claim where S cuts an atom; block_r2(z_j | dims of
    block k) high iff j shares k's atom. CLIP (P4): preserve_r2 high for shared blocks,
    "degraded" (< high) conjectured for the other described.
    If an assumption fails the claims become "void"; information bounds replace them where they
    bite: R² ≤ `information_ceiling` + slack (non-invertible g_I, noise) for what is computed from
    x alone (preserve_r2, block_r2; not disentangle_*, whose m̂(t) also reads the caption) and the
    dim-weighted mean preserve_r2 over kept blocks ≤ width / kept dims + slack (invariance of
    domain). If every assumption holds but SmartCLIP's width is near capacity (d ≤ D <
    capacity_factor · d, `near_capacity`), the theorem's claims are labelled "capacity": the
    theorem still makes them, the released loss was measured to miss them there."""
    world = World(world) if isinstance(world, WorldConfig) else world
    c = world.config
    algebra = set_algebra(c.support(), c.n_blocks)
    flags = assumptions(world, objective, algebra, embed_dim, sparsity_weight, n_samples)
    basis = THEOREM if all(v.holds for v in flags.values()) else VOID
    needed = int(flags["width"].numbers["needed"])
    if (
        basis == THEOREM
        and objective == "smartclip"
        and near_capacity(embed_dim, needed, capacity_factor)
    ):
        basis = CAPACITY
    ceiling = (
        information_ceiling(world)
        if not (flags["invertible"].holds and flags["noiseless"].holds)
        else None
    )
    evaluated = c.support() if subsets is None else [tuple(sorted(s)) for s in subsets]
    out: list[Expectation] = []

    def kept(
        quantity: str, block: int, subset: Subset | None, why: str, capped: bool = True
    ) -> Expectation:
        cap = ceiling[f"z{block}"] if ceiling and capped else 1.0
        if cap < high:
            return Expectation(
                quantity,
                (block,),
                subset,
                "low",
                cap + slack,
                BOUND,
                f"x carries R² ≤ {cap:.2f} of z{block}",
            )
        return Expectation(quantity, (block,), subset, "high", high, basis, why)

    def lost(quantity: str, block: int, subset: Subset | None, given: Subset, why: str):
        floor = correlation_floor(world, (block,), given)
        if floor + low >= 1:
            why = f"{why}; vacuous: correlation alone gives R² {floor:.2f}"
        kind = "none" if floor + low >= 1 else "low"
        return Expectation(quantity, (block,), subset, kind, floor + low, basis, why)

    keep = algebra.described if objective == "smartclip" else algebra.shared
    for b in range(c.n_blocks):
        if b in keep:
            out.append(kept("preserve_r2", b, None, "described: block-identified"))
        elif b in algebra.described:
            out.append(
                Expectation(
                    "preserve_r2",
                    (b,),
                    None,
                    "degraded",
                    high,
                    CONJECTURE,
                    "CLIP keeps reliably only blocks every caption describes",
                )
            )
        else:
            out.append(lost("preserve_r2", b, None, keep, "never described: dropped"))
    if c.img_nuisance_dim:
        why = "image-only nuisance: v is aligned with a caption that does not carry it"
        for s in evaluated if objective == "smartclip" else [None]:
            out.append(Expectation("nuisance_v_r2", (), s, "low", low, basis, why))
    if not flags["width"].holds and keep:
        dims = sum(c.block_dims[b] for b in keep)
        out.append(
            Expectation(
                "preserve_r2",
                keep,
                None,
                "low",
                embed_dim / dims + slack,
                BOUND,
                f"{embed_dim} dims cannot hold {dims} latent dims",
            )
        )
    if objective == "smartclip":
        for s in evaluated:
            s = tuple(s)
            inside = tuple(b for a in algebra.atoms_within(s) for b in a)
            split = {b for a in algebra.atoms_split(s) for b in a}
            for b in range(c.n_blocks):
                quantity = "disentangle_in_r2" if b in s else "disentangle_out_r2"
                if b in split:
                    out.append(
                        Expectation(
                            quantity,
                            (b,),
                            s,
                            "none",
                            math.nan,
                            basis,
                            f"{s} cuts atom {algebra.atom_of(b)}: isolating part not predicted",
                        )
                    )
                elif b in inside:
                    out.append(kept(quantity, b, s, "atom inside the caption subset", False))
                else:
                    out.append(lost(quantity, b, s, inside, "outside the caption subset"))
        varying = [b for b in algebra.described if b not in algebra.shared]
        for k in varying:
            for j in range(c.n_blocks):
                if j in algebra.atom_of(k):
                    out.append(kept("block_r2", j, (k,), f"same atom as z{k}"))
                else:
                    out.append(lost("block_r2", j, (k,), algebra.atom_of(k), f"not in z{k}'s atom"))
    return Prediction(objective, c.block_dims, algebra, flags, tuple(out))


@dataclass(frozen=True)
class Outcome:
    """An expectation with its measured value; held is None without a claim or a value."""

    expectation: Expectation
    value: float
    held: bool | None


Values = Mapping[tuple[str, int | None, Subset | None], float]


def check_prediction(prediction: Prediction, values: Values) -> list[Outcome]:
    """Compare with measured values keyed (quantity, block, subset); block None for the nuisance.
    Several blocks: their dim-weighted mean. Expectations without a measured value are skipped."""
    outcomes = []
    for e in prediction.expectations:
        keys = [(e.quantity, b, e.subset) for b in e.blocks] or [(e.quantity, None, e.subset)]
        if not all(k in values for k in keys):
            continue
        weights = [prediction.block_dims[b] for b in e.blocks] or [1]
        value = float(np.average([values[k] for k in keys], weights=weights))
        outcomes.append(Outcome(e, value, e.holds(value)))
    return outcomes


@dataclass(frozen=True)
class Decision:
    """An expectation decided on seeds by the rule of `identifiability.verdicts`."""

    expectation: Expectation
    decided: Decided

    @property
    def verdict(self) -> str:
        return self.decided.verdict


def decide_prediction(prediction: Prediction, per_seed: Sequence[Values]) -> list[Decision]:
    """`check_prediction` on every seed's values, then each claim (kinds high, low, degraded)
    decided on its per-seed values: held, not held or undecided by the 95 % interval of the seed
    mean, no verdict below `verdicts.MIN_SEEDS` seeds. A claim that some seeds measure and others
    do not (a collapsed mask gives a block no dimensions of its own, so that seed has no
    `block_r2` for it) counts NaN for the others and is undecided, never dropped from the count;
    a claim that no seed measures (no seed's mask gives the block dimensions) has nothing to
    decide and is left out. A measured NaN (a broken embedding) is kept: undecided."""
    outcomes = [check_prediction(prediction, values) for values in per_seed]
    decisions = []
    for e in prediction.expectations:
        if e.kind == "none":
            continue
        measured = [next((o.value for o in seed if o.expectation is e), None) for seed in outcomes]
        if any(v is not None for v in measured):  # a NaN that was measured stays a NaN
            values = tuple(math.nan if v is None else v for v in measured)
            decisions.append(Decision(e, Decided(e.kind, e.bound, values)))
    return decisions
