import numpy as np
import pytest
import torch

from wdscale.models import data
from wdscale.models.data import TextData, check_corpus, load_corpus, min_bytes, split


def text_file(tmp_path, n_bytes, name="t.txt"):
    line = "def f(x):\n    return x * 2  # doubling\n"
    p = tmp_path / name
    p.write_text((line * (n_bytes // len(line) + 1))[:n_bytes], encoding="utf-8")
    return str(p)


def test_stdlib_corpus_is_deterministic_text_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("WDSCALE_CACHE", str(tmp_path / "cache"))
    data._load.cache_clear()
    arr = load_corpus("stdlib")
    assert 1_000_000 < len(arr) <= data.STDLIB_CAP and arr.dtype == np.uint8
    assert b"def " in arr[:100_000].tobytes()
    arr.tobytes().decode("utf-8")  # whole files only, all valid UTF-8
    assert list(tmp_path.joinpath("cache").glob("stdlib-*.npy"))
    # second process-equivalent load comes from the .npy cache, not the sources
    data._load.cache_clear()
    monkeypatch.setattr(data, "_read_stdlib", lambda *a: pytest.fail("re-read the sources despite the cache"))
    again = load_corpus("stdlib")
    assert np.array_equal(arr, again)
    data._load.cache_clear()
    files = data.stdlib_files()
    assert len(files) > 100 and files == sorted(files, key=lambda p: p.as_posix())
    assert not any("site-packages" in p.parts for p in files)


def test_split_is_the_tail():
    arr = np.arange(1000, dtype=np.int64) % 256
    tr, va = split(arr)
    assert len(va) == int(1000 * data.VAL_FRACTION) and np.array_equal(np.concatenate([tr, va]), arr)


@pytest.mark.parametrize("content,msg", [(b"", "empty"), (b"hello\x00world" * 2000, "binary"),
                                         ("caf\u00e9 ".encode("latin-1") * 5000, "UTF-8")])
def test_bad_files_raise_one_line_value_error(tmp_path, content, msg):
    p = tmp_path / "bad.txt"
    p.write_bytes(content)
    with pytest.raises(ValueError, match=msg) as e:
        check_corpus(str(p), 32, 4)
    assert "\n" not in str(e.value)


def test_too_short_and_missing_files(tmp_path):
    need = min_bytes(64, 8)
    with pytest.raises(ValueError, match="too short"):
        check_corpus(text_file(tmp_path, need - 1), 64, 8)
    assert len(check_corpus(text_file(tmp_path, need, "ok.txt"), 64, 8)) == need
    with pytest.raises(ValueError, match="not a readable file"):
        check_corpus(str(tmp_path / "nope.txt"), 64, 8)


def test_batches_are_seeded_windows_of_the_train_split(tmp_path):
    path = text_file(tmp_path, 50_000)
    raw = np.frombuffer(open(path, "rb").read(), np.uint8)
    train, val = split(raw)
    a, b, c = TextData(path, 32, 6, data_seed=0), TextData(path, 32, 6, data_seed=0), TextData(path, 32, 6, 1)
    xa, xb, xc = next(a), next(b), next(c)
    assert xa.shape == (6, 33) and xa.dtype == torch.int64
    assert torch.equal(xa, xb) and not torch.equal(xa, xc)
    tb = train.tobytes()
    for row in xa:
        assert bytes(row.to(torch.uint8).tolist()) in tb
    # validation: fixed windows of the tail, the same whatever the seed or batch size
    d = TextData(path, 32, 3, data_seed=7)
    assert all(torch.equal(u, v) for u, v in zip(a.val, d.val)) and len(a.val) == len(d.val) >= 2
    vb = val.tobytes()
    assert all(bytes(row.to(torch.uint8).tolist()) in vb for batch in a.val for row in batch)
