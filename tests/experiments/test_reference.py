"""The committed reference run (docs/results/reference/, `synthetic_recovery.py --preset
reference`) repeats bit for bit here: training, evaluation and regression all computed on the
pinned AVX2 paths, so any x86-64 machine with AVX2 and FMA must give the same bytes. A mismatch
means the reproducible mode does not hold on this machine, or the library versions differ from
`constraints.txt` (the failure names them), or the code changed what it computes (then
regenerate the reference with the command above and say why in the commit)."""

import json
from pathlib import Path

import pandas as pd
import pytest
import synthetic_recovery

from smartclip.reproducible import machine

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
        committed_versions = json.loads((REFERENCE / "config.json").read_text())["machine"]
        ours = machine("avx2")["versions"]
        moved = {k: (v, ours.get(k)) for k, v in committed_versions["versions"].items()}
        moved = {k: v for k, v in moved.items() if v[0] != v[1]}
        why = f"library versions differ (reference, here): {moved}" if moved else "same versions"
        pytest.fail(f"the reference run differs from docs/results/reference in {shown}; {why}")
    assert (tmp_path / "summary.md").read_text() == (REFERENCE / "summary.md").read_text()
