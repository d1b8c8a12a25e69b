"""Test-session settings: one BLAS/OpenMP thread per test process (pytest-xdist runs one process
per core; nested thread pools oversubscribe the cores and slow kernel ridge fits tens of times)."""

import torch
from threadpoolctl import threadpool_limits

torch.set_num_threads(1)
threadpool_limits(1)
