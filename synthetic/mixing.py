"""Invertible random generators: square LeakyReLU MLPs with conditioned weights.

g(x) = W_L σ(W_{L-1} … σ(W_1 x)), σ = LeakyReLU(slope), every W_l square with entries
uniform(-1, 1), columns normalised to unit norm, resampled until cond(W_l) ≤ max_cond.
Because σ is a bijection of ℝ and each W_l is invertible, g is a bijection with the closed-form
inverse g⁻¹(y) = W_1⁻¹ σ⁻¹(W_2⁻¹ … σ⁻¹(W_L⁻¹ y)).
"""

from __future__ import annotations

import torch


def conditioned_matrix(
    dim: int, generator: torch.Generator, max_cond: float, max_tries: int = 10_000
) -> torch.Tensor:
    """A dim×dim matrix, uniform(-1, 1) entries, unit-norm columns, condition number ≤ max_cond."""
    for _ in range(max_tries):
        w = torch.rand(dim, dim, generator=generator, dtype=torch.float64) * 2 - 1
        w = w / w.norm(dim=0, keepdim=True)
        if torch.linalg.cond(w).item() <= max_cond:
            return w
    raise RuntimeError(f"no {dim}x{dim} matrix with condition number <= {max_cond} found")


class InvertibleMLP(torch.nn.Module):
    """A random bijection ℝ^dim → ℝ^dim (see module docstring); its weights are fixed buffers."""

    def __init__(
        self,
        dim: int,
        n_layers: int = 3,
        slope: float = 0.2,
        max_cond: float = 25.0,
        generator: torch.Generator | None = None,
        rank: int | None = None,
    ) -> None:
        """`rank` < dim makes the first layer rank-deficient (its smallest singular values set to
        zero): a deliberately non-invertible generator, for breaking the assumption on purpose."""
        super().__init__()
        if dim < 1 or n_layers < 1:
            raise ValueError(f"dim and n_layers must be positive, got {dim} and {n_layers}")
        if not 0 < slope <= 1:
            raise ValueError(f"slope must be in (0, 1], got {slope}")
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        weights = [conditioned_matrix(dim, gen, max_cond) for _ in range(n_layers)]
        if rank is not None and rank < dim:
            u, s, vh = torch.linalg.svd(weights[0])
            s[rank:] = 0.0
            weights[0] = u @ torch.diag(s) @ vh
        self.slope = slope
        self.register_buffer("weights", torch.stack(weights))

    @property
    def dim(self) -> int:
        return self.weights.shape[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """y = g(x) for x of shape [..., dim]; computed in x's dtype."""
        w = self.weights.to(x.dtype)
        for layer in range(len(w)):
            x = x @ w[layer].T
            if layer < len(w) - 1:
                x = torch.nn.functional.leaky_relu(x, self.slope)
        return x

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """x = g⁻¹(y); raises if a layer is singular (the rank-deficient construction)."""
        w = self.weights.to(y.dtype)
        for layer in reversed(range(len(w))):
            if layer < len(w) - 1:
                y = torch.where(y >= 0, y, y / self.slope)
            y = torch.linalg.solve(w[layer], y.T).T
        return y
