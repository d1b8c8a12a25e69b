"""The token world with continuous latents: the variant in which InfoNCE's identifiability
theorem (arXiv 2510.26302, Theorem 2: InfoNCE recovers z_inv; its assumptions as a public summary
gives them: a smooth, positive density on z_inv, diffeomorphic generators) applies.

The discrete world (`synthetic.tokens`) gives object p the code (table_shape[shape_p],
table_colour[colour_p]), a choice among n_shapes and n_colours vectors drawn once from N(0, I);
z_inv is a finite set of scenes, with no density. Here each object draws its own coordinates
from that same N(0, I), and the caption is a vector (the sentence view), so

    z_inv = (a_1, b_1, …, a_n, b_n) ∈ ℝ^d,  d = n (shape_dim + color_dim)      `z_dim`
            a_p ∈ ℝ^shape_dim, b_p ∈ ℝ^color_dim: object p's shape and colour, p in layout order
    p(z_inv) = N(z_inv; 0, I_d),  log p(z) = −½‖z‖² − (d/2) log 2π              `log_density`
    s_img ~ N(0, I),  s_txt ~ N(0, I)                                            private nuisances
    x = g_I(z_inv, s_img),  t = g_T(z_inv, s_txt)                                image, caption

p is C^∞ and positive on all of ℝ^d. The layout (a binary variable) and the materials (absent
from the support) are left out: neither has a density. Both generators are `SmoothMixing`:

    g(v) = W_L σ(W_{L−1} … σ(W_1 v)),  W_l the conditioned square matrices of
           `synthetic.mixing.InvertibleMLP` (cond(W_l) ≤ max_cond)
    σ(v) = ½[(1 + α) v + (1 − α)(√(v² + β²) − β)]      α = `slope`, β = `smoothness`
    σ'(v) = ½[(1 + α) + (1 − α) v / √(v² + β²)] ∈ (α, 1)
    σ⁻¹(y) = [(1 + α) y' − (1 − α) √(y'² + 4αβ²)] / (4α),   y' = 2y + (1 − α) β

σ is LeakyReLU(α) with its kink rounded off at scale β (σ → LeakyReLU as β → 0): C^∞, with a
derivative bounded away from 0 and ∞, so each layer and g are diffeomorphisms of ℝ^dim (the
Jacobian W_L diag(σ') … W_1 is invertible everywhere), and σ⁻¹ is the root of the quadratic
2α v² − (1 + α) y' v + (y'² − (1 − α)² β²)/2 = 0 on the branch where v ≤ y'/(1 + α); g⁻¹(y) =
W_1⁻¹ σ⁻¹(W_2⁻¹ … σ⁻¹(W_L⁻¹ y)). InvertibleMLP's LeakyReLU is a bijection but not differentiable
at 0, which is why this world does not reuse it. The generators are drawn from the stream
(seed, "world"); samples from the stream the caller passes (`synthetic.seeding`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from synthetic.mixing import InvertibleMLP
from synthetic.seeding import stream


class SmoothMixing(InvertibleMLP):
    """A random diffeomorphism ℝ^dim → ℝ^dim: InvertibleMLP's weights with the smooth σ of the
    module docstring in place of LeakyReLU, and its closed-form inverse."""

    def __init__(
        self,
        dim: int,
        n_layers: int,
        slope: float = 0.2,
        smoothness: float = 1.0,
        max_cond: float = 25.0,
        generator: torch.Generator | None = None,
    ) -> None:
        if smoothness <= 0:
            raise ValueError(f"smoothness must be positive, got {smoothness}")
        super().__init__(dim, n_layers, slope, max_cond, generator)
        self.smoothness = smoothness

    def activation(self, v: torch.Tensor) -> torch.Tensor:
        """σ(v) = ½[(1 + α) v + (1 − α)(√(v² + β²) − β)]."""
        a, b = self.slope, self.smoothness
        return ((1 + a) * v + (1 - a) * (torch.sqrt(v * v + b * b) - b)) / 2

    def activation_inverse(self, y: torch.Tensor) -> torch.Tensor:
        """σ⁻¹(y) = [(1 + α) y' − (1 − α) √(y'² + 4αβ²)] / (4α), y' = 2y + (1 − α) β."""
        a, b = self.slope, self.smoothness
        shifted = 2 * y + (1 - a) * b
        return ((1 + a) * shifted - (1 - a) * torch.sqrt(shifted * shifted + 4 * a * b * b)) / (
            4 * a
        )

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """g(v) for v of shape [..., dim], in v's dtype."""
        w = self.weights.to(v.dtype)
        for layer in range(len(w)):
            v = v @ w[layer].T
            if layer < len(w) - 1:
                v = self.activation(v)
        return v

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """g⁻¹(y) in closed form, in y's dtype."""
        w = self.weights.to(y.dtype)
        for layer in reversed(range(len(w))):
            if layer < len(w) - 1:
                y = self.activation_inverse(y)
            y = torch.linalg.solve(w[layer], y.T).T
        return y


