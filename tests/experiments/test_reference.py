"""The committed reference run (docs/results/reference/, `synthetic_recovery.py --preset
reference`) repeats bit for bit here: training, evaluation and regression all computed on the
pinned AVX2 paths, so any x86-64 machine with AVX2 and FMA must give the same bytes. A mismatch
means the reproducible mode does not hold on this machine (or the code changed what it computes:
then regenerate the reference with the command above and say why in the commit)."""

from pathlib import Path

import pandas as pd
import pytest
import synthetic_recovery

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "results" / "reference"


@pytest.mark.slow
def test_the_reference_run_repeats_bit_for_bit(tmp_path):
    synthetic_recovery.main(["--preset", "reference", "--out", str(tmp_path)])
    fresh = (tmp_path / "results.csv").read_bytes()
    committed = (REFERENCE / "results.csv").read_bytes()
    if fresh != committed:
        a = pd.read_csv(REFERENCE / "results.csv", dtype=str)
        b = pd.read_csv(tmp_path / "results.csv", dtype=str)
        if a.shape != b.shape:
            pytest.fail(f"the reference run has {b.shape} rows × columns, committed {a.shape}")
        shown = a[a.value != b.value].quantity.value_counts().head(5).to_dict()
        pytest.fail(f"the reference run differs from docs/results/reference in {shown}")
    assert (tmp_path / "summary.md").read_text() == (REFERENCE / "summary.md").read_text()
