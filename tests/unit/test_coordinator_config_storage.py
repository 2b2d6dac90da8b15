"""Settings layering and the file store."""
from __future__ import annotations

import hashlib
import io

import pytest

from coordinator import config
from coordinator.errors import BadRequest, PayloadTooLarge
from coordinator.storage import Storage


@pytest.mark.parametrize("url, expected", [
    ("postgres://u:p@h/db", "postgresql+psycopg://u:p@h/db"),
    ("postgresql://u@h:5432/db", "postgresql+psycopg://u@h:5432/db"),
    ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
    ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
])
def test_database_url_normalized(url, expected):
    assert config.normalize_database_url(url) == expected


def test_layers_defaults_env_then_explicit(tmp_path):
    env = {"DUBFLEET_DATA_DIR": str(tmp_path / "env"), "LEASE_SECONDS": "30", "MAX_ATTEMPTS": "5",
           "CALLBACKS_ENABLED": "false", "COORDINATOR_THREADS": "12"}
    built = config.build({"MAX_ATTEMPTS": 2}, environ=env)
    assert built["DATA_DIR"] == str((tmp_path / "env").resolve())
    assert built["LEASE_SECONDS"] == 30.0 and built["MAX_ATTEMPTS"] == 2
    assert built["CALLBACKS_ENABLED"] is False and built["MAX_CLAIM_WAITERS"] == 8
    assert built["SQLALCHEMY_DATABASE_URI"].startswith("sqlite:///") and built["MAX_UPLOAD_BYTES"] == 2048 * 2**20


def test_bad_env_values_are_reported(tmp_path):
    with pytest.raises(ValueError, match="LEASE_SECONDS"):
        config.build(environ={"LEASE_SECONDS": "soon", "DUBFLEET_DATA_DIR": str(tmp_path)})
    with pytest.raises(ValueError, match="MAX_ATTEMPTS"):
        config.build({"MAX_ATTEMPTS": 0, "DATA_DIR": str(tmp_path)}, environ={})


def test_storage_streams_hashes_and_places_files(tmp_path):
    store = Storage(tmp_path)
    job_id = "a" * 32
    stored = store.save_artifact(job_id, 2, "dub.mp4", io.BytesIO(b"x" * 3_000_000), 10**7)
    assert stored.relpath.startswith(f"artifacts/{job_id}/a2/dub.mp4~") and stored.size == 3_000_000
    assert stored.sha256 == hashlib.sha256(b"x" * 3_000_000).hexdigest()
    assert [p.name for p in (tmp_path / "artifacts" / job_id / "a2").iterdir()] == [stored.relpath.split("/")[-1]]
    again = store.save_artifact(job_id, 2, "dub.mp4", io.BytesIO(b"y"), 10)
    assert again.relpath != stored.relpath, "every upload is published at its own path"
    assert store.resolve(stored.relpath).read_bytes() == b"x" * 3_000_000


def test_storage_rejects_oversize_empty_mismatch_and_bad_names(tmp_path):
    store = Storage(tmp_path)
    job_id = "b" * 32
    with pytest.raises(PayloadTooLarge):
        store.save_input(job_id, io.BytesIO(b"x" * 11), 10)
    with pytest.raises(BadRequest):
        store.save_input(job_id, io.BytesIO(b""), 10)
    with pytest.raises(BadRequest):
        store.save_artifact(job_id, 1, "r", io.BytesIO(b"abc"), 10, expected_sha256="0" * 64)
    for name in ("../../etc/passwd", "..", "a/b", ".x"):
        with pytest.raises(ValueError):
            store.artifact_relpath(job_id, 1, name)
    with pytest.raises(ValueError):
        store.input_relpath("../" + "c" * 29)
    with pytest.raises(ValueError):
        store.resolve("../outside")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("relpath", ["../outside", "/etc/passwd", "inputs/../../x", "", ".",
                                     "artifacts/../..", "//etc/passwd"])
def test_storage_resolve_refuses_paths_outside_the_root(tmp_path, relpath):
    store = Storage(tmp_path / "data")
    (tmp_path / "data-other").mkdir()  # a sibling sharing the root's name as a prefix
    with pytest.raises(ValueError):
        store.resolve(relpath)
    with pytest.raises(ValueError):
        store.resolve("../data-other/x")


def test_storage_resolve_places_paths_below_the_root(tmp_path):
    store = Storage(tmp_path)
    root = tmp_path.resolve()
    assert store.resolve("inputs/x/input") == root / "inputs" / "x" / "input"
    assert store.resolve("artifacts/./j/../j/a1/r~u") == root / "artifacts" / "j" / "a1" / "r~u"


def test_storage_probe_and_remove_job(tmp_path):
    store = Storage(tmp_path)
    store.probe()
    job_id = "c" * 32
    store.save_input(job_id, io.BytesIO(b"data"), 100)
    store.remove_job(job_id)
    assert not (tmp_path / "inputs" / job_id).exists()
