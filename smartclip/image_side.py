"""Claim 4 of arXiv 2510.26302 (the text-side failure reaches the image side through the modality
gap) on the token world (`synthetic.tokens`): the image-side pseudo-optimal encoder f**, what an
operated image is as a negative, an imposed shift between the modalities, and whether the two
sides' errors line up. The text side is `smartclip.pseudo_optimal`.

The image-side pseudo-optimal encoder of a model with image tower f* trained on S_0 (ρ = 0):

    f** = f* ∘ π_I,   π_I(x) = x                      if π(w) = w
                               = g_I(e(π(w)), s̃)       otherwise
    (code, s̃) = g_I⁻¹(x) in float64, w = the caption of the scene read off the code (nearest
    table entries, `pseudo_optimal.decode_scenes`), π = `TokenWorld.repair` (`repair_through`);
    so π_I = g_I ∘ π ∘ g_I⁻¹ with the rows π leaves returned as they are

    loss   every training image is g_I(e(scene), s) with scene ∈ S_0, which decodes to itself
           and where π is the identity: π_I returns the batch's own tensor values, so f** and
           f* give the same features and the same objective, L(f**; B) = L(f*; B), bit for bit,
           mined text negatives included (they reach only the text tower; the image side of the
           objective sees no operated image, so text-side mining does not constrain f** at all)
    chance for O a composition of the primitives and x' = g_I(e(O scene), s):
           π_I(x') = g_I(e(scene), s̃) with s̃ = s up to the rounding of g_I⁻¹ (about 2e-5
           in float32 on the default world), so f**(x') = f*(x) up to that rounding: the image
           side ties, t·û = t·û', up to rounding, not bitwise (as the sentence view's g** does)
    kept   the in-vocabulary operators map S_0 to S_0, where π_I is the identity: f** = f*
    at ρ > 0 π is not the identity on the off-palette scenes of S_ρ, so neither is π_I, and
           f** is not loss-equivalent, as g** is not: f** is built at ρ = 0

What an operated image is. A caption w asserts the attributes it names of the objects it names,
in order (the world's semantics, `satisfies`); with (c_p, m_p, s_p), p < k, and the layout ℓ
parsed from w (`TokenWorld.parse`; m_p = none where w names no material):

    w ⊨ scene  ⇔  k = #objects(scene), ℓ = layout(scene), and for every p:
                  colour_p = c_p, shape_p = s_p, and material_p = m_p wherever m_p ≠ none

A caption names no material it does not mention, so an ADD image (materials given to objects,
nothing else changed) satisfies the original caption: it is a second image of the caption, not a
negative, and the image-side comparison t·û vs t·û' has no right answer there. Every composition
with SWAP or REPLACE in it, and every in-vocabulary output with an image, is false of the
caption; on the text side every negative caption is false of the original image (ADD's names a
material the image lacks). The measures below count an image-side item only where the negative
image is false of the caption (`false_of_caption`), and report the share that is.

The modality gap and an imposed shift. With û = f(x)/‖f(x)‖ and t̂ the text embedding:

    gap(û, t̂)  = ‖mean_i û_i − mean_i t̂_i‖                                   `modality_gap`
    f_c(x)     = f(x) + c, normalised after the shift: û_c = (f(x) + c)/‖f(x) + c‖   `MappedImage`
    c(λ)       = λ · mean_i ‖f(x_i)‖ · d,  d = (mean t̂ − mean û)/‖mean t̂ − mean û‖   `gap_shift`

λ > 0 moves the image cone toward the text cone (the gap first shrinks), λ < 0 away from it; λ
is in units of the mean image-embedding norm. The logit scale is a training setting
(`FitConfig.logit_scale`, `learn_logit_scale`): accuracies are comparisons of cosines, unchanged
by it; it changes the gap training leaves.

Do the errors line up. Per operator O, over the items R_O whose negative image is false of the
caption, with text-side win a_i = w(û_i·t_i, û_i·t'_i) and image-side win b_i = w(t_i·û_i,
t_i·û'_i), w(p, n) = 1 if p > n, ½ if p = n, 0 if p < n (`item_wins`):

    side_agreement         1 − mean_{R_O} |a_i − b_i|       1: the sides win and lose on the same
                                                            items (a tie counts as a state)
    side_agreement_chance  ā b̄ + (1 − ā)(1 − b̄)             what independent sides with these
                                                            accuracies would agree
    side_correlation       Pearson(a, b) over R_O           NaN when a side is constant
    operator_correlation   Pearson over operators O of (ā_O, b̄_O): per operator, not per item
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from smartclip.losses import Features
from smartclip.pseudo_optimal import Negatives, decode_scenes, repair_through
from synthetic.tokens import Scene, TokenBatch, TokenWorld

ImageMap = Callable[[torch.Tensor], torch.Tensor]


def repair_images(world: TokenWorld) -> ImageMap:
    """π_I = g_I ∘ π ∘ g_I⁻¹ on a batch of images (module docstring)."""
    return repair_through(world, world.g_img, world.images)


class MappedImage(nn.Module):
    """f'(x) = f(m(x)) + c: the wrapped model (a `SyntheticCLIP` or a `PrecomposedText`) with
    every image first mapped by m (`image_map`; π_I for f**) and a fixed vector c (`shift`)
    added to its unnormalised image embedding, so that û = (f(m(x)) + c)/‖f(m(x)) + c‖; texts
    are read as the wrapped model reads them."""

    def __init__(
        self,
        model: nn.Module,
        image_map: ImageMap | None = None,
        shift: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.model, self.image_map = model, image_map
        self.register_buffer("shift", shift)  # None: nothing added, not even a zero
        self.masknet = model.masknet

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale

    def _map(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.image_map is None else self.image_map(x)

    def _shift(self, u: torch.Tensor) -> torch.Tensor:
        return u if self.shift is None else u + self.shift

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return self._shift(self.model.encode_image(self._map(x)))

    def encode_text(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.encode_text(t)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, t_neg: torch.Tensor | None = None
    ) -> Features:
        out = self.model(self._map(x), t, t_neg)
        out.u = self._shift(out.u)
        return out


def image_pseudo_optimal(model: nn.Module, world: TokenWorld) -> MappedImage:
    """f** = f* ∘ π_I with the wrapped model's text side: pass g* for (f**, g*), or
    `pseudo_optimal.pseudo_optimal(...)` for (f**, g**_N)."""
    return MappedImage(model, repair_images(world))


def modality_gap(u: torch.Tensor, t: torch.Tensor) -> float:
    """‖mean û − mean t̂‖ of image embeddings u and text embeddings t (both normalised here)."""
    return float((F.normalize(u, dim=-1).mean(0) - F.normalize(t, dim=-1).mean(0)).norm())


@torch.no_grad()
def gap_shift(model: nn.Module, batch: TokenBatch, lam: float) -> torch.Tensor:
    """c(λ) = λ · mean ‖f(x)‖ · d, d the unit vector from mean û to mean t̂ on `batch`."""
    u = model.encode_image(batch.x)
    t = model.encode_text(batch.t)[0]
    d = F.normalize(t.mean(0) - F.normalize(u, dim=-1).mean(0), dim=0)
    return lam * u.norm(dim=-1).mean() * d


def satisfies(world: TokenWorld, words: Sequence[str], scene: Scene) -> bool:
    """w ⊨ scene: the caption's objects, layout, colours and shapes are the scene's, and so is
    every material it names (module docstring)."""
    said = world.parse(words)
    return (
        len(said.shapes) == len(scene.shapes)
        and said.layout == scene.layout
        and said.shapes == scene.shapes
        and said.colors == scene.colors
        and all(m < 0 or m == own for m, own in zip(said.materials, scene.materials, strict=True))
    )


def false_of_caption(world: TokenWorld, batch: TokenBatch, images: torch.Tensor) -> torch.Tensor:
    """[n] bool: whether row i's caption is false of the scene of `images[i]` (read through
    g_I⁻¹ and the tables), i.e. whether the image is a real negative of the caption."""
    latent = world.g_img.inverse(images.double())[:, : world.code_dim]
    scenes = decode_scenes(world, latent)
    return torch.tensor(
        [
            not satisfies(world, world.caption(own), seen)
            for own, seen in zip(batch.scenes, scenes, strict=True)
        ]
    )


def item_wins(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """w per item: 1 where positive > negative, ½ where equal, 0 where smaller."""
    return (positive > negative).float() + 0.5 * (positive == negative).float()


def side_agreement(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """side_agreement, side_agreement_chance and side_correlation of two sides' wins a and b on
    the same items (module docstring)."""
    a_np, b_np = a.double().numpy(), b.double().numpy()
    mean_a, mean_b = a_np.mean(), b_np.mean()
    constant = a_np.std() == 0 or b_np.std() == 0
    return {
        "side_agreement": float(1 - np.abs(a_np - b_np).mean()),
        "side_agreement_chance": float(mean_a * mean_b + (1 - mean_a) * (1 - mean_b)),
        "side_correlation": float("nan") if constant else float(np.corrcoef(a_np, b_np)[0, 1]),
    }


@torch.no_grad()
def side_scores(
    model: nn.Module, world: TokenWorld, batch: TokenBatch, negs: Negatives
) -> list[dict]:
    """Per operator name of `negs` with negative images, as rows {quantity, block: name, value}:
    image_negative_share (the share of items whose negative image is false of the caption),
    image_cosine (1/n) Σ û_i·û'_i over all items (the image side's invariance index), and over
    the items R_O with a real negative image, where there are any: real_text_accuracy and
    real_image_accuracy (the means of a and b), side_agreement, side_agreement_chance,
    side_correlation; then one row operator_correlation (block "") over the names with R_O ≠ ∅
    (NaN below 2 names, or where a side's accuracy is the same for all)."""
    u = F.normalize(model.encode_image(batch.x), dim=-1)
    t = model.encode_text(batch.t)[0]
    rows, per_operator = [], []
    for name, (captions, images) in negs.items():
        if images is None:
            continue
        u_neg = F.normalize(model.encode_image(images), dim=-1)
        real = false_of_caption(world, batch, images)
        values = {
            "image_negative_share": float(real.float().mean()),
            "image_cosine": float((u * u_neg).sum(1).mean()),
        }
        if real.any():
            t_neg = model.encode_text(captions)[0]
            a = item_wins((u * t).sum(1), (u * t_neg).sum(1))[real]
            b = item_wins((t * u).sum(1), (t * u_neg).sum(1))[real]
            values |= {
                "real_text_accuracy": float(a.mean()),
                "real_image_accuracy": float(b.mean()),
            }
            values |= side_agreement(a, b)
            per_operator.append((values["real_text_accuracy"], values["real_image_accuracy"]))
        rows += [{"quantity": q, "block": name, "value": v} for q, v in values.items()]
    pairs = np.array(per_operator).reshape(-1, 2)
    flat = len(pairs) < 2 or (pairs.std(0) == 0).any()
    across = float("nan") if flat else float(np.corrcoef(pairs.T)[0, 1])
    return rows + [{"quantity": "operator_correlation", "block": "", "value": across}]
