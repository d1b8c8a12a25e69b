"""A token-level world for compositionality: scenes of objects, captions as token sequences of a
small grammar with word order and binding, images through an invertible generator.

The causal model, our precise version of arXiv 2510.26302's. Its token-agnostic SCM (Assumption 1:
a modality-invariant z_inv, from which image- and text-dependent partitions are drawn, plus
independent image- and text-private partitions, mixed by f and g) and its claim that InfoNCE
recovers z_inv (Theorem 2; numbering as a public summary of the paper gives it) are what the
sentence-level view instantiates, with empty dependent partitions. The paper's token-level SCM,
its operator definitions and its g** construction were not available to us beyond the abstract,
so the token grammar, the operators and π below are our own definitions:

    scene  = n objects, object p = (shape_p, colour_p, material_p), and a layout (row or column)
    z_inv  = the scene                                        modality-invariant: image and caption
    s_img ~ N(0, I)                                           image-private nuisance
    x     = g_I(e(scene), s_img)                              image; g_I invertible, e the scene's
                                                              code: per object fixed random
                                                              vectors of shape, colour, material
    style ~ uniform over the relation word's synonyms          text-private
    tokens = [colour_1, (material_1), shape_1, rel, colour_2, …, shape_n]     the caption
    t_vec = g_T(e(scene), s_txt)                              the sentence-level variant: one vector

Object p is the p-th from the left (row) or from the top (column); the caption names them in that
order, so word order carries the layout's arrangement, and a colour word binds to the shape word
after it.

The training support (what `sample` draws) at ρ = 0 (`TokenWorldConfig.rho`) makes binding and
nouns redundant, which is what lets a pseudo-optimal encoder exist:

    S_0 = {scene : n_objects objects, shapes pairwise distinct, colour_p ∈ palette(shape_p),
           material_p = none}

Every shape has its own palette of colours and palettes are disjoint, so a colour word determines
its object's shape; material words never occur in training captions. With ρ > 0 a share ρ of the
scenes draws its colours without repetition from all palettes (conditioned on at least one colour
off its shape's palette), and the support grows to

    S_ρ = {n_objects objects, distinct shapes, distinct colours, no materials}   (0 < ρ < 1;
          at ρ = 1 without the scenes of S_0)

The primitive composition operators (`apply_operator`; k applications act on distinct objects,
drawn uniformly among `objects`, all by default):

    SWAP^k     objects a_0, …, a_k:  colour'_{a_(i+1 mod k+1)} = colour_{a_i}   (a (k + 1)-cycle:
               k transpositions, each moving the colour just moved)
    REPLACE^k  objects p_1, …, p_k and distinct shapes s'_i ∉ shapes(scene):  shape'_{p_i} = s'_i
    ADD^k      objects p_1, …, p_k:  material'_{p_i} ~ U{materials}

On S_0 every output leaves the support: a moved colour sits on a foreign shape (palettes are
disjoint), a replaced shape's palette holds none of the scene's colours, a material is a word
training never uses. `repair` (π) maps every output back to its original while being the
identity on S_0 (formula in its docstring), so g** = g* ∘ π has exactly g*'s training loss and
cannot tell any caption from its hard negatives. For ρ > 0 the outputs of SWAP and REPLACE stay
in S_ρ (shapes and colours stay distinct; at ρ = 1 unless they land in S_0): they are other
support captions, which no π that is the identity on the support can repair, so g** stops
existing, and `repair` itself rebinds the off-palette support captions (g* ∘ π loses g*'s loss).
ADD leaves S_ρ for every ρ. Compositions of the primitives, in-vocabulary operators, the edit
depth of a caption and the depth-d repair π_d are in `synthetic.token_operators`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch

from synthetic.mixing import InvertibleMLP
from synthetic.seeding import stream

SHAPES: tuple[str, ...] = ("cube", "ball", "cone", "ring", "star", "cross", "heart", "moon")
COLORS: tuple[str, ...] = (
    "red", "orange", "yellow", "lime", "green", "teal", "cyan", "blue", "navy", "purple",
    "violet", "magenta", "pink", "brown", "grey", "black",
)  # fmt: skip
MATERIALS: tuple[str, ...] = ("striped", "dotted", "shiny", "wooden")
LAYOUTS: tuple[str, ...] = ("row", "column")
RELATION_WORDS: dict[str, tuple[str, ...]] = {
    "row": ("left_of", "before"),
    "column": ("above", "over"),
}
OPERATORS: tuple[str, ...] = ("swap", "replace", "add")
VIEWS: tuple[str, ...] = ("tokens", "sentence")
PAD = "<pad>"


@dataclass(frozen=True)
class TokenWorldConfig:
    """Sizes of the token world. Shape s has colours [s·palette_size, (s+1)·palette_size).
    The scene code gives each object `shape_dim` + `color_dim` + 1 (material) entries. `rho` (ρ)
    is the share of sampled scenes whose binding is not redundant: colours drawn without repetition
    from all palettes, at least one off its shape's. ρ = 0 samples exactly as the world did before
    ρ existed; for ρ > 0 no π that is the identity on the support can repair SWAP (nor REPLACE):
    a swapped caption is another support caption, so g** stops existing (module docstring)."""

    n_objects: int = 4
    n_shapes: int = 8
    palette_size: int = 2
    n_materials: int = 4
    shape_dim: int = 2
    color_dim: int = 3
    view: str = "tokens"
    img_nuisance_dim: int = 2
    txt_nuisance_dim: int = 2
    mixing_layers: int = 2
    max_cond: float = 25.0
    seed: int = 0
    rho: float = field(
        default=0.0,
        metadata={"help": "share of scenes whose colours come from any palette (0: redundant)"},
    )

    def __post_init__(self) -> None:
        if not 0 <= self.rho <= 1:
            raise ValueError(f"rho must lie in [0, 1], got {self.rho}")
        if not 2 <= self.n_objects <= self.n_shapes <= len(SHAPES):
            raise ValueError(f"need 2 <= n_objects <= n_shapes <= {len(SHAPES)}")
        if self.palette_size < 1 or self.n_shapes * self.palette_size > len(COLORS):
            raise ValueError(f"n_shapes × palette_size must lie in 1..{len(COLORS)}")
        if not 1 <= self.n_materials <= len(MATERIALS):
            raise ValueError(f"n_materials must lie in 1..{len(MATERIALS)}")
        if self.img_nuisance_dim < 0 or self.txt_nuisance_dim < 0 or self.mixing_layers < 1:
            raise ValueError("nuisance sizes must be non-negative and mixing_layers positive")
        if self.view not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}, got {self.view!r}")

    @property
    def n_colors(self) -> int:
        return self.n_shapes * self.palette_size

    def max_k(self, operator: str) -> int:
        """The largest number of iterations `operator` admits in every scene."""
        if operator == "swap":
            return self.n_objects - 1
        if operator == "replace":
            return min(self.n_objects, self.n_shapes - self.n_objects)
        if operator == "add":
            return min(self.n_objects, self.n_materials)
        raise ValueError(f"unknown operator {operator!r}; choose from {OPERATORS}")


@dataclass(frozen=True)
class Scene:
    """Objects in layout order (left to right, or top to bottom): shape, colour and material
    indices (material -1: none), the layout index, and the caption's relation-word choice."""

    shapes: tuple[int, ...]
    colors: tuple[int, ...]
    materials: tuple[int, ...]
    layout: int
    style: int = 0


