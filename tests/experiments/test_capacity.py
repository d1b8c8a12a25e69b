import dataclasses
import json

import capacity
import pandas as pd
import pytest

import sweep

CFG = capacity.CapacityConfig(steps=100, width_offsets=(-1, 0, 1))


def run_rows(
    world: str,
    width: int,
    weight: float,
    seed: int,
    preserve: tuple[float, ...],
    out: tuple[float, ...] = (0.01,),
    mask_dims: tuple[int, ...] | None = None,
    shared: tuple[int, ...] | None = None,
    steps: int = 100,
    inside: float = 0.95,
) -> list[dict]:
    """The result rows of one hypothetical run, written by hand: preserve_r2 per block z0, z1, …;
    disentangle_out_r2 over subsets "s0", "s1", … (one block each); in-subset `inside`; mask_dims
    and mask_shared_dims per block (default 3 and 0 for every block)."""
    k = len(preserve)
    mask_dims = mask_dims or (3,) * k
    shared = shared or (0,) * k
    meta = {"world": world, "width": width, "sparsity_weight": weight, "steps": steps}
    meta |= {"objective": "smartclip", "seed": seed, "dim": "", "subset": ""}
    rows = [
        meta | {"quantity": "preserve_r2", "block": f"z{b}", "value": v}
        for b, v in enumerate(preserve)
    ]
    rows += [
        meta | {"quantity": "disentangle_in_r2", "block": "z0", "subset": "z0", "value": inside}
    ]
    rows += [
        meta | {"quantity": "disentangle_out_r2", "block": "z1", "subset": f"s{i}", "value": v}
        for i, v in enumerate(out)
    ]
    rows += [
        meta | {"quantity": "mask_dims", "block": f"z{b}", "value": n}
        for b, n in enumerate(mask_dims)
    ]
    rows += [
        meta | {"quantity": "mask_shared_dims", "block": f"z{b}", "value": n}
        for b, n in enumerate(shared)
    ]
    return rows


def frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=capacity.RESULT_COLUMNS[:-1])


# ---------------------------------------------------------------- grid and keys


def test_widths_are_offsets_and_multiples_of_the_described_dims():
    # 3 × 5, 5 × 3: d = 15 → 14, 15, 16, ⌈22.5⌉ = 23, 30; 8 × 2: d = 16 → 15, 16, 17, 24, 32
    assert CFG.widths("few-large") == (14, 15, 16, 23, 30)
    assert CFG.widths("middle") == CFG.widths("middle-graded") == (14, 15, 16, 23, 30)
    assert CFG.widths("many-small") == (15, 16, 17, 24, 32)
    # factor 1 and offset 0 give one width; ⌈1.1 · 15⌉ = ⌈16.5⌉ = 17
    cfg = dataclasses.replace(CFG, width_offsets=(0, 1), width_factors=(1.0, 1.1, 1.5))
    assert cfg.widths("few-large") == (15, 16, 17, 23)


def test_jobs_cover_the_default_grid_and_carry_every_setting_of_a_cell():
    default = capacity.CapacityConfig(steps=100)
    assert default.widths("middle") == (15, 16, 23, 30)
    assert default.widths("many-small") == (16, 17, 24, 32)
    todo = capacity.jobs(default)
    expected = {
        (w, width, weight, seed)
        for w in ("middle", "many-small")
        for width in default.widths(w)
        for weight in (0.0, 2.0, 4.0)
        for seed in (0, 1, 2)
    }
    assert len(todo) == len(expected) == 72
    assert len({j.key for j in todo}) == len({j.run_id for j in todo}) == 72
    # the release's sparsity weight runs first: a map cut short has its row whole
    weights = [j.kwargs["meta"]["sparsity_weight"] for j in todo]
    assert weights[:24] == [2.0] * 24 and 2.0 not in weights[24:]
    found = set()
    for j in todo:
        meta, fit, world = j.kwargs["meta"], j.kwargs["fit_config"], j.kwargs["world_config"]
        found.add((meta["world"], meta["width"], meta["sparsity_weight"], meta["seed"]))
        assert fit.embed_dim == meta["width"] and fit.loss_weights == (
            10.0,
            10.0,
            meta["sparsity_weight"],
        )
        assert fit.steps == meta["steps"] == j.steps == 100
        assert fit.seed == world.seed == meta["seed"] and fit.objective == "smartclip"
        assert world.block_dims == capacity.WORLD_SHAPES[meta["world"]]["block_dims"]
        assert j.kwargs["n_eval"] == 2000 and j.kwargs["max_subsets"] == 8
    assert found == expected


