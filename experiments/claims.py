"""Results rows and the theory's claims: measured values in the keys of
`identifiability.conditions.check_prediction`, per seed, and a claim as one line of text.

A result row's block is "z<k>" (or "s_img" for the image nuisance, key None) and its subset a
caption subset "z0+z2" or a block's mask dimensions "dims(z1)"; the key is
(quantity, block index or None, tuple of block indices or None).
"""

from __future__ import annotations

import pandas as pd

from identifiability.conditions import Decision

PREDICTED = (
    "preserve_r2",
    "nuisance_v_r2",
    "disentangle_in_r2",
    "disentangle_out_r2",
    "block_r2",
)


def blocks_of(label: str) -> tuple[int, ...]:
    """ "z0+z2" → (0, 2); "dims(z1)" → (1,)."""
    inner = label.removeprefix("dims(").removesuffix(")")
    return tuple(int(b[1:]) for b in inner.split("+"))


def measured_values(results: pd.DataFrame) -> dict[tuple, float]:
    """Mean value per (quantity, block, subset) in the keys of `check_prediction` (one seed's
    rows: that seed's values)."""
    r = results[results.quantity.isin(PREDICTED)].fillna({"block": "", "subset": ""})
    means = r.groupby(["quantity", "block", "subset"]).value.mean()
    return {
        (q, None if b == "s_img" else int(b[1:]), blocks_of(s) if s else None): v
        for (q, b, s), v in means.items()
    }


def seed_values(results: pd.DataFrame) -> list[dict[tuple, float]]:
    """`measured_values` of every seed, in seed order."""
    return [measured_values(group) for _, group in results.groupby("seed")]


def label_of(blocks: tuple[int, ...]) -> str:
    """(0, 2) → "z0+z2"."""
    return "+".join(f"z{b}" for b in blocks)


def claim_text(d: Decision) -> str:
    """ "disentangle_out_r2(z3|z0+z1) 0.31 ± 0.05 ≤ 0.20": the claim, its interval, its bound."""
    e = d.expectation
    where = f"|{label_of(e.subset)}" if e.subset else ""
    return f"{e.quantity}({label_of(e.blocks) or 's_img'}{where}) {d.decided.text()}"