@dataclass(frozen=True)
class ContinuousTokenConfig:
    """Sizes of the continuous token world; `n_objects`, `shape_dim`, `color_dim`, the nuisance
    sizes, `mixing_layers`, `max_cond` and `seed` mean what they mean in `TokenWorldConfig`."""

    n_objects: int = 4
    shape_dim: int = 2
    color_dim: int = 3
    img_nuisance_dim: int = 2
    txt_nuisance_dim: int = 2
    mixing_layers: int = 2
    max_cond: float = 25.0
    slope: float = field(default=0.2, metadata={"help": "α: σ's slope far below 0 (LeakyReLU's)"})
    smoothness: float = field(
        default=1.0, metadata={"help": "β: the scale over which σ bends (σ → LeakyReLU as β → 0)"}
    )
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_objects < 1 or self.shape_dim < 1 or self.color_dim < 1:
            raise ValueError("n_objects, shape_dim and color_dim must be positive")
        if self.img_nuisance_dim < 0 or self.txt_nuisance_dim < 0 or self.mixing_layers < 1:
            raise ValueError("nuisance sizes must be non-negative and mixing_layers positive")
        if not 0 < self.slope <= 1 or self.smoothness <= 0:
            raise ValueError("slope must lie in (0, 1] and smoothness be positive")


@dataclass
class ContinuousBatch:
    """A sample of the continuous world: images, caption vectors and the latents."""

    x: torch.Tensor  # [n, x_dim]
    t: torch.Tensor  # [n, t_dim]
    z: torch.Tensor  # [n, z_dim] z_inv
    s_img: torch.Tensor
    s_txt: torch.Tensor
    t_neg: None = None  # this world defines no hard negatives


@dataclass
class ContinuousTokenWorld:
    """A seeded instance of `ContinuousTokenConfig` (module docstring)."""

    config: ContinuousTokenConfig
    g_img: SmoothMixing = field(init=False)
    g_txt: SmoothMixing = field(init=False)

    def __post_init__(self) -> None:
        c = self.config
        gen = stream(c.seed, "world")
        options = {"slope": c.slope, "smoothness": c.smoothness, "max_cond": c.max_cond}
        self.g_img = SmoothMixing(self.x_dim, c.mixing_layers, generator=gen, **options)
        self.g_txt = SmoothMixing(self.t_dim, c.mixing_layers, generator=gen, **options)

    @property
    def object_dim(self) -> int:
        return self.config.shape_dim + self.config.color_dim

    @property
    def z_dim(self) -> int:
        """d = n (shape_dim + color_dim): the dimension of z_inv."""
        return self.config.n_objects * self.object_dim

    @property
    def x_dim(self) -> int:
        return self.z_dim + self.config.img_nuisance_dim

    @property
    def t_dim(self) -> int:
        return self.z_dim + self.config.txt_nuisance_dim

    @property
    def text_input(self) -> int:
        """What a text tower reads: the caption vector's size."""
        return self.t_dim

    def log_density(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) = −½‖z‖² − (d/2) log 2π for z [n, z_dim]."""
        return -0.5 * (z * z).sum(-1) - 0.5 * self.z_dim * math.log(2 * math.pi)

    def images(self, z: torch.Tensor, s_img: torch.Tensor) -> torch.Tensor:
        """x = g_I(z_inv, s_img)."""
        return self.g_img(torch.cat([z, s_img], dim=1))

    def captions(self, z: torch.Tensor, s_txt: torch.Tensor) -> torch.Tensor:
        """t = g_T(z_inv, s_txt)."""
        return self.g_txt(torch.cat([z, s_txt], dim=1))

    def sample(self, n: int, gen: torch.Generator) -> ContinuousBatch:
        """n samples drawn from `gen`: z_inv, then s_img, then s_txt, each N(0, I)."""
        c = self.config
        z = torch.randn(n, self.z_dim, generator=gen)
        s_img = torch.randn(n, c.img_nuisance_dim, generator=gen)
        s_txt = torch.randn(n, c.txt_nuisance_dim, generator=gen)
        return ContinuousBatch(self.images(z, s_img), self.captions(z, s_txt), z, s_img, s_txt)

    def targets(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """z_inv as regression targets, named as `TokenWorld.targets` names them: per object slot p
        its shape coordinates ("shape{p}") and colour coordinates ("color{p}")."""
        c, out = self.config, {}
        for p in range(c.n_objects):
            start = p * self.object_dim
            out[f"shape{p}"] = z[:, start : start + c.shape_dim]
            out[f"color{p}"] = z[:, start + c.shape_dim : start + self.object_dim]
        return out