@pytest.mark.parametrize(
    ("change", "reruns"),
    [
        ({"lr": 1e-3}, True),
        ({"n_eval": 1000}, True),
        ({"max_subsets": 4}, True),
        ({"loss_weights": (5.0, 10.0, 2.0)}, True),
        ({"steps": 200}, True),
        ({"workers": 1, "out": "elsewhere", "high": 0.8, "low": 0.1, "long_factor": 3}, False),
        # each cell sets the width and the third loss weight itself
        ({"embed_dim": 64, "loss_weights": (10.0, 10.0, 7.0)}, False),
    ],
)
def test_a_run_id_changes_exactly_with_what_changes_its_result(change, reruns):
    before = {j.key: j.run_id for j in capacity.jobs(CFG)}
    after = {j.key: j.run_id for j in capacity.jobs(dataclasses.replace(CFG, **change))}
    common = before.keys() & after.keys()
    assert common or "steps" in change
    if "steps" in change:  # the steps are in the key too
        assert not common and len(after) == len(before)
        assert not set(before.values()) & set(after.values())
    else:
        assert all((before[k] != after[k]) is reruns for k in common)


def test_a_longer_run_is_its_own_run_and_differs_from_stage_one_only_in_its_steps():
    stage1 = {j.key: j for j in capacity.jobs(CFG)}
    (long,) = capacity.long_jobs(CFG, [("middle", 16, 2.0)])
    assert long.steps == long.kwargs["fit_config"].steps == 200
    assert long.key not in stage1 and long.run_id not in {j.run_id for j in stage1.values()}
    same_seed = stage1["middle-w16-sp2-seed0-100steps"]
    assert sweep.config_diff(same_seed.config, long.config) == [
        "kwargs.fit_config.steps (--steps): 100 → 200",
        "kwargs.meta.steps (--steps): 100 → 200",
    ]


# ---------------------------------------------------------------- borderline rule and verdicts

SMALL = dataclasses.replace(CFG, worlds=("few-large",), sparsity_weights=(1.0, 2.0))
GOOD = (0.97, 0.98, 0.99)


def seeds_of(world, width, weight, worst, out=None, other=GOOD, seeds=3):
    """Three runs of a cell: seed s has worst block worst[s] (z2; z0, z1 from `other`) and the
    out-of-subset values out[s] (default 0.01)."""
    rows = []
    for s in range(seeds):
        outs = out[s] if out else (0.01,)
        rows += run_rows(world, width, weight, s, (other[0], other[1], worst[s]), outs)
    return rows


CELLS = {
    ("few-large", 14, 1.0): ((0.95, 0.96, 0.97), None),  # held, held
    ("few-large", 14, 2.0): ((0.85, 0.95, 0.92), None),  # 0.907 ± 0.127 contains 0.9
    ("few-large", 15, 1.0): ((0.5, 0.52, 0.51), None),  # not held
    # out 0.2 ± 0.25 contains 0.2: P2 undecided
    ("few-large", 15, 2.0): ((0.95, 0.96, 0.97), ((0.1,), (0.3,), (0.2,))),
    # the blocks' mean is 0.93 on each seed, the worst block 0.80-0.82: P1 not held
    ("few-large", 16, 1.0): ((0.80, 0.81, 0.82), None),
    # the mean over subsets is 0.12, the worst subset 0.45: P2 not held
    ("few-large", 16, 2.0): (GOOD, ((0.01, 0.01, 0.01, 0.45),) * 3),
}
VERDICTS = {
    ("few-large", 14, 1.0): ("held", "held"),
    ("few-large", 14, 2.0): ("undecided", "held"),
    ("few-large", 15, 1.0): ("not held", "held"),
    ("few-large", 15, 2.0): ("held", "undecided"),
    ("few-large", 16, 1.0): ("not held", "held"),
    ("few-large", 16, 2.0): ("held", "not held"),
}


