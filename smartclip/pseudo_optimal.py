"""Pseudo-optimal encoders of the token world (`synthetic.tokens`, `synthetic.token_operators`):
for every trained model, an encoder with exactly its training objective that is blind to the
operators the objective never shows it; the SWAP-blind reading κ; and the per-operator measures
that compare a trained model with them.

The pseudo-optimal encoder of a model g* trained on the support S_0 (ρ = 0) with mined hard
negatives of the operator names N (`smartclip.fit.training_batch`; N = ∅ without mining):

    g**_N = g* ∘ π_N,   π_N(w) = w      if P(w) ∈ P(N)
                               = π(w)   otherwise

P(w) = (D_SWAP, D_REPLACE, D_ADD)(w) is the caption's edit profile (`token_operators.edit_depths`),
P(N) = {(S, R, A) : swap^S∘replace^R∘add^A ∈ N} the profiles of the mined compositions (an
in-vocabulary name adds none) and π = `TokenWorld.repair`. So π_∅ = π; for N the depth-1
primitives π_N = π_1 on every caption, and for N every composition of depth ≤ d, π_N = π_d on every
composition output (`token_operators.repair_beyond`).

    loss   every caption of a training batch lies in S_0 (P = (0, 0, 0), where π is the identity)
           and every mined negative has its profile in P(N): π_N is the identity on every text of
           every training batch, so g**_N and g* give the same features and the same objective,
           L(g**_N; batch) = L(g*; batch), bit for bit
    chance for a composition O whose profile is not in P(N) and c ∈ S_0: π_N(O c) = π(O c) = c,
           so g**_N(O c) = g**_N(c): caption and negative tie, accuracy ½, cos(g**(c), g**(O c)) = 1
    kept   for O with profile in P(N), and for the in-vocabulary operators (their outputs bind as
           S_0 does, where π is the identity), g**_N = g* on caption and negative: g*'s values

In the sentence view a caption is a vector t = g_T(e(scene), s_txt) and π_N acts through g_T⁻¹:
(code, s̃) = g_T⁻¹(t) (float64), the scene is read off the code (nearest table entries), and a row
π_N changes becomes g_T(e(π_N scene), s̃); rows it leaves are returned as they are, so the loss is
still equal bit for bit, but a repaired negative equals its caption only up to the rounding of
g_T⁻¹ (cos = 1 − O(1e-7)), so its ties are not exact.

The SWAP-blind reading κ: κ(w) = w with its colour words sorted by vocabulary index, each sorted
colour in the next position a colour word holds. SWAP (and every composition's SWAP part) only
permutes the colour words among those positions, so κ(SWAP c) = κ(c) for every caption; on S_0 a
colour determines its shape, so the ordered shape words and the set of colours give the caption
back: κ is injective on S_0, and a tower h ∘ κ can reach on S_0 any loss an order-aware tower
reaches while sitting at chance on SWAP. It reads the ordered shape (and relation, material) words
plus an unordered bag of colour words. For ρ > 0 κ merges support captions a SWAP relates, and
h ∘ κ should fall behind. Training h ∘ κ is training h on κ(captions) (`SortedColourWorld`).

Measures of an encoder g on n held-out pairs (x_i, c_i), û_i = f(x_i)/‖f(x_i)‖, t_i = g(c_i), and
per operator name O the negative c'_i = O(c_i) (`token_operators.negatives`) with t'_i = g(c'_i)
and, where O keeps n objects, its image x'_i = g_I(e(O scene_i), s_img,i), û'_i:

    accuracy        (1/n) Σ_i [û_i·t_i > û_i·t'_i] + ½ [û_i·t_i = û_i·t'_i]      chance ½
    image_accuracy  (1/n) Σ_i [t_i·û_i > t_i·û'_i] + ½ [t_i·û_i = t_i·û'_i]      (not object_add)
    text_cosine     (1/n) Σ_i t_i·t'_i                                  hardness, image-free; 1 = g
                                                                        does not see O: the
                                                                        invariance index
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from smartclip.encoders import PrecomposedText, SyntheticCLIP
from smartclip.fit import FitConfig, training_batch
from smartclip.losses import build_objective
from synthetic.mixing import InvertibleMLP
from synthetic.token_operators import (
    IN_VOCABULARY,
    edit_depths,
    negatives,
    parse_composition,
)
from synthetic.tokens import COLORS, OPERATORS, Scene, TokenBatch, TokenWorld

Profile = tuple[int, int, int]
TextMap = Callable[[torch.Tensor], torch.Tensor]
Render = Callable[[Sequence[Scene], torch.Tensor], torch.Tensor]


def profile_of(name: str) -> Profile:
    """(S, R, A) of a composition's name ("swap^2∘add" → (2, 0, 1)); (0, 0, 0) for an
    in-vocabulary operator."""
    if name in IN_VOCABULARY:
        return (0, 0, 0)
    power = dict(parse_composition(name))
    s, r, a = (power.get(op, 0) for op in OPERATORS)
    return (s, r, a)


def kept_profiles(mined: Sequence[str]) -> frozenset[Profile]:
    """P(N): the profiles of the mined compositions (in-vocabulary names add none)."""
    return frozenset(profile_of(n) for n in mined if n not in IN_VOCABULARY)


def blind_to(name: str, mined: Sequence[str]) -> bool:
    """Whether g**_N sits at chance on `name` by construction: a composition whose profile is not
    in P(N)."""
    return name not in IN_VOCABULARY and profile_of(name) not in kept_profiles(mined)


def repair_outside(world: TokenWorld, words: Sequence[str], kept: frozenset[Profile]) -> list[str]:
    """π_N: the caption itself if its edit profile is in `kept`, else π of it."""
    profile = edit_depths(world, words)
    if tuple(profile[op] for op in OPERATORS) in kept:
        return list(words)
    return world.repair(words)


def decode_scenes(world: TokenWorld, code: torch.Tensor) -> list[Scene]:
    """The scenes whose codes e(scene) (`TokenWorld.code`) lie nearest `code` [n, code_dim]: per
    object slot the nearest shape, colour and material entries of `world.tables`, the layout
    rounded (style 0: the code does not hold the relation word)."""
    c, t = world.config, world.tables
    width = c.shape_dim + c.color_dim + 1
    per_slot = code[:, :-1].reshape(len(code), c.n_objects, width).to(t["shape"].dtype)

    def nearest(part: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        return torch.cdist(part, table.expand(len(part), *table.shape)).argmin(-1)

    shapes = nearest(per_slot[..., : c.shape_dim], t["shape"])
    colors = nearest(per_slot[..., c.shape_dim : width - 1], t["color"])
    materials = nearest(per_slot[..., width - 1 :], t["material"]) - 1
    layouts = code[:, -1].round().clamp(0, 1).long()
    return [
        Scene(tuple(s.tolist()), tuple(col.tolist()), tuple(m.tolist()), int(lay))
        for s, col, m, lay in zip(shapes, colors, materials, layouts, strict=True)
    ]


def repair_through(
    world: TokenWorld,
    generator: InvertibleMLP,
    render: Render,
    kept: frozenset[Profile] = frozenset(),
) -> TextMap:
    """π_N through an invertible generator on a batch of its outputs [n, dim]: (code, s̃) =
    generator⁻¹(y) in float64, the scene read off the code, and the rows whose caption π_N
    changes (`repair_outside`; π itself for `kept` = ∅) rendered again as render(π_N scene, s̃);
    the other rows are returned as they are (bit for bit)."""

    def apply(y: torch.Tensor) -> torch.Tensor:
        latent = generator.inverse(y.double())
        nuisance = latent[:, world.code_dim :].to(y.dtype)
        out = y.clone()
        rows, scenes = [], []
        for i, scene in enumerate(decode_scenes(world, latent[:, : world.code_dim])):
            words = world.caption(scene)
            repaired = repair_outside(world, words, kept)
            if repaired != words:
                rows.append(i)
                scenes.append(world.parse(repaired))
        if rows:
            out[rows] = render(scenes, nuisance[rows])
        return out

    return apply


def repair_texts(world: TokenWorld, kept: frozenset[Profile]) -> TextMap:
    """π_N on a batch of the world's text inputs: token ids row by row, or sentence vectors
    through g_T⁻¹ (`repair_through`; rows π_N leaves are returned as they are)."""

    def on_ids(ids: torch.Tensor) -> torch.Tensor:
        return world.token_ids([repair_outside(world, world.words(row), kept) for row in ids])

    if world.config.view == "tokens":
        return on_ids
    return repair_through(world, world.g_txt, world.sentences, kept)


def sorted_colour_ids(world: TokenWorld) -> TextMap:
    """κ on a batch of token ids [..., L] (module docstring): in each row the colour ids, sorted,
    fill the positions colour ids hold, in order."""
    is_colour = torch.tensor([w in COLORS for w in world.vocab])

    def apply(ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1, ids.shape[-1])
        colour = is_colour[flat]
        ascending = torch.where(colour, flat, len(world.vocab)).sort(1).values
        rank = (colour.long().cumsum(1) - 1).clamp_min(0)
        return torch.where(colour, ascending.gather(1, rank), flat).view_as(ids)

    return apply


@dataclass
class SortedColourWorld(TokenWorld):
    """The token world whose captions are read through κ: a tower trained on it is h ∘ κ, the
    SWAP-blind tower (module docstring). Token view only."""

    def __post_init__(self) -> None:
        if self.config.view != "tokens":
            raise ValueError("κ sorts colour words: it needs the token view")
        super().__post_init__()
        self._sort = sorted_colour_ids(self)

    def captions(self, scenes: Sequence[Scene], s_txt: torch.Tensor) -> torch.Tensor:
        return self._sort(super().captions(scenes, s_txt))


def reader(model: SyntheticCLIP, world: TokenWorld, swap_blind: bool) -> torch.nn.Module:
    """g* as it reads the world's plain captions: the model, or model ∘ κ for a tower trained on
    `SortedColourWorld`."""
    return PrecomposedText(model, sorted_colour_ids(world)) if swap_blind else model


def pseudo_optimal(
    model: SyntheticCLIP, world: TokenWorld, mined: Sequence[str], swap_blind: bool = False
) -> PrecomposedText:
    """g**_N = g* ∘ π_N for a model trained with the mined names N (κ ∘ π_N for the SWAP-blind
    tower)."""
    repair = repair_texts(world, kept_profiles(mined))
    if not swap_blind:
        return PrecomposedText(model, repair)
    sort = sorted_colour_ids(world)
    return PrecomposedText(model, lambda t: sort(repair(t)))


@torch.no_grad()
def training_objective(
    model: torch.nn.Module, world: TokenWorld, cfg: FitConfig, steps: Sequence[int]
) -> float:
    """(1/|steps|) Σ_s L(model; B_s): the objective `fit` minimises (`cfg.objective` with its
    weights) on the training batches B_s = `training_batch(world, cfg, s)` of the given steps,
    mined negatives included."""
    objective = build_objective(
        cfg.objective,
        weights=cfg.loss_weights,
        sparsity=cfg.sparsity,
        norm_floor=cfg.mask_norm_floor,
    )
    values = []
    for step in steps:
        batch = training_batch(world, cfg, step)
        out = objective(model(batch.x, batch.t, batch.t_neg), model.logit_scale)
        values.append(out.total.item())
    return float(np.mean(values))


def share_right(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """Share of pairs with positive > negative similarity, ties counting half."""
    return float(((positive > negative).float() + 0.5 * (positive == negative).float()).mean())


Negatives = dict[str, tuple[torch.Tensor, torch.Tensor | None]]


@torch.no_grad()
def operator_negatives(
    world: TokenWorld,
    batch: TokenBatch,
    names: Sequence[str],
    gen: torch.Generator,
    image_side: bool = True,
) -> Negatives:
    """Per operator name, drawn from `gen` in name order: the negative captions O(c_i) [n, ...]
    and (with `image_side`, not for object_add) their images x'_i with each row's image nuisance."""
    out: Negatives = {}
    for name in names:
        scenes = negatives(world, batch.scenes, [name] * len(batch.scenes), gen)
        t_neg = world.negative_captions(batch, [[s] for s in scenes])[:, 0]
        keep = image_side and name != "object_add"
        out[name] = (t_neg, world.images(scenes, batch.s_img) if keep else None)
    return out


@torch.no_grad()
def operator_scores(model: torch.nn.Module, batch: TokenBatch, negs: Negatives) -> list[dict]:
    """accuracy, text_cosine and, where a negative image exists, image_accuracy of every operator
    name of `negs` on `batch` (module docstring), as rows {quantity, block: name, value}."""
    u = F.normalize(model.encode_image(batch.x), dim=-1)
    t = model.encode_text(batch.t)[0]
    rows = []
    for name, (captions, images) in negs.items():
        t_neg = model.encode_text(captions)[0]
        values = {
            "accuracy": share_right((u * t).sum(1), (u * t_neg).sum(1)),
            "text_cosine": float((t * t_neg).sum(1).mean()),
        }
        if images is not None:
            u_neg = F.normalize(model.encode_image(images), dim=-1)
            values["image_accuracy"] = share_right((t * u).sum(1), (t * u_neg).sum(1))
        rows += [{"quantity": q, "block": name, "value": v} for q, v in values.items()]
    return rows
