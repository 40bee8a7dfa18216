import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def store(tmp_path):
    from wdscale.training.store import RunStore

    return RunStore(tmp_path / "runs")


@pytest.fixture
def one_thread():
    """Tiny models run faster on one thread, and far faster when other jobs share the cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
