import json

import assumption_violations as av
import pandas as pd
import pytest

from identifiability.conditions import THEOREM

TINY = ["--steps", "40", "--batch-size", "64", "--n-eval", "200", "--max-subsets", "2"]
TINY += ["--hidden", "32", "--text-width", "16", "--workers", "1", "--seeds", "0"]


def _rows_meeting(prediction, margin: float) -> pd.DataFrame:
    """Results rows that meet every claim of `prediction` by `margin` (miss it if < 0)."""
    rows = {}
    for e in prediction.expectations:
        if e.kind == "none":
            continue
        sign = 1 if e.kind == "high" else -1
        subset = ""
        if e.subset is not None:
            names = "+".join(f"z{b}" for b in e.subset)
            subset = f"dims({names})" if e.quantity == "block_r2" else names
        for block in [f"z{b}" for b in e.blocks] or ["s_img"]:
            rows[(e.quantity, block, subset)] = e.bound + sign * margin
    return pd.DataFrame(
        [{"quantity": q, "block": b, "subset": s, "value": v} for (q, b, s), v in rows.items()]
    ).assign(world="baseline", objective="smartclip", seed=0)


@pytest.fixture(scope="module")
def baseline_prediction():
    cfg = av.ViolationConfig(worlds=("baseline",), steps=100)
    return av.predictions(cfg)


def test_predictions_come_from_the_world_alone_and_name_the_union_atom():
    cfg = av.ViolationConfig(worlds=("baseline", "together", "undescribed"), steps=100)
    preds = av.predictions(cfg)
    assert preds["baseline"].guarantee
    assert (0, 1) in preds["together"].algebra.atoms
    assert (0,) not in preds["together"].algebra.atoms
    assert 3 in preds["undescribed"].algebra.dropped


@pytest.mark.parametrize(("margin", "verdict"), [(0.05, "held"), (-0.05, "NOT held")])
def test_verdict_follows_the_measurements(baseline_prediction, margin, verdict):
    p = baseline_prediction["baseline"]
    assert any(e.basis == THEOREM for e in p.expectations)
    table, margins = av.compare(baseline_prediction, _rows_meeting(p, margin))
    assert table.verdict.tolist() == [verdict]
    assert (margins.margin > 0).all() if margin > 0 else (margins.margin < 0).all()


def test_bad_world_name_exits_with_one_line(one_line_error):
    one_line_error(av.main, ["--worlds", "baseline,atlantis"], "--worlds")


@pytest.mark.slow
def test_script_writes_prediction_table_and_figure(tmp_path):
    out = tmp_path / "av"
    av.main([*TINY, "--worlds", "baseline,together", "--out", str(out)])
    predicted = json.loads((out / "predictions.json").read_text())
    assert set(predicted["predictions"]) == {"baseline", "together"}
    table = pd.read_csv(out / "table.csv")
    assert table.world.tolist() == ["baseline", "together"]
    assert table.verdict.notna().all() and table.prediction.str.contains("atoms").all()
    markdown = (out / "table.md").read_text().splitlines()
    assert len(markdown) == 2 + len(table) and markdown[0].startswith("| world |")
    assert (out / "violations.png").stat().st_size > 0
