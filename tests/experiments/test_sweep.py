"""The shared sweep runner's reporting helpers and configuration keys."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pytest

import sweep


def test_interval_is_the_t_interval_over_seeds():
    assert sweep.interval(pd.Series([0.5])) == "0.500 ± 0.000"
    # mean 2, sd 1, n 3: t_{0.975, 2} = 4.303 → half-width 4.303 / √3 = 2.484
    assert sweep.interval(pd.Series([1.0, 2.0, 3.0])) == "2.000 ± 2.484"


def test_markdown_table_keeps_named_index_levels_and_escapes_pipes():
    table = pd.DataFrame(
        {"a": ["x|y", None]},
        index=pd.MultiIndex.from_tuples([("w", 1), ("w", 2)], names=["world", "k"]),
    )
    assert sweep.markdown_table(table).splitlines() == [
        "| world | k | a |",
        "|---|---|---|",
        "| w | 1 | x\\|y |",
        "| w | 2 | — |",
    ]
    plain = pd.DataFrame({"b": [1.5]})
    assert sweep.markdown_table(plain).splitlines()[2] == "| 1.5 |"


@dataclass(frozen=True)
class Settings:
    steps: int = 10


def test_run_ids_follow_every_argument_and_diffs_name_the_flag():
    def job(steps: int, seed: int = 0) -> sweep.Job:
        return sweep.Job(
            "k",
            test_run_ids_follow_every_argument_and_diffs_name_the_flag,
            {"s": Settings(steps), "seed": seed},
        )

    assert job(10).run_id == job(10).run_id
    assert len({job(10).run_id, job(11).run_id, job(10, 1).run_id}) == 3
    changes = sweep.config_diff(job(10).config, job(11).config)
    assert changes == ["kwargs.s.steps (--steps): 10 → 11"]


def fit_a() -> None: ...


def fit_b() -> None: ...


def test_run_ids_follow_the_function_as_well_as_its_arguments():
    """Two functions given identical arguments compute different results: different ids, and the
    diff names the function."""
    a, b = sweep.Job("k", fit_a, {"seed": 0}), sweep.Job("k", fit_b, {"seed": 0})
    assert a.config["kwargs"] == b.config["kwargs"]
    assert a.run_id != b.run_id and a.name != b.name
    (change,) = sweep.config_diff(a.config, b.config)
    assert change.startswith("fn ") and change.endswith(
        f"{sweep.function_name(fit_a)} → {sweep.function_name(fit_b)}"
    )


def test_quick_is_shorthand_for_the_quick_preset():
    got = sweep.parse_experiment(Settings, ["--quick"], {"quick": {"steps": 3}}, "doc")
    assert got == Settings(3)
    with pytest.raises(SystemExit):
        sweep.parse_experiment(Settings, ["--steps", "x"], {}, "doc")


def test_a_job_keys_the_same_whether_its_script_runs_directly_or_is_imported(monkeypatch):
    def fit() -> None: ...

    fit.__module__ = "test_sweep"  # imported as `import test_sweep`
    imported = sweep.Job("k", fit, {"seed": 0}).run_id
    fit.__module__ = "__main__"  # the script run as `python test_sweep.py`
    monkeypatch.setattr(sweep.sys.modules["__main__"], "__file__", __file__, raising=False)
    assert sweep.function_name(fit) == f"test_sweep.{fit.__qualname__}"
    assert sweep.Job("k", fit, {"seed": 0}).run_id == imported


def test_the_cpu_paths_key_a_job_and_one_sweep_has_one_set(tmp_path):
    """A result belongs to the code paths it was computed on: another setting is another run,
    and the workers of one sweep share one environment, so mixed settings are refused."""
    pinned, native = sweep.Job("k", fit_a, {"s": 0}), sweep.Job("k", fit_a, {"s": 0}, 1, "native")
    assert pinned.cpu_paths == "avx2" and pinned.run_id != native.run_id
    with pytest.raises(ValueError, match="one set of CPU paths"):
        sweep.run_sweep([pinned, sweep.Job("j", fit_a, {}, 1, "native")], tmp_path)
