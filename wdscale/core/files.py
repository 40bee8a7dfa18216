"""Writing files so that a kill never leaves a torn one: the one atomic save every trainer's checkpoint goes through
(``training.train`` and ``models.own``).  In core, the lowest layer, so every layer above may use it."""
from __future__ import annotations

import os
from pathlib import Path

import torch


def atomic_save(path: str | os.PathLike, state) -> bool:
    """``torch.save(state, path)`` through a temporary file and ``os.replace``: a kill during the write leaves the
    previous file, never a torn one.  Never raises OSError: on a read-only or full disk it returns False and the
    caller goes on (a checkpoint is crash insurance, not a result); True once the file is in place."""
    path = Path(path)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, tmp)
        os.replace(tmp, path)
    except OSError:
        try:
            tmp.unlink(missing_ok=True)  # a half-written temporary file is no use to anyone
        except OSError:
            pass
        return False
    return True
