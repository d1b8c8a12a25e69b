"""SugarCrepe's seven categories as our operators, and the edit depth of an item measured from
its two captions.

The mapping (`SUGARCREPE_MAP`): each category of SugarCrepe
(`hard_negatives.SUGARCREPE_CATEGORIES`) is one edit of a COCO caption and corresponds to one
operator of the token world, a primitive (`synthetic.tokens`) or an in-vocabulary one
(`synthetic.token_operators`); none is a composition (every SugarCrepe item applies one edit,
though the edit may touch several words):

    category     ours               kind            the edit (SugarCrepe → ours)
    swap_att     swap               primitive       two objects exchange attributes → colours
    swap_obj     object_swap        in-vocabulary   two objects exchange places → (colour, shape)
    replace_obj  replace            primitive       a noun becomes one not in the image → a shape
    replace_att  replace            primitive       an attribute becomes another → see below
    replace_rel  relation_replace   in-vocabulary   a relation becomes another → every relation word
    add_obj      object_add         in-vocabulary   an object phrase is inserted → (colour, shape)
    add_att      add                primitive       an attribute word is inserted → a material

replace_att has no operator of its own. In the token world at ρ = 0 a colour replaced by one
outside its shape's palette leaves the shape with no colour of its palette, so its edit profile
(`token_operators.edit_depths`) is REPLACE's, (D_SWAP, D_REPLACE, D_ADD) = (0, 1, 0); a colour
replaced by the other colour of its own palette gives another support caption, profile (0, 0, 0),
as the in-vocabulary operators do.

Edit depth of an item, from its caption w and negative caption w' (`edit_depth`): the words of
each (`words`: lower case, runs of letters, digits, ' and _), then

    D(w, w') = min over A of [ |A| − cycles(A) ]

over the Levenshtein-optimal alignments A of w and w' (unit cost per substituted, inserted or
deleted word; |A| = the Levenshtein distance), with cycles(A) the largest number of
edge-disjoint cycles among A's substitutions read as directed edges old word → new word. A
swapped pair (x → y at one place, y → x at another) is a cycle of 2: its two substitutions
count as one swap; a cycle of L substitutions counts L − 1 transpositions. So SWAP^k of the token
world, a (k + 1)-cycle of colour words, has depth k, as `token_operators.edit_depths` reads it,
and every composition swap^S∘replace^R∘add^A of an S_0 caption has depth S + R + A
(tested). The depth of our operators' outputs on S_0, in these words (`our_word_depth`): SWAP,
REPLACE, ADD 1 each; object_swap 2 (two swapped pairs: colour and shape); relation_replace
n − 1 (every relation word of n objects substituted); object_add 3 (colour, shape and relation
inserted).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

from synthetic.token_operators import IN_VOCABULARY
from synthetic.tokens import OPERATORS

Edge = tuple[str, str]


@dataclass(frozen=True)
class CategoryMap:
    """A SugarCrepe category, the operator of ours it corresponds to, whether that operator is a
    primitive or in-vocabulary, whether it makes the same edit, and where the two differ."""

    category: str
    operator: str
    kind: str
    same_edit: bool
    difference: str


SUGARCREPE_MAP: dict[str, CategoryMap] = {
    m.category: m
    for m in (
        CategoryMap("swap_att", "swap", "primitive", True, ""),
        CategoryMap(
            "swap_obj",
            "object_swap",
            "in-vocabulary",
            True,
            "ours moves each object with its colour; SugarCrepe's sometimes moves the nouns only",
        ),
        CategoryMap("replace_obj", "replace", "primitive", True, ""),
        CategoryMap(
            "replace_att",
            "replace",
            "primitive",
            False,
            "ours replaces the shape; a colour replaced from outside its shape's palette has "
            "REPLACE's edit profile at ρ = 0, from inside it gives a support caption",
        ),
        CategoryMap(
            "replace_rel",
            "relation_replace",
            "in-vocabulary",
            False,
            "ours replaces every relation word (one layout); SugarCrepe's one relation phrase",
        ),
        CategoryMap(
            "add_obj",
            "object_add",
            "in-vocabulary",
            True,
            "ours inserts an object of a shape absent from the scene, with its relation word",
        ),
        CategoryMap(
            "add_att",
            "add",
            "primitive",
            True,
            "ours inserts a material word, one training never uses",
        ),
    )
}


def our_word_depth(operator: str, n_objects: int) -> int:
    """D of our `operator`'s output of an S_0 caption of `n_objects` objects (module docstring)."""
    depths = {"object_swap": 2, "relation_replace": n_objects - 1, "object_add": 3}
    if operator in OPERATORS:
        return 1
    if operator in IN_VOCABULARY:
        return depths[operator]
    raise ValueError(f"unknown operator {operator!r}; choose from {OPERATORS + IN_VOCABULARY}")


