"""The reproducible CPU paths: pinned before the libraries load, verified in the computing
process, refused loudly where they are not in effect."""

import json
import subprocess
import sys

import pytest

from smartclip import reproducible
from smartclip.fit import FitConfig

PINNED_REPORT = """
from smartclip import reproducible
reproducible.pin("avx2")
import json, torch
reproducible.check("avx2")
print(json.dumps(reproducible.active()))
"""

UNPINNED_FIT = """
import os
for name in {names!r}:
    os.environ.pop(name, None)
import torch
from smartclip import reproducible
from smartclip.fit import FitConfig, fit
from synthetic.worlds import World, WorldConfig
reproducible.check("native")  # no pins asked for: nothing to refuse
fit(World(WorldConfig()), FitConfig(steps=1, batch_size=8))
"""


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_pins_set_before_loading_take_effect_in_every_library():
    done = run_python(PINNED_REPORT)
    assert done.returncode == 0, done.stderr
    paths = json.loads(done.stdout)
    assert paths["torch"] == "AVX2"
    assert paths["numpy"] == "X86_V3"
    assert paths["openblas"] in ("Haswell", "none loaded")


def test_a_fit_in_an_unpinned_process_is_refused_with_one_line():
    done = run_python(UNPINNED_FIT.format(names=list(reproducible.CPU_PATHS["avx2"])))
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("smartclip.reproducible.UnpinnedProcess: CPU paths 'avx2'")
    assert "MKL_CBWR is not 'AVX2'" in last and "native" in last


def test_a_missing_setting_is_named(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    with pytest.raises(reproducible.UnpinnedProcess, match="ONEDNN_MAX_CPU_ISA is not 'AVX2'"):
        reproducible.check("avx2")
    reproducible.check("native")


def test_unknown_paths_are_refused():
    with pytest.raises(ValueError, match="unknown CPU paths 'avx512'"):
        reproducible.pin("avx512")
    with pytest.raises(ValueError, match="--cpu-paths"):
        FitConfig(cpu_paths="avx512")


def test_the_machine_record_names_cpu_pins_and_versions():
    record = reproducible.machine("avx2")
    assert record["cpu"] and record["pinned"] == reproducible.CPU_PATHS["avx2"]
    assert record["versions"]["torch"] and record["versions"]["numpy"]
    assert reproducible.machine("native")["pinned"] == {}
