import benchmark_convergence as bc
import pandas as pd


def test_first_reached_reports_the_first_evaluation_at_or_above_each_threshold():
    frame = pd.DataFrame(
        {
            "objective": ["a"] * 4 + ["b"] * 2,
            "step": [1, 2, 3, 4, 1, 2],
            "seconds": [1.0, 2.0, 3.0, 4.0, 1.0, 2.0],
            "min_r2": [0.5, 0.91, 0.89, 0.96, 0.2, 0.3],
        }
    )
    got = bc.first_reached(frame).set_index(["objective", "threshold"])
    assert got.loc[("a", 0.9), "steps"] == 2 and got.loc[("a", 0.95), "steps"] == 4
    assert pd.isna(got.loc[("b", 0.9), "steps"]) and got.loc[("b", 0.9), "best_min_r2"] == 0.3


def test_script_traces_both_objectives(tmp_path):
    out = tmp_path / "bench"
    bc.main(
        ["--steps", "40", "--eval-every", "20", "--batch-size", "64", "--n-eval", "200"]
        + ["--hidden", "32", "--text-width", "16", "--workers", "1", "--out", str(out)]
    )
    frame = pd.read_csv(out / "results.csv")
    assert sorted(frame.groupby("objective").step.apply(list).to_dict().items()) == [
        ("clip", [20, 40]),
        ("smartclip", [20, 40]),
    ]
    assert (frame.seconds > 0).all() and (out / "convergence.png").stat().st_size > 0
    summary = (out / "summary.md").read_text().splitlines()
    assert summary[0].startswith("| objective | threshold | steps | seconds |")