def category_of(operator: str) -> str:
    """The SugarCrepe category `operator` stands for: the entry of the map that names it, the
    one that makes the same edit where two do (replace: replace_obj, not replace_att)."""
    named = [m for m in SUGARCREPE_MAP.values() if m.operator == operator]
    if not named:
        raise ValueError(f"no SugarCrepe category maps to {operator!r}")
    return next((m for m in named if m.same_edit), named[0]).category


def words(text: str) -> list[str]:
    """The words of a caption: lower case, runs of letters, digits, ' and _."""
    return re.findall(r"[\w']+", text.lower())


def _distances(a: Sequence[str], b: Sequence[str]) -> list[list[int]]:
    """d[i][j] = Levenshtein distance between a[:i] and b[:j] (unit costs)."""
    d = [[i + j if not i * j else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(
                d[i - 1][j - 1] + (a[i - 1] != b[j - 1]), d[i - 1][j] + 1, d[i][j - 1] + 1
            )
    return d


def substitution_sets(a: Sequence[str], b: Sequence[str]) -> tuple[int, set[tuple[Edge, ...]]]:
    """(Levenshtein distance, the distinct multisets of substitutions (old, new), sorted, of the
    optimal alignments of a and b): a forward pass over the cells that lie on an optimal path
    (forward plus backward distance equal to the total), each step tight."""
    forward = _distances(a, b)
    backward = _distances(a[::-1], b[::-1])
    m, n, total = len(a), len(b), forward[len(a)][len(b)]

    def on_path(i: int, j: int) -> bool:
        return forward[i][j] + backward[m - i][n - j] == total

    sets: dict[tuple[int, int], set[tuple[Edge, ...]]] = {(0, 0): {()}}
    for i in range(m + 1):
        for j in range(n + 1):
            if (i, j) == (0, 0) or not on_path(i, j):
                continue
            here: set[tuple[Edge, ...]] = set()
            if i and j and forward[i][j] == forward[i - 1][j - 1] + (a[i - 1] != b[j - 1]):
                edge = ((a[i - 1], b[j - 1]),) if a[i - 1] != b[j - 1] else ()
                here |= {tuple(sorted(s + edge)) for s in sets.get((i - 1, j - 1), ())}
            if i and forward[i][j] == forward[i - 1][j] + 1:
                here |= sets.get((i - 1, j), set())
            if j and forward[i][j] == forward[i][j - 1] + 1:
                here |= sets.get((i, j - 1), set())
            sets[(i, j)] = here
    return total, sets[(m, n)]


def _paths(edges: Sequence[Edge], start: str, goal: str) -> Iterator[frozenset[int]]:
    """The index sets of the simple paths start → goal along `edges` (no word visited twice)."""
    stack = [(start, frozenset(), frozenset({start}))]
    while stack:
        word, used, seen = stack.pop()
        for k, (old, new) in enumerate(edges):
            if k in used or old != word:
                continue
            if new == goal:
                yield used | {k}
            elif new not in seen:
                stack.append((new, used | {k}, seen | {new}))


@lru_cache(maxsize=4096)
def max_cycles(edges: tuple[Edge, ...]) -> int:
    """The largest number of edge-disjoint cycles among the directed edges old → new (a
    multiset, sorted), by exhaustive search: the first edge lies on no chosen cycle, or on one
    of the simple cycles through it."""
    olds, news = {old for old, _ in edges}, {new for _, new in edges}
    live = tuple(e for e in edges if e[0] in news and e[1] in olds)  # only these close cycles
    if len(live) < len(edges):
        return max_cycles(live)
    if not edges:
        return 0
    (old, new), rest = edges[0], edges[1:]
    best = max_cycles(rest)
    for path in _paths(rest, new, old):
        best = max(best, 1 + max_cycles(tuple(e for k, e in enumerate(rest) if k not in path)))
    return best


def edit_depth(caption: str, negative: str) -> int:
    """D(w, w') of an item: the Levenshtein distance between its captions' words less the most
    cycles of substitutions an optimal alignment holds (module docstring)."""
    total, subs = substitution_sets(words(caption), words(negative))
    return total - max((max_cycles(s) for s in subs), default=0)
