import json

import assumption_violations as av
import pandas as pd
import pytest

from identifiability.conditions import THEOREM

TINY = ["--steps", "40", "--batch-size", "64", "--n-eval", "200", "--max-subsets", "2"]
TINY += ["--hidden", "32", "--text-width", "16", "--workers", "1", "--seeds", "0"]


def measured(
    world: str,
    atoms: list[tuple[int, ...]],
    leak: float = 0.01,
    seeds: int = 3,
    nuisance: tuple[float, ...] = (0.03,),
) -> pd.DataFrame:
    """Results of a hypothetical encoder that recovers the given atoms, written by hand (not from
    any prediction): every block preserved (0.98), nuisance dropped from v (0.03, or seed s's
    entry of `nuisance`) though u keeps it (0.5); a caption with subset S identifies the blocks
    of the atoms inside S (0.96) and carries `leak` of the rest; a block's mask dimensions
    predict its whole atom (0.97) and nothing else (0.02). Seed s adds 0.002·s to every value."""
    frames = [_one_seed(world, atoms, leak, nuisance[s % len(nuisance)]) for s in range(seeds)]
    return pd.concat(
        [f.assign(seed=s, value=f.value + 0.002 * s) for s, f in enumerate(frames)],
        ignore_index=True,
    )


def _one_seed(
    world: str, atoms: list[tuple[int, ...]], leak: float, nuisance: float
) -> pd.DataFrame:
    config = av.ViolationConfig(worlds=(world,)).world_config(world)
    atom_of = {b: a for a in atoms for b in a}
    rows = [("nuisance_r2", "s_img", "", 0.5)]
    rows += [("preserve_r2", f"z{b}", "", 0.98) for b in range(config.n_blocks)]
    for subset in config.support():
        name = "+".join(f"z{b}" for b in subset)
        rows.append(("nuisance_v_r2", "s_img", name, nuisance))
        for b in range(config.n_blocks):
            if b in subset:
                inside = set(atom_of[b]) <= set(subset)
                rows.append(("disentangle_in_r2", f"z{b}", name, 0.96 if inside else 0.5))
            else:
                rows.append(("disentangle_out_r2", f"z{b}", name, leak))
    for k in range(config.n_blocks):
        for j in range(config.n_blocks):
            rows.append(("block_r2", f"z{j}", f"dims(z{k})", 0.97 if j in atom_of[k] else 0.02))
    frame = pd.DataFrame(rows, columns=["quantity", "block", "subset", "value"])
    return frame.assign(world=world, objective="smartclip")


SEPARATE, UNION = [(0,), (1,), (2,), (3,)], [(0, 1), (2,), (3,)]


@pytest.mark.parametrize(
    ("world", "atoms", "leak", "verdict"),
    [
        ("baseline", SEPARATE, 0.01, "held"),  # what the theory says of the baseline
        ("together", UNION, 0.01, "held"),  # z0, z1 always together: their union is the atom
        ("baseline", UNION, 0.01, "NOT held"),  # a merged atom where the masks could split it
        ("baseline", SEPARATE, 0.6, "NOT held"),  # absent blocks leak into the masked embedding
        # finer than the union: predict() claims each block's mask dims predict its whole atom
        ("together", SEPARATE, 0.01, "NOT held"),
    ],
)
def test_verdict_follows_hand_built_measurements(world, atoms, leak, verdict):
    cfg = av.ViolationConfig(worlds=(world,), steps=100)
    preds = av.predictions(cfg)
    assert any(e.basis == THEOREM for e in preds[world].expectations)
    table, margins = av.compare(preds, measured(world, atoms, leak))
    assert table.verdict.tolist() == [verdict]
    assert bool((margins.margin < 0).any()) is (verdict == "NOT held")


@pytest.mark.parametrize(
    ("seeds", "nuisance", "verdict"),
    [
        (3, (0.03,), "held"),
        (3, (0.35,), "NOT held"),  # v keeps the nuisance on every seed
        (3, (0.1, 0.2, 0.3), "undecided"),  # the interval of the seed mean contains 0.2
        (1, (0.03,), "1 seed: no verdict"),
        (2, (0.03,), "2 seeds: no verdict"),
    ],
)
def test_the_row_verdict_follows_the_seed_interval_rule(seeds, nuisance, verdict):
    cfg = av.ViolationConfig(worlds=("baseline",), steps=100)
    measurements = measured("baseline", SEPARATE, seeds=seeds, nuisance=nuisance)
    table, _ = av.compare(av.predictions(cfg), measurements)
    assert table.verdict.tolist() == [verdict]
    assert table.seeds.tolist() == [seeds]
    if verdict != "held" and seeds >= 3:
        assert "nuisance_v_r2" in table["worst claims"].item()


def test_predictions_come_from_the_world_alone_and_name_the_union_atom():
    cfg = av.ViolationConfig(worlds=("baseline", "together", "undescribed"), steps=100)
    preds = av.predictions(cfg)
    assert preds["baseline"].guarantee
    assert (0, 1) in preds["together"].algebra.atoms
    assert (0,) not in preds["together"].algebra.atoms
    assert 3 in preds["undescribed"].algebra.dropped


def test_bad_world_name_exits_with_one_line(one_line_error):
    one_line_error(av.main, ["--worlds", "baseline,atlantis"], "--worlds")


@pytest.mark.slow
def test_script_writes_prediction_table_and_figure(tmp_path):
    out = tmp_path / "av"
    av.main([*TINY, "--worlds", "baseline,together", "--out", str(out)])
    predicted = json.loads((out / "predictions.json").read_text())
    assert set(predicted) == {"baseline", "together"}
    table = pd.read_csv(out / "table.csv")
    assert table.world.tolist() == ["baseline", "together"]
    assert table.verdict.notna().all() and table.prediction.str.contains("atoms").all()
    markdown = (out / "table.md").read_text().splitlines()
    assert len(markdown) == 2 + len(table) and markdown[0].startswith("| world |")
    assert (out / "violations.png").stat().st_size > 0
