from wdscale.show.jobs import Job
from wdscale.training.sweep import expand_grid


def test_interleaved_chunk_events_are_kept_apart():
    """Under Ray two chunks train at once; each chunk's losses must go to its own runs."""
    cs = expand_grid("synthetic", [32, 64], 32, ["mup"], [1e-2], [0.1], 10)
    j = Job("x", cs)
    j.on_event({"type": "plan", "cached": 0, "to_train": 2, "chunks": 2})
    for k, c in enumerate(cs):
        j.on_event({"type": "start", "chunk": k, "width": c.width, "run_ids": [c.run_id], "n_members": 1,
                    "steps": 10})
    j.on_event({"type": "step", "chunk": 0, "step": 5, "loss": [1.0], "alive": [True]})
    j.on_event({"type": "step", "chunk": 1, "step": 3, "loss": [2.0], "alive": [False]})
    assert j.curves[cs[0].run_id] == [[5, 1.0]] and j.curves[cs[1].run_id] == []
    assert j.diverged == {cs[1].run_id} and j.done_member_steps == 8


def test_sequential_chunks_sum_progress():
    cs = expand_grid("synthetic", [32, 64], 32, ["mup"], [1e-2], [0.1], 10)
    j = Job("y", cs)
    j.on_event({"type": "plan", "cached": 0, "to_train": 2, "chunks": 2})
    for c in cs:
        j.on_event({"type": "start", "width": c.width, "run_ids": [c.run_id], "n_members": 1, "steps": 10})
        j.on_event({"type": "step", "step": 10, "loss": [1.0], "alive": [True]})
        j.on_event({"type": "done", "step": 10})
    assert j.done_member_steps == j.total_member_steps == 20