def hand_built(seeds: int = 3) -> pd.DataFrame:
    rows = []
    for (world, width, weight), (worst, out) in CELLS.items():
        other = (0.99, 0.99) if width == 16 and weight == 1.0 else GOOD[:2]
        rows += seeds_of(world, width, weight, worst, out, other, seeds)
    return frame(rows)


def test_verdicts_decide_the_worst_block_and_the_worst_subset_on_the_seeds():
    verdicts = capacity.cell_verdicts(SMALL, capacity.per_run(hand_built()))
    found = {(r.world, r.width, r.sparsity_weight): (r.P1, r.P2) for r in verdicts.itertuples()}
    assert found == VERDICTS
    assert verdicts.seeds.tolist() == [3] * 6


@pytest.mark.parametrize(
    ("inside", "out", "p2"),
    [
        ((0.95, 0.96, 0.97), 0.01, "held"),
        ((0.75, 0.78, 0.74), 0.01, "not held"),  # a mask that keeps too little of its blocks
        ((0.85, 0.95, 0.92), 0.01, "undecided"),  # 0.907 ± 0.127 contains 0.9
        ((0.85, 0.95, 0.92), 0.5, "not held"),  # either part not held: P2 not held
        ((0.75, 0.78, 0.74), 0.2, "not held"),
    ],
)
def test_p2_needs_the_in_subset_and_the_out_of_subset_claim(inside, out, p2):
    rows = []
    for s in range(3):
        rows += run_rows("few-large", 15, 2.0, s, GOOD, (out,), inside=inside[s])
    cfg = dataclasses.replace(SMALL, sparsity_weights=(2.0,))
    (verdict,) = capacity.cell_verdicts(cfg, capacity.per_run(frame(rows))).itertuples()
    assert (verdict.P1, verdict.P2) == ("held", p2)
    assert verdict.borderline == (p2 == "undecided")


def test_borderline_cells_are_those_with_an_undecided_claim():
    runs = capacity.per_run(hand_built())
    assert capacity.borderline(SMALL, runs) == [("few-large", 14, 2.0), ("few-large", 15, 2.0)]
    assert capacity.borderline(dataclasses.replace(SMALL, long_factor=0), runs) == []
    # one seed gives no verdict, so no cell is borderline
    assert capacity.borderline(SMALL, capacity.per_run(hand_built(seeds=1))) == []
    # a longer run already in the results is no stage-1 seed
    extra = run_rows("few-large", 14, 1.0, 0, (0.99, 0.99, 0.2), steps=200)
    with_long = capacity.per_run(pd.concat([hand_built(), frame(extra)]))
    assert capacity.borderline(SMALL, with_long) == capacity.borderline(SMALL, runs)


# ---------------------------------------------------------------- which block fails


