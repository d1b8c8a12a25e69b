"""The compositionality experiment: its mining regimes, run keys, flags, and the sweep end to end
(the pseudo-optimal encoders themselves: tests/identifiability/test_pseudo_optimal.py)."""

from __future__ import annotations

import compositionality as comp
import pandas as pd
import pytest

from synthetic.token_operators import IN_VOCABULARY, compositions
from synthetic.tokens import OPERATORS, TokenWorldConfig

CONFIG = TokenWorldConfig()


def test_mining_regimes_and_evaluated_names():
    assert comp.mined_names("none", CONFIG, 3) == ()
    assert comp.mined_names("depth1", CONFIG, 3) == OPERATORS  # the runs mined before stay keyed
    assert set(comp.mined_names("powers", CONFIG, 3)) == {
        "swap", "swap^2", "swap^3", "replace", "replace^2", "replace^3", "add", "add^2", "add^3"
    }  # fmt: skip
    every = {n for d in (1, 2, 3) for n in compositions(CONFIG, d)}
    assert set(comp.mined_names("mixed", CONFIG, 3)) == every and len(every) == 19
    assert set(comp.evaluated_names(CONFIG, 3)) == every | set(IN_VOCABULARY)
    sentence = TokenWorldConfig(view="sentence")
    assert "object_add" not in comp.evaluated_names(sentence, 3)
    groups = {n: comp.group_of(n) for n in comp.evaluated_names(CONFIG, 3)}
    assert groups["swap"] == "d1" and groups["add^3"] == "d3" and groups["swap∘add"] == "d2 mixed"
    assert groups["swap∘replace∘add"] == "d3 mixed" and groups["object_add"] == "in-vocabulary"


def test_every_model_and_the_rho_sweep_get_a_job_keyed_by_what_changes_its_result():
    cfg = comp.CompositionalityConfig(seeds=(0, 1), rhos=(0.5, 1.0))
    jobs = comp.jobs(cfg)
    assert len(jobs) == 2 * (len(comp.MODELS) + 2 * len(cfg.rho_models))
    assert len({j.key for j in jobs}) == len({j.run_id for j in jobs}) == len(jobs)
    by_key = {j.key: j for j in jobs}
    rho_job = by_key["transformer-clip-seed1-rho0.5"]
    assert rho_job.kwargs["world_config"].rho == 0.5
    assert by_key["swapblind-clip-seed0"].kwargs["swap_blind"]
    mined = by_key["transformer-clip+mixed-seed0"].kwargs["fit_config"].hard_negatives
    assert len(mined) == 19
    assert by_key["transformer-clip-seed0"].kwargs["track"] == (0, 250, 500, 750, 1000)
    # reporting bounds change no run; a sweep setting changes only the runs it reaches
    same = comp.jobs(comp.CompositionalityConfig(seeds=(0, 1), chance_margin=0.1, loss_margin=1))
    assert {j.run_id for j in same} == {j.run_id for j in jobs}
    other = {
        j.key: j.run_id
        for j in comp.jobs(comp.CompositionalityConfig(seeds=(0, 1), rhos=(0.25, 1.0)))
    }
    assert {k for k in other if other[k] != by_key.get(k, jobs[0]).run_id} == {
        f"{m.replace('/', '-')}-seed{s}-rho0.25" for m in cfg.rho_models for s in (0, 1)
    }


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--models", "gpt/clip"], "--models"),
        (["--rho-models", "gpt/clip"], "--rho-models"),
        (["--n-objects", "3"], "--n-objects"),
        (["--seeds", "1,1"], "--seeds"),
        (["--rhos", "0"], "--rhos"),
        (["--negative-k", "2"], "--negative-k"),
        (["--track-points", "1"], "--track-points"),
    ],
)
def test_bad_flags_exit_with_one_line(argv, flag, one_line_error):
    one_line_error(comp.main, argv, flag)


@pytest.mark.slow
def test_sweep_measures_every_part_and_the_pseudo_optimal_encoders_check_out(tmp_path):
    out = tmp_path / "comp"
    comp.main(
        ["--models", "transformer/clip+mined,swapblind/clip,sentence/clip", "--seeds", "0"]
        + ["--steps", "30", "--batch-size", "48", "--n-eval", "200", "--n-probe", "50"]
        + ["--rhos", "1", "--rho-models", "swapblind/clip", "--track-points", "3"]
        + ["--max-depth", "2", "--n-check", "2", "--workers", "1", "--out", str(out)]
    )
    r = pd.read_csv(out / "results.csv", dtype={"block": str, "subset": str})
    models = {"transformer/clip+mined", "swapblind/clip", "sentence/clip"}
    assert set(r.objective) == models | {m + "/g**" for m in models}
    assert set(r.world) == {"tokens", "sentence", "tokens ρ=1"}
    objective = r[r.quantity == "train_objective"].set_index(["world", "objective"]).value
    for m in models:
        world = "sentence" if m.startswith("sentence") else "tokens"
        assert objective[(world, m + "/g**")] == objective[(world, m)]  # bit for bit
    acc = r[(r.quantity == "accuracy") & (r.world == "tokens")]
    mined = acc[acc.objective == "transformer/clip+mined/g**"].set_index("block").value
    assert (mined[["swap^2", "swap∘replace", "replace∘add", "add^2"]] == 0.5).all()
    star = acc[acc.objective == "transformer/clip+mined"].set_index("block").value
    assert (
        mined[["swap", "replace", "add", *IN_VOCABULARY]]
        == star[["swap", "replace", "add", *IN_VOCABULARY]]
    ).all()
    blind = acc[acc.objective == "swapblind/clip"].set_index("block").value
    assert blind["swap"] == blind["swap^2"] == 0.5
    steps = set(r[r.quantity == "invariance"].subset.astype(int))
    assert steps == {0, 15, 30}
    assert "image_accuracy" not in set(r[r.block == "object_add"].quantity)
    summary = (out / "summary.md").read_text()
    for heading in ("1. Pseudo-optimal", "2a-b.", "2c.", "Compounding under mining"):
        assert heading in summary
    assert "| check |" in summary and "| finding |" in summary
    for figure in comp.FIGURES:
        assert (out / figure).stat().st_size > 0
