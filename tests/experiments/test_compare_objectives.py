"""The comparison of objectives: configs, the summary, and a tiny end-to-end run."""

from __future__ import annotations

import compare_objectives as co
import pandas as pd
import pytest

from smartclip.data import sentences


def test_fine_tuning_runs_share_all_but_the_objective():
    cfg = co.CompareConfig()
    runs = {o: co.TrainConfig(**cfg.train_settings(o, 1, None)) for o in co.OBJECTIVES}
    first = runs["clip"]
    for objective, train_config in runs.items():
        assert train_config.objective == objective and train_config.seed == 1
        same = {k: v for k, v in vars(train_config).items() if k != "objective"}
        assert same == {k: v for k, v in vars(first).items() if k != "objective"}
    assert cfg.train_settings("mulclip", 0, "w.bin")["pretrained"] == "w.bin"
    pretrain = co.TrainConfig(**cfg.train_settings("pretrain", 0, None))
    assert pretrain.objective == "clip" and pretrain.pretrained is None
    assert pretrain.epochs == cfg.pretrain_epochs and first.epochs == cfg.finetune_epochs


def test_summary_gives_mean_and_interval_per_objective():
    rows = [
        {"world": "scenes", "objective": o, "seed": s, "quantity": "retrieval", "block": "long",
         "subset": "t2i_r1", "value": v}
        for o, values in (("clip", (10.0, 12.0)), ("smartclip", (20.0, 20.0)))
        for s, v in enumerate(values)
    ]  # fmt: skip
    table = co.summary(pd.DataFrame(rows))
    assert table.loc[("scenes", "smartclip"), "long t2i_r1"] == "20.000 ± 0.000"
    assert table.loc[("scenes", "clip"), "long t2i_r1"].startswith("11.000 ± ")


def test_evaluation_files_point_at_the_images_from_anywhere(tmp_path, monkeypatch):
    """The scenes folder is often relative (runs/data/scenes); the written sets must not be."""
    from synthetic.scenes import write_dataset

    monkeypatch.chdir(tmp_path)
    write_dataset("scenes", 30, ("csv",))
    files = co.evaluation_files(co.Path("scenes"), tmp_path / "out")
    for kind, path in files.items():
        rows = list(co.csv.DictReader(path.open()))
        assert rows and all(co.Path(r["filepath"]).is_absolute() for r in rows), kind
        assert all(co.Path(r["filepath"]).is_file() for r in rows)
    short = list(co.csv.DictReader(files["short"].open()))[0]["title"]
    assert short.endswith(".") and short.count(". ") == 0


def test_short_captions_are_first_sentences():
    assert sentences("A red circle sits at the top. The background is blue.")[0] == (
        "A red circle sits at the top."
    )


@pytest.mark.parametrize(
    ("argv", "flag"),
    [(["--objectives", "siglip"], "--objectives"), (["--seeds", "1,1"], "--seeds")],
)
def test_bad_flags_exit_with_one_line(argv, flag, one_line_error):
    one_line_error(co.main, argv, flag)


@pytest.mark.slow
def test_each_objective_trains_and_is_measured(tmp_path):
    out = tmp_path / "compare"
    co.main(
        ["--seeds", "0", "--scenes-images", "300", "--scenes-dir", str(tmp_path / "scenes")]
        + ["--steps", "2", "--batch-size", "8", "--synthetic-steps", "20", "--workers", "1"]
        + ["--synthetic-n-eval", "200"]
        + ["--out", str(out)]
    )
    results = pd.read_csv(out / "results.csv")
    scenes = results[results.world == "scenes"]
    assert set(scenes.objective) == {"pretrain", *co.OBJECTIVES}
    retrieval = scenes[scenes.quantity == "retrieval"]
    assert set(retrieval.block) == {"long", "short"}
    assert len(retrieval) == 5 * 2 * 6  # runs × caption kinds × recall values
    assert set(scenes[scenes.quantity == "attribute_r2"].block) >= {"n_objects", "obj0_size"}
    synthetic = results[results.world == "custom"]
    assert set(synthetic.objective) == set(co.SYNTHETIC_OBJECTIVES)
    assert "| scenes | mulclip |" in (out / "summary.md").read_text()
    assert (out / "retrieval.png").stat().st_size > 0