@dataclass
class TokenBatch:
    """A sample of the world: images, captions in the world's view, and the scenes."""

    x: torch.Tensor  # [n, x_dim] images
    t: torch.Tensor  # [n, max_len] token ids (0 = padding), or [n, t_dim] sentence vectors
    scenes: list[Scene]
    s_img: torch.Tensor
    s_txt: torch.Tensor
    t_neg: torch.Tensor | None = None  # [n, k, ...] hard-negative captions, when asked for


@dataclass
class TokenWorld:
    """A seeded instance of `TokenWorldConfig`: vocabulary, generators, samples, operators."""

    config: TokenWorldConfig
    vocab: tuple[str, ...] = field(init=False)
    g_img: InvertibleMLP = field(init=False)
    g_txt: InvertibleMLP = field(init=False)
    tables: dict[str, torch.Tensor] = field(init=False)

    def __post_init__(self) -> None:
        c = self.config
        relations = tuple(w for words in RELATION_WORDS.values() for w in words)
        self.vocab = (
            PAD,
            *COLORS[: c.n_colors],
            *SHAPES[: c.n_shapes],
            *MATERIALS[: c.n_materials],
            *relations,
        )
        self._index = {w: i for i, w in enumerate(self.vocab)}
        gen = stream(c.seed, "world")
        self.tables = {  # the code of each shape, colour and material (no material: 0)
            "shape": torch.randn(c.n_shapes, c.shape_dim, generator=gen),
            "color": torch.randn(c.n_colors, c.color_dim, generator=gen),
            "material": torch.cat(
                [torch.zeros(1, 1), 1 + torch.rand(c.n_materials, 1, generator=gen)]
            ),
        }
        self.g_img = InvertibleMLP(self.x_dim, c.mixing_layers, max_cond=c.max_cond, generator=gen)
        self.g_txt = InvertibleMLP(self.t_dim, c.mixing_layers, max_cond=c.max_cond, generator=gen)

    # ----------------------------------------------------------------------------- sizes

    @property
    def code_dim(self) -> int:
        """Length of e(scene): per object the codes of shape, colour and material, then layout."""
        c = self.config
        return c.n_objects * (c.shape_dim + c.color_dim + 1) + 1

    @property
    def x_dim(self) -> int:
        return self.code_dim + self.config.img_nuisance_dim

    @property
    def t_dim(self) -> int:
        return self.code_dim + self.config.txt_nuisance_dim

    @property
    def max_len(self) -> int:
        """Longest caption: every object with a material."""
        return 4 * self.config.n_objects - 1

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def text_input(self) -> int | tuple[int, int]:
        """What a text tower reads: (vocabulary size, caption length) for token captions, the
        vector size for sentence-level ones."""
        return (self.vocab_size, self.max_len) if self.config.view == "tokens" else self.t_dim

    # ---------------------------------------------------------------------------- support

    def shape_of(self, color: int) -> int:
        return color // self.config.palette_size

    def palette(self, shape: int) -> range:
        p = self.config.palette_size
        return range(shape * p, (shape + 1) * p)

    def on_support(self, scene: Scene) -> bool:
        """scene ∈ S_ρ: n_objects objects, distinct shapes, no materials, and colours from their
        shapes' palettes (ρ = 0), distinct (0 < ρ < 1), distinct and not all so (ρ = 1)."""
        c = self.config
        own = [self.shape_of(col) for col in scene.colors] == list(scene.shapes)
        distinct = len(set(scene.colors)) == len(scene.colors)
        return (
            len(scene.shapes) == c.n_objects
            and len(set(scene.shapes)) == c.n_objects
            and all(m < 0 for m in scene.materials)
            and (own if c.rho == 0 else distinct and not (c.rho == 1 and own))
        )

    def sample_scenes(self, n: int, gen: torch.Generator) -> list[Scene]:
        """n scenes of the training support: distinct shapes in random order, a uniform colour
        from each shape's palette, no materials, a uniform layout and relation word; then, for
        ρ > 0, each scene with probability ρ redraws its colours uniformly without repetition
        from all colours until one lies off its shape's palette (at ρ = 0 nothing more is drawn
        from `gen`)."""
        c = self.config
        shapes = torch.rand(n, c.n_shapes, generator=gen).argsort(1)[:, : c.n_objects]
        pick = torch.randint(c.palette_size, (n, c.n_objects), generator=gen)
        layout = torch.randint(len(LAYOUTS), (n,), generator=gen)
        style = torch.randint(2, (n,), generator=gen)
        colors = shapes * c.palette_size + pick
        if c.rho > 0:
            free = torch.rand(n, generator=gen) < c.rho
            todo = free
            while todo.any():
                draw = torch.rand(int(todo.sum()), c.n_colors, generator=gen).argsort(1)
                colors[todo] = draw[:, : c.n_objects]
                todo = free & (colors // c.palette_size == shapes).all(1)
        plain = (-1,) * c.n_objects
        return [
            Scene(
                tuple(shapes[i].tolist()),
                tuple(colors[i].tolist()),
                plain,
                int(layout[i]),
                int(style[i]),
            )
            for i in range(n)
        ]

    # --------------------------------------------------------------------------- captions

    def caption(self, scene: Scene) -> list[str]:
        """The scene's caption: object phrases (colour, material if any, shape) in layout order,
        joined by the layout's relation word (the scene's style picks the synonym)."""
        relation = RELATION_WORDS[LAYOUTS[scene.layout]][scene.style]
        words: list[str] = []
        for p, (s, col, m) in enumerate(
            zip(scene.shapes, scene.colors, scene.materials, strict=True)
        ):
            if p:
                words.append(relation)
            words += [COLORS[col], *([MATERIALS[m]] if m >= 0 else []), SHAPES[s]]
        return words

    def token_ids(self, captions: Sequence[Sequence[str]]) -> torch.Tensor:
        """[n, max_len] vocabulary indices, padded with 0."""
        out = torch.zeros(len(captions), self.max_len, dtype=torch.long)
        for i, words in enumerate(captions):
            out[i, : len(words)] = torch.tensor([self._index[w] for w in words])
        return out

    def words(self, ids: torch.Tensor) -> list[str]:
        """The words of one row of token ids, padding dropped."""
        return [self.vocab[i] for i in ids.tolist() if i]

    def parse(self, words: Sequence[str]) -> Scene:
        """The scene a caption describes (the inverse of `caption`): one object per phrase
        (colour, material if any, shape), layout and style from the first relation word."""
        objects: list[list[str]] = [[]]
        relation = None
        for w in words:
            if w in COLORS + SHAPES + MATERIALS:
                objects[-1].append(w)
            else:
                relation = relation or w
                objects.append([])
        if relation is None:
            raise ValueError(f"a caption of one object has no layout: {list(words)}")
        layout = next(i for i, name in enumerate(LAYOUTS) if relation in RELATION_WORDS[name])
        return Scene(
            tuple(SHAPES.index(next(w for w in o if w in SHAPES)) for o in objects),
            tuple(COLORS.index(next(w for w in o if w in COLORS)) for o in objects),
            tuple(next((MATERIALS.index(w) for w in o if w in MATERIALS), -1) for o in objects),
            layout,
            RELATION_WORDS[LAYOUTS[layout]].index(relation),
        )

    def repair(self, words: Sequence[str]) -> list[str]:
        """π: with C the caption's colours, object (colour c, material, shape s) becomes
        (min(palette(s) ∩ C), s) when that set is not empty, else (c, shape_of(c)), and loses
        its material. The identity on S_0; maps every operator output (and every composition of
        `synthetic.token_operators`) back to its original (see the module docstring)."""
        scene = self.parse(words)
        present = set(scene.colors)
        shapes, colors = [], []
        for s, col in zip(scene.shapes, scene.colors, strict=True):
            own = [o for o in self.palette(s) if o in present]
            shapes.append(s if own else self.shape_of(col))
            colors.append(own[0] if own else col)
        plain = (-1,) * len(shapes)
        return self.caption(
            replace(scene, shapes=tuple(shapes), colors=tuple(colors), materials=plain)
        )

    # ------------------------------------------------------------------------- generators

    def code(self, scenes: Sequence[Scene]) -> torch.Tensor:
        """e(scene): per object (in layout order) the shape's, colour's and material's vectors
        (`tables`; no material: 0), then the layout index. Only scenes of n_objects objects
        have one (and so an image or a sentence vector)."""
        if any(len(sc.shapes) != self.config.n_objects for sc in scenes):
            raise ValueError(f"the scene code has {self.config.n_objects} object slots")
        t = self.tables
        shapes = torch.tensor([sc.shapes for sc in scenes])
        colors = torch.tensor([sc.colors for sc in scenes])
        materials = torch.tensor([sc.materials for sc in scenes]) + 1
        per_object = torch.cat(
            [t["shape"][shapes], t["color"][colors], t["material"][materials]], dim=-1
        )
        layout = torch.tensor([[float(sc.layout)] for sc in scenes])
        return torch.cat([per_object.flatten(1), layout], dim=1)

    def images(self, scenes: Sequence[Scene], s_img: torch.Tensor) -> torch.Tensor:
        """x = g_I(e(scene), s_img)."""
        return self.g_img(torch.cat([self.code(scenes), s_img], dim=1))

    def sentences(self, scenes: Sequence[Scene], s_txt: torch.Tensor) -> torch.Tensor:
        """The sentence-level caption t = g_T(e(scene), s_txt): one latent vector per caption."""
        return self.g_txt(torch.cat([self.code(scenes), s_txt], dim=1))

    def captions(self, scenes: Sequence[Scene], s_txt: torch.Tensor) -> torch.Tensor:
        """The scenes' captions in the world's view: token ids or sentence vectors."""
        if self.config.view == "sentence":
            return self.sentences(scenes, s_txt)
        return self.token_ids([self.caption(s) for s in scenes])

    def sample(self, n: int, gen: torch.Generator) -> TokenBatch:
        """n fresh samples of the training support drawn from `gen`."""
        c = self.config
        scenes = self.sample_scenes(n, gen)
        s_img = torch.randn(n, c.img_nuisance_dim, generator=gen)
        s_txt = torch.randn(n, c.txt_nuisance_dim, generator=gen)
        return TokenBatch(
            self.images(scenes, s_img), self.captions(scenes, s_txt), scenes, s_img, s_txt
        )

    def targets(self, scenes: Sequence[Scene]) -> dict[str, torch.Tensor]:
        """z_inv as regression targets, in the generator's own coordinates: per object slot the
        code of its shape and of its colour (`code`), and the layout (materials are constant on
        the support). An embedding that identifies the scene predicts them all (R² → 1)."""
        c = self.config
        code = self.code(scenes)
        width = c.shape_dim + c.color_dim + 1
        out = {}
        for p in range(c.n_objects):
            out[f"shape{p}"] = code[:, p * width : p * width + c.shape_dim]
            out[f"color{p}"] = code[:, p * width + c.shape_dim : (p + 1) * width - 1]
        out["layout"] = code[:, -1:]
        return out

    # -------------------------------------------------------------------------- operators

    def apply_operator(
        self,
        scene: Scene,
        operator: str,
        k: int,
        gen: torch.Generator,
        objects: Sequence[int] | None = None,
    ) -> tuple[Scene, tuple[str, ...]]:
        """The scene with `operator` applied k times to objects drawn among `objects` (all by
        default), and the latents it changed (named "color{p}", "shape{p}", "material{p}" for
        object slot p). See the module docstring."""
        c = self.config
        if not 1 <= k <= c.max_k(operator):
            raise ValueError(f"{operator} admits k in 1..{c.max_k(operator)}, got {k}")
        among = list(range(c.n_objects) if objects is None else objects)
        need = k + 1 if operator == "swap" else k
        if need > len(among):
            raise ValueError(f"{operator}^{k} needs {need} objects, {len(among)} are free")
        chosen = [among[i] for i in torch.randperm(len(among), generator=gen)[:need].tolist()]
        if operator == "swap":
            colors = list(scene.colors)
            for a, b in zip(chosen, chosen[1:] + chosen[:1], strict=True):
                colors[b] = scene.colors[a]
            return replace(scene, colors=tuple(colors)), tuple(f"color{p}" for p in sorted(chosen))
        slots = sorted(chosen)
        if operator == "replace":
            absent = [s for s in range(c.n_shapes) if s not in scene.shapes]
            new = torch.randperm(len(absent), generator=gen)[:k].tolist()
            shapes = list(scene.shapes)
            for slot, i in zip(slots, new, strict=True):
                shapes[slot] = absent[i]
            return replace(scene, shapes=tuple(shapes)), tuple(f"shape{p}" for p in slots)
        materials = list(scene.materials)
        for slot in slots:
            materials[slot] = int(torch.randint(c.n_materials, (1,), generator=gen))
        return replace(scene, materials=tuple(materials)), tuple(f"material{p}" for p in slots)

    def hard_negatives(
        self, scenes: Sequence[Scene], operators: Sequence[str], k: int, gen: torch.Generator
    ) -> list[Scene]:
        """One negative per scene: scene i with `operators[i]` applied k times."""
        return [
            self.apply_operator(s, op, k, gen)[0] for s, op in zip(scenes, operators, strict=True)
        ]

    def negative_captions(
        self, batch: TokenBatch, negatives: Sequence[Sequence[Scene]]
    ) -> torch.Tensor:
        """[n, per row, ...] captions of each row's negative scenes, in the world's view, each
        with its row's text nuisance."""
        per_row = len(negatives[0])
        flat = [s for row in negatives for s in row]
        s_txt = batch.s_txt.repeat_interleave(per_row, dim=0)
        return self.captions(flat, s_txt).view(len(negatives), per_row, *batch.t.shape[1:])
