"""Exception classes that decide the CLI's exit code: bad input (2) or a problem with the environment (1).

``BadInput`` subclasses ValueError so code that already catches ValueError (the app's forms) keeps working;
``EnvironmentProblem`` covers what the user cannot fix by retyping the command (a read-only or corrupt store,
a missing optional package).
"""
from __future__ import annotations


class BadInput(ValueError):
    """The user asked for something wrong: exit code 2."""


class EnvironmentProblem(RuntimeError):
    """The machine, a file or a package is not as needed: exit code 1."""


class StoreError(EnvironmentProblem):
    """The run store cannot be used as asked (read-only, unwritable)."""


class StoreCorrupt(StoreError):
    """index.sqlite is not a readable SQLite database."""


class DamagedRun(StoreError):
    """A run's weights or spectra file is missing or corrupt."""

    def __init__(self, run_id: str, why: str):
        self.run_id, self.why = run_id, why
        super().__init__(f"run {run_id} is damaged: {why} (`wdscale runs --check --repair` drops it; rerunning "
                         "its sweep retrains it)")
