import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def store(tmp_path):
    from wdscale.store import RunStore

    return RunStore(tmp_path / "runs")
