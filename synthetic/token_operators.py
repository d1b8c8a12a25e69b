"""Operators on the token world (`synthetic.tokens`) beyond its primitives: compositions of SWAP,
REPLACE and ADD up to any depth, three in-vocabulary operators, the edit depth of a caption read
from the caption alone, and π_d, the repair of the pseudo-optimal encoder for models mined at
depth d. Our definitions (the paper's operator equations were not available to us). n is the
scene's number of objects, S_0 the training support at ρ = 0 (`synthetic.tokens`).

Compositions. A composition applies primitives (`TokenWorld.apply_operator`) one after another,
each to entries no earlier one touched, so none undoes another:

    name  = "swap^S∘replace^R∘add^A"   powers of 1 and primitives with power 0 left out; read as
                                        function composition: ADD^A on any A objects first, then
                                        REPLACE^R, then SWAP^S (one (S + 1)-cycle of colours) on
                                        objects that REPLACE left alone
    depth = S + R + A                   the number of primitive applications (SWAP^k: k)
    feasible iff (S + 1 if S else 0) + R ≤ n, R ≤ n_shapes − n, A ≤ min(n, n_materials)

Repeated applications of one primitive are written as its power (each primitive appears once in
a name, in any order; `compositions` lists them in `OPERATORS` order). As the applications act on
disjoint entries, their order does not change the distribution of the outputs, and a name with a
single primitive draws exactly what `apply_operator` draws. On S_0 the output differs from its
original in exactly A material words, R shapes absent from the original (each keeping its colour)
and S + 1 colours moved along one cycle (none if S = 0); it lies off S_0 and `TokenWorld.repair`
(π) maps it back to its original.

In-vocabulary operators: every word of the output occurs in training captions.

    object_swap       objects p < q uniform:  (shape, colour)'_p = (shape, colour)_q and
                      (shape, colour)'_q = (shape, colour)_p, everything else kept
    relation_replace  layout' = 1 − layout, style kept: every relation word becomes the synonym of
                      the same index of the other layout
    object_add        insert at p ~ U{0..n} the object (s', c', no material), s' uniform among
                      the shapes absent from the scene, c' uniform in palette(s')

object_swap and relation_replace output another valid scene, of the support (S_ρ for every ρ),
with a different caption and a different image: every π that is the identity on the support
(`repair` at ρ = 0) leaves it as it is, none can undo it, and no loss-equivalent encoder can
ignore it (giving it its original's embedding would give two support pairs with different images
one text embedding, while InfoNCE's optimum identifies the scene). That is the point of having
them. object_add outputs n + 1 objects, so it leaves the support (every support scene has n
objects) while staying in the training vocabulary and binding as S_0 does: π (at ρ = 0) leaves it
as it is, and no map of captions can undo it, since each of the n + 1 captions left by dropping one
of its objects is a support caption that object_add maps to it. Its scene has no code (n slots),
so it has no image and no sentence vector: a text-side negative of the token view only, which
needs n ≥ 3 to fit `max_len` (3(n + 1) − 1 ≤ 4n − 1) and a shape absent from the scene.

Edit depth, read from a caption alone. With objects (c_p, m_p, s_p) (`TokenWorld.parse`) and C
the caption's colours:

    D_ADD     = #{p : m_p ≠ none}                                   material words
    D_REPLACE = #O,  O = {p : palette(s_p) ∩ C = ∅}                 shapes none of whose palette
                                                                    colours occur
    D_SWAP    = #M − cycles,  M = {p ∉ O : c_p ∉ palette(s_p)}      colours bound to a foreign
                f(p) = the first q with s_q = shape_of(c_p)         shape, less the number of
                cycles = the number of cycles of f inside M         cycles of f in M
    D         = D_SWAP + D_REPLACE + D_ADD

D_SWAP is the fewest colour transpositions that rebind M when f permutes M. D = 0 on S_0 and on
the in-vocabulary outputs of S_0 scenes; on the output of a composition of an S_0 scene,
(D_SWAP, D_REPLACE, D_ADD) = (S, R, A), so D is its depth.

π_d, the repair of g**_d = g* ∘ π_d:

    π_d(w) = w      if 1 ≤ D(w) ≤ d
           = π(w)   otherwise

so π_0 = π, and π_d is the identity on S_0 (D = 0 there, where π is the identity) and on every
composition output of depth ≤ d, and maps every deeper composition output of an S_0 scene back to
its original. A model mined with negatives of depth ≤ d must tell those apart; g**_d equals g* on
the support and on them (so it has g*'s loss, mined terms included) and ignores every deeper edit.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from itertools import combinations_with_replacement

import torch

from synthetic.tokens import OPERATORS, Scene, TokenWorld, TokenWorldConfig

IN_VOCABULARY: tuple[str, ...] = ("object_swap", "relation_replace", "object_add")
COMPOSE = "∘"


def parse_composition(name: str) -> tuple[tuple[str, int], ...]:
    """The (primitive, power) steps of a composition's name, in the order they are applied
    (right to left)."""
    steps = []
    for part in reversed(name.split(COMPOSE)):
        op, hat, power = part.partition("^")
        if op not in OPERATORS or (hat and not (power.isdigit() and int(power) >= 1)):
            raise ValueError(f"bad composition {name!r}: {part!r} is no primitive^power")
        steps.append((op, int(power) if hat else 1))
    if len({op for op, _ in steps}) < len(steps):
        raise ValueError(f"bad composition {name!r}: write repeated applications as a power")
    return tuple(steps)


def compositions(config: TokenWorldConfig, depth: int) -> tuple[str, ...]:
    """The names of the compositions of `depth` primitive applications that every scene of
    `config` admits (see the module docstring), one per multiset of primitives."""
    names = []
    for combo in combinations_with_replacement(OPERATORS, depth):
        power = Counter(combo)
        swap, rep, add = (power[op] for op in OPERATORS)
        if (swap + 1 if swap else 0) + rep <= config.n_objects and all(
            power[op] <= config.max_k(op) for op in ("replace", "add")
        ):
            names.append(COMPOSE.join(op if k == 1 else f"{op}^{k}" for op, k in power.items()))
    return tuple(names)


def compose(
    world: TokenWorld, scene: Scene, name: str, gen: torch.Generator
) -> tuple[Scene, tuple[str, ...]]:
    """The scene with the composition `name` applied, and the latents it changed (as
    `TokenWorld.apply_operator` names them). SWAP and REPLACE draw their objects among those no
    earlier SWAP or REPLACE touched; ADD among all."""
    touched: set[int] = set()
    changed: list[str] = []
    for op, k in parse_composition(name):
        free = None if op == "add" else [p for p in range(len(scene.shapes)) if p not in touched]
        scene, names = world.apply_operator(scene, op, k, gen, free)
        if op != "add":
            touched |= {int(n.removeprefix("color").removeprefix("shape")) for n in names}
        changed += names
    return scene, tuple(changed)


def in_vocabulary(config: TokenWorldConfig) -> tuple[str, ...]:
    """The in-vocabulary operators `config` admits: object_add needs the token view, n ≥ 3 and
    fewer objects than shapes (module docstring)."""
    add = config.view == "tokens" and 3 <= config.n_objects < config.n_shapes
    return IN_VOCABULARY if add else IN_VOCABULARY[:2]


def apply_in_vocabulary(
    world: TokenWorld, scene: Scene, operator: str, gen: torch.Generator
) -> tuple[Scene, tuple[str, ...]]:
    """The scene with the in-vocabulary `operator` applied (module docstring), and the latents
    it changed ("shape{p}", "color{p}", "layout"; "object{p}" for an inserted object p)."""
    if operator not in in_vocabulary(world.config):
        raise ValueError(f"{operator!r} is none of {in_vocabulary(world.config)} in this world")
    n = len(scene.shapes)
    if operator == "object_swap":
        p, q = sorted(torch.randperm(n, generator=gen)[:2].tolist())
        order = list(range(n))
        order[p], order[q] = q, p
        swapped = replace(
            scene,
            shapes=tuple(scene.shapes[i] for i in order),
            colors=tuple(scene.colors[i] for i in order),
            materials=tuple(scene.materials[i] for i in order),
        )
        return swapped, (f"shape{p}", f"color{p}", f"shape{q}", f"color{q}")
    if operator == "relation_replace":
        return replace(scene, layout=1 - scene.layout), ("layout",)
    absent = [s for s in range(world.config.n_shapes) if s not in scene.shapes]
    shape = absent[int(torch.randint(len(absent), (1,), generator=gen))]
    color = world.palette(shape)[int(torch.randint(world.config.palette_size, (1,), generator=gen))]
    p = int(torch.randint(n + 1, (1,), generator=gen))
    added = replace(
        scene,
        shapes=(*scene.shapes[:p], shape, *scene.shapes[p:]),
        colors=(*scene.colors[:p], color, *scene.colors[p:]),
        materials=(*scene.materials[:p], -1, *scene.materials[p:]),
    )
    return added, (f"object{p}",)


def negatives(
    world: TokenWorld, scenes: Sequence[Scene], names: Sequence[str], gen: torch.Generator
) -> list[Scene]:
    """One negative per scene: scene i with `names[i]` applied, a composition's name or an
    in-vocabulary operator."""
    return [
        (apply_in_vocabulary if name in IN_VOCABULARY else compose)(world, s, name, gen)[0]
        for s, name in zip(scenes, names, strict=True)
    ]


def edit_depths(world: TokenWorld, words: Sequence[str]) -> dict[str, int]:
    """(D_SWAP, D_REPLACE, D_ADD) of a caption, keyed by primitive (module docstring)."""
    scene = world.parse(words)
    present = set(scene.colors)
    orphan = [not any(c in present for c in world.palette(s)) for s in scene.shapes]
    first = {s: p for p, s in reversed(list(enumerate(scene.shapes)))}
    f = {
        p: first.get(world.shape_of(c))
        for p, (s, c) in enumerate(zip(scene.shapes, scene.colors, strict=True))
        if not orphan[p] and world.shape_of(c) != s
    }
    cycles, walked = 0, {}
    for start in f:
        p = start
        while p in f and p not in walked:
            walked[p] = start
            p = f[p]
        cycles += p in f and walked[p] == start
    return {
        "swap": len(f) - cycles,
        "replace": sum(orphan),
        "add": sum(m >= 0 for m in scene.materials),
    }


def edit_depth(world: TokenWorld, words: Sequence[str]) -> int:
    """D = D_SWAP + D_REPLACE + D_ADD of a caption."""
    return sum(edit_depths(world, words).values())


def repair_beyond(world: TokenWorld, words: Sequence[str], depth: int) -> list[str]:
    """π_d: the caption itself if its edit depth lies in 1..depth, else π of it."""
    if 1 <= edit_depth(world, words) <= depth:
        return list(words)
    return world.repair(words)
