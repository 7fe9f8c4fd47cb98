"""Suite-wide settings: with several pytest-xdist workers on a small machine, each worker (and the
processes it starts) computes with one thread, so the workers share the cores instead of
oversubscribing them (OpenMP threads spin while they wait: with 2 workers x 2 threads on 2 cores
the suite spent much of its CPU time spinning)."""

import os

import pytest
import torch

if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def one_thread():
    """Torch computes with one thread while the module runs: tiny networks gain nothing from
    threads (and lose under load), and some results are compared bit for bit with subprocesses
    that run single-threaded."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