def test_the_failing_block_is_checked_against_each_predictor():
    cfg = dataclasses.replace(CFG, worlds=("middle-graded", "middle"), sparsity_weights=(2.0,))
    rows = []
    for s in range(3):
        # z0 (the rarest: p 0.3) fails; it has the fewest mask dims, z2 shares the most
        rows += run_rows(
            "middle-graded",
            15,
            2.0,
            s,
            (0.7, 0.98, 0.98, 0.98, 0.98),
            (0.01,),
            mask_dims=(1, 3, 3, 3, 3),
            shared=(0, 0, 2, 0, 0),
        )
        # uniform inclusion: z3 fails on seed 0 only; every block has 3 dims, z3 shares the most
        worst = 0.6 if s == 0 else 0.95
        rows += run_rows(
            "middle",
            16,
            2.0,
            s,
            (0.98, 0.98, 0.98, worst, 0.98),
            (0.01,),
            mask_dims=(3,) * 5,
            shared=(0, 1, 0, 2, 0),
        )
    results = frame(rows)
    failing = capacity.failing_blocks(cfg, results)
    assert len(failing) == 4
    graded = failing[failing.world == "middle-graded"]
    assert set(graded.worst_block) == {"z0"}
    assert graded["fewest mask dims: hit"].tolist() == [True] * 3
    assert graded["most shared dims: hit"].tolist() == [False] * 3
    assert graded["rarest: hit"].tolist() == [True] * 3
    uniform = failing[failing.world == "middle"]
    assert uniform.worst_block.tolist() == ["z3"] and uniform.seed.tolist() == [0]
    # a tie over every block names nothing
    assert uniform["fewest mask dims: hit"].isna().all() and uniform["rarest: hit"].isna().all()
    assert uniform["most shared dims: hit"].tolist() == [True]

    table = capacity.predictor_table(failing).set_index("predictor")
    assert table.loc["fewest mask dims"].tolist() == [3, 3, "0.6"]  # 3 runs × 1 of 5 blocks
    assert table.loc["most shared dims"].tolist() == [4, 1, "0.8"]
    assert table.loc["rarest"].tolist() == [3, 3, "0.6"]

    cells = capacity.cell_table(cfg, results).set_index("world")
    assert cells.loc["middle-graded", "failing block (runs < bar)"] == (
        "z0 ×3; fewest mask dims 3/3, most shared dims 0/3, rarest 3/3"
    )
    assert cells.loc["middle", "failing block (runs < bar)"] == (
        "z3 ×1; fewest mask dims —, most shared dims 1/1, rarest —"
    )
    assert cells.loc["middle-graded", "P1: worst ≥ 0.9"] == "not held"
    assert cells.loc["middle-graded", "fewest mask dims"] == "1.000 ± 0.000"
    assert cells.loc["middle-graded", "mask dims / block"] == "2.600 ± 0.000"
    assert cells.loc["middle-graded", "shared dims / block"] == "0.400 ± 0.000"
    assert cells.loc["middle-graded", "worst preserve"] == "0.700 ± 0.000"
    assert cells.loc["middle", "200 steps, seed 0: worst / out"] == "—"  # no longer run stored
    no_long = capacity.cell_table(dataclasses.replace(cfg, long_factor=0), results)
    assert not [c for c in no_long.columns if "steps" in c]


# ---------------------------------------------------------------- where the claims hold, and c


def verdict_frame(world: str, weight: float, p1: list[str], p2: list[str]) -> pd.DataFrame:
    widths = CFG.widths(world)
    return pd.DataFrame(
        {"world": world, "width": widths, "sparsity_weight": weight, "seeds": 3, "P1": p1, "P2": p2}
    )


H, N, U = "held", "not held", "undecided"


def test_the_edge_is_where_every_wider_cell_holds_and_c_is_the_largest_edge():
    verdicts = pd.concat(
        [
            # 14, 15, 16, 23, 30: P1 fails up to 15, undecided at 16, held from 23
            verdict_frame("middle", 2.0, [N, N, U, H, H], [H] * 5),
            # held at 14 but not at 15: held from 16, not from 14
            verdict_frame("middle", 1.0, [H, N, H, H, H], [H, H, H, H, N]),
            verdict_frame("many-small", 2.0, [N, H, H, H, H], [H] * 5),  # 15, 16, 17, 24, 32
            # weight 0 voids the guarantee: its cells never set c
            verdict_frame("many-small", 0.0, [N] * 5, [N] * 5),
        ]
    )
    edges = capacity.edge_table(CFG, verdicts).set_index(["world", "sparsity"])
    row = edges.loc[("middle", "2")]
    assert row["P1 held from"] == "23 (1.53·d)" and row["P1 not held up to"] == "15 (1.00·d)"
    assert row["P2 held from"] == "14 (0.93·d)" and row["both held from"] == "23 (1.53·d)"
    row = edges.loc[("middle", "1")]
    assert row["P1 held from"] == "16 (1.07·d)" and row["P2 held from"] == "> 30 (2.00·d)"
    assert row["both held from"] == "> 30 (2.00·d)"
    assert edges.loc[("many-small", "2"), "both held from"] == "16 (1.00·d)"

    text = capacity.suggested_c(CFG, capacity.edge_table(CFG, verdicts), verdicts)
    assert text.startswith("c > 2.00: middle at sparsity 1")
    fixed = verdicts[~((verdicts.world == "middle") & (verdicts.sparsity_weight == 1.0))]
    text = capacity.suggested_c(CFG, capacity.edge_table(CFG, fixed), fixed)
    assert text.startswith("c = 1.53:") and "middle, sparsity 2" in text
    one_seed = fixed.assign(seeds=1)
    edges = capacity.edge_table(CFG, one_seed)
    assert set(edges["both held from"]) == {"no verdict"} and edges.c.isna().all()
    assert "no verdict" in capacity.suggested_c(CFG, edges, one_seed)


