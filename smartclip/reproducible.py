"""CPU code paths pinned so that a run gives bitwise the same numbers on any x86-64 machine with
AVX2 and FMA.

torch, MKL, oneDNN, OpenBLAS and numpy each pick their kernels by the instructions the CPU
offers; an AVX-512 kernel sums in another order than an AVX2 one, and training is chaotic, so a
different order becomes a different run (a nuisance R² of 0.135 on one machine was 0.384 on
another). `CPU_PATHS["avx2"]` names, for each library, the setting that makes it take its AVX2
path whatever the CPU offers:

    ATEN_CPU_CAPABILITY=avx2       torch's own kernels (elementwise, reductions, softmax)
    MKL_CBWR=AVX2                  MKL's conditional numerical reproducibility (torch's matmuls)
    ONEDNN_MAX_CPU_ISA=AVX2        oneDNN's kernels
    OPENBLAS_CORETYPE=Haswell      OpenBLAS of numpy and scipy (kernel ridge's solves)
    NPY_DISABLE_CPU_FEATURES=...   numpy's AVX-512 loops (exp in the RBF kernel)

Every library reads its setting once, when it loads, so `pin` must run before torch or numpy is
imported in the process that computes: `experiments/sweep.py` sets them in the parent and its
spawned workers inherit them; `check` then verifies, inside the computing process, that each
library took its path, and refuses to go on otherwise. "native" pins nothing: fastest, not
portable. `machine` is what each run records in its config.json.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path

CPU_PATHS: dict[str, dict[str, str]] = {
    "avx2": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "MKL_CBWR": "AVX2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "OPENBLAS_CORETYPE": "Haswell",
        "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
    },
    "native": {},
}
LIBRARIES = ("torch", "numpy", "scipy", "scikit-learn", "open_clip_torch")


class UnpinnedProcess(RuntimeError):
    """The process computes on other code paths than its configuration asks for."""


def _known(mode: str) -> dict[str, str]:
    if mode not in CPU_PATHS:
        raise ValueError(f"unknown CPU paths {mode!r}; choose from {', '.join(CPU_PATHS)}")
    return CPU_PATHS[mode]


def pin(mode: str) -> None:
    """Set the environment of `mode` for this process and the processes it starts; effective
    only for libraries that load afterwards (see `check`)."""
    os.environ.update(_known(mode))


def active() -> dict[str, str]:
    """The code paths this process computes on, as each library reports them."""
    import torch
    from numpy._core._multiarray_umath import __cpu_features__
    from threadpoolctl import threadpool_info

    blas = [i.get("architecture") for i in threadpool_info() if i["internal_api"] == "openblas"]
    return {
        "torch": torch.backends.cpu.get_cpu_capability(),
        "numpy": "X86_V4"
        if __cpu_features__.get("X86_V4")
        else "X86_V3"
        if __cpu_features__.get("X86_V3")
        else "baseline",
        "openblas": ",".join(sorted({str(b) for b in blas})) or "none loaded",
    }


def check(mode: str) -> None:
    """Raise `UnpinnedProcess` unless this process computes on the paths of `mode`: torch on
    AVX2, numpy without its AVX-512 loops, OpenBLAS (where loaded) on Haswell kernels, and the
    MKL/oneDNN settings present in the environment (they cannot be read back)."""
    wanted = _known(mode)
    if not wanted:
        return
    paths = active()
    missing = [k for k, v in wanted.items() if os.environ.get(k) != v]
    problems = [f"{k} is not {wanted[k]!r}" for k in missing]
    if paths["torch"] != "AVX2":
        problems.append(f"torch computes on {paths['torch']}, not AVX2")
    if paths["numpy"] != "X86_V3":
        problems.append(f"numpy computes on {paths['numpy']}, not X86_V3 (AVX2 + FMA)")
    if paths["openblas"] not in ("Haswell", "none loaded"):
        problems.append(f"OpenBLAS computes on {paths['openblas']}, not Haswell")
    if problems:
        raise UnpinnedProcess(
            f"CPU paths {mode!r} are not in effect in this process ({'; '.join(problems)}): "
            "they are set before torch loads (smartclip.reproducible.pin) and need a CPU with "
            "AVX2 and FMA; use cpu_paths 'native' to compute on this CPU's own paths"
        )


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where it exists)."""
    info = Path("/proc/cpuinfo")
    if info.exists():
        for line in info.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine(mode: str) -> dict[str, object]:
    """What a result's config.json records about where it was computed: the CPU, the pinned
    settings and the library versions (`check` verifies the pins in each computing process)."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpu": cpu_model(),
        "cpu_paths": mode,
        "pinned": _known(mode),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": versions,
    }
