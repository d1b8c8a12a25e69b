"""The synthetic world of SmartCLIP's theory, with every latent kept as ground truth.

    z = (z_1, …, z_K) ~ N(0, Σ)                 K concept blocks of sizes d_k (Σ = I by default)
    m ∈ {0,1}^K ~ p(m | z)                      which blocks the caption describes
    x = g_I(z, s_I) + σ ε_x                     image; s_I an image-only nuisance
    t = g_T(z ⊙ m, m, s_T) + σ ε_t              caption; it encodes which blocks are present
                                                (m itself is an input: absent ≠ value zero)

g_I and g_T are random square LeakyReLU bijections (`synthetic.mixing.InvertibleMLP`). The world is
fully determined by `WorldConfig.seed` (drawn from the stream `stream(seed, "world")`); samples by
the generator passed to `World.sample` (`synthetic.seeding.stream(seed, purpose, *index)`): the
same world seed and stream give bitwise the same tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from synthetic.mixing import InvertibleMLP
from synthetic.seeding import stream


@dataclass(frozen=True)
class WorldConfig:
    """Everything that defines a world. Caption masks come from `subsets` when it is given
    (one subset of block indices per caption type, drawn with `subset_probs`, uniform if empty),
    else each block k is included independently with probability `include_prob[k]`
    (a single value applies to all), shifted by `selection · z_k[0]` on the logit scale
    (selection bias: p(m | z) ≠ p(m)). Blocks in `always` are in every caption."""

    block_dims: tuple[int, ...] = (2, 2, 2, 2)
    include_prob: tuple[float, ...] = (0.5,)
    subsets: tuple[tuple[int, ...], ...] = ()
    subset_probs: tuple[float, ...] = ()
    always: tuple[int, ...] = ()
    allow_empty: bool = False
    latent_corr: float = 0.0
    selection: float = 0.0
    img_nuisance_dim: int = 2
    txt_nuisance_dim: int = 2
    noise: float = 0.0
    mixing_layers: int = 2
    max_cond: float = 25.0
    img_rank: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        k = len(self.block_dims)
        if k < 1 or any(d < 1 for d in self.block_dims):
            raise ValueError(f"block_dims must be positive sizes, got {self.block_dims}")
        if len(self.include_prob) not in (1, k):
            raise ValueError(f"include_prob needs 1 or {k} values, got {len(self.include_prob)}")
        if any(not 0 <= p <= 1 for p in self.include_prob):
            raise ValueError(f"include_prob must lie in [0, 1], got {self.include_prob}")
        for s in (*self.subsets, self.always):
            if any(not 0 <= b < k for b in s):
                raise ValueError(f"block index out of range 0..{k - 1} in {s}")
        if self.subset_probs and len(self.subset_probs) != len(self.subsets):
            raise ValueError("subset_probs must have one probability per subset")
        if self.subset_probs and (
            any(p < 0 for p in self.subset_probs) or not math.isclose(sum(self.subset_probs), 1)
        ):
            raise ValueError(f"subset_probs must be non-negative and sum to 1: {self.subset_probs}")
        if not -1 / max(k - 1, 1) < self.latent_corr < 1:
            raise ValueError(f"latent_corr must lie in (-1/(K-1), 1), got {self.latent_corr}")
        if self.img_nuisance_dim < 0 or self.txt_nuisance_dim < 0 or self.noise < 0:
            raise ValueError("nuisance sizes and noise must be non-negative")
        if not self.allow_empty and not self._can_be_nonempty():
            raise ValueError("every caption would be empty; set allow_empty or include a block")

    def _can_be_nonempty(self) -> bool:
        if self.always:
            return True
        if self.subsets:
            probs = self.subset_probs or (1.0,) * len(self.subsets)
            return any(s and p > 0 for s, p in zip(self.subsets, probs, strict=True))
        return any(p > 0 for p in self.probs)

    @property
    def n_blocks(self) -> int:
        return len(self.block_dims)

    @property
    def latent_dim(self) -> int:
        return sum(self.block_dims)

    @property
    def probs(self) -> tuple[float, ...]:
        """Per-block inclusion probability (before `always` and selection)."""
        p = self.include_prob
        return p * self.n_blocks if len(p) == 1 else p

    def support(self) -> list[tuple[int, ...]]:
        """The caption subsets with positive probability under the declared p(m) (sorted).

        Independent inclusion: every subset that contains `always`, avoids blocks of probability
        0 (unless selection makes them possible) and contains blocks of probability 1; empty only
        if allowed. Explicit subsets: those with positive probability, `always` added."""
        k = self.n_blocks
        if self.subsets:
            probs = self.subset_probs or (1.0,) * len(self.subsets)
            found = {
                tuple(sorted(set(s) | set(self.always)))
                for s, p in zip(self.subsets, probs, strict=True)
                if p > 0
            }
        else:
            p = self.probs
            found = set()
            for bits in range(1 << k):
                s = tuple(b for b in range(k) if bits >> b & 1)
                possible = all(
                    b in self.always
                    or (0 < p[b] < 1 or self.selection != 0)
                    or (p[b] == 1) == (b in s)
                    for b in range(k)
                )
                if possible and set(self.always) <= set(s):
                    found.add(s)
        if not self.allow_empty:
            found.discard(())
        return sorted(found, key=lambda s: (len(s), s))

    @property
    def block_slices(self) -> tuple[slice, ...]:
        starts = [0, *torch.tensor(self.block_dims).cumsum(0).tolist()]
        return tuple(slice(a, b) for a, b in zip(starts[:-1], starts[1:], strict=True))


@dataclass
class Batch:
    """One sample of the world: observations x, t and their ground-truth latents."""

    x: torch.Tensor  # [n, latent_dim + img_nuisance_dim] image
    t: torch.Tensor  # [n, latent_dim + K + txt_nuisance_dim] caption
    z: torch.Tensor  # [n, latent_dim] concept blocks, concatenated
    m: torch.Tensor  # [n, K] caption mask, 0/1 floats
    s_img: torch.Tensor  # [n, img_nuisance_dim]
    s_txt: torch.Tensor  # [n, txt_nuisance_dim]
    t_short: torch.Tensor | None = None  # [n, t_dim] the caption of its first block alone
    t_neg: torch.Tensor | None = None  # hard-negative captions: this world defines none


@dataclass
class World:
    """A seeded instance of `WorldConfig`: fixed generators, fresh samples on demand."""

    config: WorldConfig
    g_img: InvertibleMLP = field(init=False)
    g_txt: InvertibleMLP = field(init=False)
    latent_chol: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        c = self.config
        gen = stream(c.seed, "world")
        self.g_img = InvertibleMLP(
            self.x_dim, c.mixing_layers, max_cond=c.max_cond, generator=gen, rank=c.img_rank
        )
        self.g_txt = InvertibleMLP(self.t_dim, c.mixing_layers, max_cond=c.max_cond, generator=gen)
        self.latent_chol = torch.linalg.cholesky(self.latent_cov()).float()

    @property
    def x_dim(self) -> int:
        return self.config.latent_dim + self.config.img_nuisance_dim

    @property
    def t_dim(self) -> int:
        return self.config.latent_dim + self.config.n_blocks + self.config.txt_nuisance_dim

    @property
    def text_input(self) -> int:
        """What a text tower reads: a caption vector of `t_dim` entries."""
        return self.t_dim

    def latent_cov(self) -> torch.Tensor:
        """Σ with unit variances and corr(z_a[j], z_b[j]) = latent_corr for blocks a ≠ b: a direct
        sum of equicorrelation matrices, one per within-block index j, so positive definite."""
        c = self.config
        index = torch.cat([torch.arange(d) for d in c.block_dims])
        cov = (index[:, None] == index[None, :]).double() * c.latent_corr
        return cov.fill_diagonal_(1.0)

    def sample_masks(
        self, z: torch.Tensor, gen: torch.Generator, fixed: tuple[int, ...] | None = None
    ) -> torch.Tensor:
        """m ~ p(m | z), or the indicator of `fixed` for every row."""
        c, n = self.config, z.shape[0]
        m = torch.zeros(n, c.n_blocks)
        if fixed is not None:
            m[:, list(fixed)] = 1.0
            return m
        todo = torch.ones(n, dtype=torch.bool)
        for _ in range(10_000):
            m[todo] = self._draw_masks(z[todo], gen)
            todo = torch.zeros(n, dtype=torch.bool) if c.allow_empty else m.sum(1) == 0
            if not todo.any():
                return m
        raise ValueError("non-empty captions are too improbable: raise include_prob")

    def _draw_masks(self, z: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        c, n = self.config, z.shape[0]
        if c.subsets:
            probs = torch.tensor(c.subset_probs or (1.0,) * len(c.subsets), dtype=torch.float)
            pick = torch.multinomial(probs, n, replacement=True, generator=gen)
            table = torch.zeros(len(c.subsets), c.n_blocks)
            for row, s in enumerate(c.subsets):
                table[row, list(s)] = 1.0
            m = table[pick]
        else:
            p = torch.tensor(c.probs, dtype=torch.float).clamp(1e-12, 1 - 1e-12)
            logits = torch.log(p) - torch.log1p(-p)
            if c.selection:
                first = torch.stack([z[:, s.start] for s in c.block_slices], dim=1)
                logits = logits + c.selection * first
            m = (torch.rand(n, c.n_blocks, generator=gen) < torch.sigmoid(logits)).float()
        if c.always:
            m[:, list(c.always)] = 1.0
        return m

    def sample(self, n: int, gen: torch.Generator, mask: tuple[int, ...] | None = None) -> Batch:
        """n fresh samples drawn from `gen` (one stream per purpose: `synthetic.seeding.stream`);
        `mask` fixes every caption to describe exactly those blocks."""
        c = self.config
        z = torch.randn(n, c.latent_dim, generator=gen) @ self.latent_chol.T
        s_img = torch.randn(n, c.img_nuisance_dim, generator=gen)
        s_txt = torch.randn(n, c.txt_nuisance_dim, generator=gen)
        m = self.sample_masks(z, gen, mask)
        x = self.g_img(torch.cat([z, s_img], dim=1))
        t = self._caption(z, m, s_txt)
        first = torch.zeros_like(m)  # a short caption: the lowest-index described block alone
        first[torch.arange(n), m.argmax(1)] = m.max(1).values
        t_short = self._caption(z, first, s_txt)
        if c.noise:
            x = x + c.noise * torch.randn(x.shape, generator=gen)
            t = t + c.noise * torch.randn(t.shape, generator=gen)
            t_short = t_short + c.noise * torch.randn(t_short.shape, generator=gen)
        return Batch(x=x, t=t, z=z, m=m, s_img=s_img, s_txt=s_txt, t_short=t_short)

    def _caption(self, z: torch.Tensor, m: torch.Tensor, s_txt: torch.Tensor) -> torch.Tensor:
        """t = g_T(z ⊙ m, m, s_T): the caption describing the blocks of m."""
        c = self.config
        m_dims = torch.cat([m[:, [k]].expand(len(m), d) for k, d in enumerate(c.block_dims)], dim=1)
        return self.g_txt(torch.cat([z * m_dims, m, s_txt], dim=1))
