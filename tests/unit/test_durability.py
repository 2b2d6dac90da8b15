"""Stored files are made durable before a row points to them: one by one, or a batch at once."""
from __future__ import annotations

import io

import pytest

from coordinator import durability
from coordinator.storage import Storage


@pytest.fixture
def synced(monkeypatch):
    """Record fsyncs (by fd and by path) and syncfs calls instead of making them."""
    calls: list[tuple] = []
    monkeypatch.setattr(durability.os, "fsync", lambda fd: calls.append(("fsync", fd)))
    monkeypatch.setattr(durability, "fsync_path", lambda path: calls.append(("path", path)))
    return calls


def _store(storage: Storage, name: str, data: bytes) -> str:
    received = storage.receive_artifact("a" * 32, 1, io.BytesIO(data), 1024)
    return storage.publish_artifact(received, "a" * 32, 1, name).relpath


def test_an_upload_alone_syncs_its_file_then_its_folder(tmp_path, synced):
    storage = Storage(tmp_path)
    relpath = _store(storage, "result", b"x")
    assert [c[0] for c in synced] == ["fsync", "path"]
    assert synced[1][1] == storage.resolve(relpath).parent


def test_a_deferred_batch_is_synced_once_at_the_end(tmp_path, synced, monkeypatch):
    fs_calls: list[int] = []
    monkeypatch.setattr(durability, "_SYNCFS", lambda fd: fs_calls.append(fd) or 0)
    storage = Storage(tmp_path)
    with durability.deferred(storage.root):
        paths = [_store(storage, f"r{n}", b"x") for n in range(3)]
        assert synced == [] and fs_calls == []  # nothing yet
    assert synced == [] and len(fs_calls) == 1  # one syncfs for the three files
    assert all(storage.resolve(p).read_bytes() == b"x" for p in paths)


def test_without_syncfs_each_published_file_and_folder_is_synced(tmp_path, synced, monkeypatch):
    monkeypatch.setattr(durability, "_SYNCFS", None)
    storage = Storage(tmp_path)
    with durability.deferred(storage.root):
        paths = [_store(storage, f"r{n}", b"x") for n in range(2)]
    folder = storage.resolve(paths[0]).parent
    assert synced == [("path", storage.resolve(paths[0])), ("path", folder), ("path", storage.resolve(paths[1]))]


def test_a_failed_syncfs_falls_back_to_each_file(tmp_path, synced, monkeypatch):
    monkeypatch.setattr(durability, "_SYNCFS", lambda fd: -1)
    storage = Storage(tmp_path)
    with durability.deferred(storage.root):
        path = _store(storage, "r", b"x")
    assert ("path", storage.resolve(path)) in synced


def test_a_block_that_raises_syncs_nothing(tmp_path, synced, monkeypatch):
    fs_calls: list[int] = []
    monkeypatch.setattr(durability, "_SYNCFS", lambda fd: fs_calls.append(fd) or 0)
    storage = Storage(tmp_path)
    with pytest.raises(RuntimeError), durability.deferred(storage.root):
        _store(storage, "r", b"x")
        raise RuntimeError("refused")
    assert fs_calls == [] and synced == []
    _store(storage, "after", b"y")  # and the thread syncs one by one again
    assert [c[0] for c in synced] == ["fsync", "path"]


def test_the_real_syncfs_runs_here(tmp_path):
    storage = Storage(tmp_path)
    with durability.deferred(storage.root):
        path = _store(storage, "r", b"real")
    assert storage.resolve(path).read_bytes() == b"real"
