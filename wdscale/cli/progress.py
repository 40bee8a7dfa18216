"""Progress on stderr for long commands: one tqdm line per ensemble (stdout stays clean for --json)."""
from __future__ import annotations

import sys


def progress_bar():
    """Progress on stderr: one line per ensemble, steps as they go."""
    from tqdm import tqdm

    class Bar:
        t = None

        def __call__(self, e):
            if e["type"] == "notice":  # e.g. which member path a model file trains on, and why
                (tqdm.write if self.t else print)(e["text"], file=sys.stderr)
            elif e["type"] == "start":
                if self.t:
                    self.t.close()
                self.t = tqdm(total=e["steps"], desc=f"width {e['width']} x {e['n_members']} members",
                              unit="step", file=sys.stderr, mininterval=2, leave=False)
            elif e["type"] in ("step", "done") and self.t:
                self.t.n = e["step"]
                self.t.refresh()

        def close(self):
            if self.t:
                self.t.close()

    return Bar()