# ---------------------------------------------------------------- the script


def test_main_reuses_stored_runs_of_both_stages_and_writes_every_output(tmp_path, capsys):
    """Stage 1 and the borderline cell's longer run stored by hand under OUT/runs: main trains
    nothing, picks the borderline cell from stage 1 and reports its stored longer run."""
    out = tmp_path / "cap"
    argv = ["--worlds", "few-large", "--width-offsets", "0", "--width-factors", "2"]
    argv += ["--sparsity-weights", "2", "--steps", "100", "--out", str(out)]
    cfg = capacity.parse_experiment(capacity.CapacityConfig, argv, capacity.PRESETS, "")
    stored = {
        ("few-large", 15, 2.0): (0.85, 0.95, 0.92),  # borderline
        ("few-large", 30, 2.0): (0.95, 0.96, 0.97),
    }
    runs = out / "runs"
    runs.mkdir(parents=True)
    for j in capacity.jobs(cfg):
        m = j.kwargs["meta"]
        worst = stored[(m["world"], m["width"], m["sparsity_weight"])][m["seed"]]
        rows = run_rows(m["world"], m["width"], 2.0, m["seed"], (0.99, 0.99, worst))
        sweep.write_rows(
            [r | {"run": j.run_id} for r in rows], runs / f"{j.name}.csv", capacity.RESULT_COLUMNS
        )
    (long,) = capacity.long_jobs(cfg, [("few-large", 15, 2.0)])
    rows = run_rows("few-large", 15, 2.0, 0, (0.99, 0.99, 0.777), (0.05, 0.123), steps=200)
    sweep.write_rows(
        [r | {"run": long.run_id} for r in rows], runs / f"{long.name}.csv", capacity.RESULT_COLUMNS
    )

    capacity.main(argv)
    printed = capsys.readouterr().out
    assert "6 of 6 runs already done" in printed and "7 of 7 runs already done" in printed
    results = pd.read_csv(out / "results.csv")
    assert sorted(set(zip(results.width, results.steps, strict=True))) == [
        (15, 100),
        (15, 200),
        (30, 100),
    ]
    assert json.loads((out / "config.json").read_text())["runs"][long.key] == long.run_id
    summary = (out / "summary.md").read_text()
    assert "| 0.777 / 0.123 |" in summary
    assert "undecided" in summary
    assert (out / "phase.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--worlds", "atlantis"], "--worlds"),
        (["--long-factor", "1"], "--long-factor"),
        (["--width-offsets=-15"], "--width-offsets"),
        (["--sparsity-weights", "2,2"], "--sparsity-weights"),
        (["--high", "0.1"], "--high"),
    ],
)
def test_bad_values_exit_with_one_line_naming_the_flag(args, flag, one_line_error):
    one_line_error(capacity.main, args, flag)


@pytest.mark.slow
def test_tiny_map_trains_each_cell_at_its_width(tmp_path):
    out = tmp_path / "tiny"
    argv = ["--worlds", "few-large", "--width-offsets", "0", "--width-factors", "2"]
    argv += ["--sparsity-weights", "2", "--seeds", "0", "--steps", "20", "--warmup", "5"]
    argv += ["--batch-size", "64", "--hidden", "32", "--text-width", "16", "--n-eval", "200"]
    argv += ["--max-subsets", "2", "--workers", "1", "--out", str(out)]
    capacity.main(argv)
    results = pd.read_csv(out / "results.csv")
    assert set(results.width) == {15, 30} and set(results.steps) == {20}
    # the trained model's mask has as many dims as the cell's width
    on = results[results.quantity == "mask_on"]
    for width, rows in on.groupby("width"):
        assert sorted(rows.dim.astype(int).unique()) == list(range(width))
    assert "no verdict" in (out / "summary.md").read_text()  # one seed
    assert (out / "phase.png").stat().st_size > 0
