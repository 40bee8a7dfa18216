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


def test_the_event_file_is_read_in_complete_lines(tmp_path):
    """The training process appends JSON lines; a reader takes only complete ones, and the rest on its next read."""
    from wdscale.show.jobs import _Tail

    path = tmp_path / "events.jsonl"
    tail = _Tail(path)
    assert tail.read() == []  # no file yet
    path.write_text('{"type": "plan", "cached": 0}\n{"type": "ch')
    assert tail.read() == [{"type": "plan", "cached": 0}]
    with open(path, "a") as f:
        f.write('unk", "index": 0}\n')
    assert tail.read() == [{"type": "chunk", "index": 0}]
    assert tail.read() == []


def test_a_job_is_fed_from_its_events_and_reads_records_from_the_store(store):
    """Records reach the page through the store: the event names the run, the Job reads its record there."""
    import dataclasses

    from wdscale.training.sweep import run_sweep

    cs = expand_grid("synthetic", [32], 32, ["mup"], [1e-2], [0.1], 5, [0], batch_size=8)
    [rec] = run_sweep(cs, store)
    j = Job("z", [])
    j.feed({"type": "configs", "configs": [dataclasses.asdict(c) for c in cs]}, store)
    assert j.info == {cs[0].run_id: {"rule": "mup", "width": 32, "lr": 1e-2, "wd": 0.1, "seed": 0}}
    j.feed({"type": "process", "pid": 4242, "threads": 2, "nice": 10, "policy": "default"}, store)
    j.feed({"type": "record", "run_id": rec["run_id"], "cached": False}, store)
    j.feed({"type": "record", "run_id": "0" * 16, "cached": False}, store)  # not in the store: nothing to show
    snap = j.snapshot()
    assert snap["pid"] == 4242 and snap["process"]["threads"] == 2
    assert [r["run_id"] for r in snap["records"]] == [rec["run_id"]] and snap["records"][0]["cached"] is False


def test_exit_messages_say_what_happened():
    import signal

    from wdscale.show.jobs import exit_message

    assert "exited with code 3" in exit_message(3) and "os._exit" in exit_message(3)
    killed = exit_message(-signal.SIGKILL)
    assert "killed (SIGKILL)" in killed and "out-of-memory killer" in killed
    assert exit_message(-signal.SIGKILL, oom=True).startswith("out of memory")
    assert "crashed (SIGSEGV)" in exit_message(-signal.SIGSEGV)
