"""Files on local disk: job inputs and attempt-scoped artifacts, written atomically."""
from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from shared.protocol import is_valid_artifact_name

from .errors import BadRequest, PayloadTooLarge

logger = logging.getLogger(__name__)

CHUNK_SIZE = 1024 * 1024
_JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class StoredFile:
    """A file written into the store."""

    relpath: str
    size: int
    sha256: str


def is_job_id(value: str) -> bool:
    """True if `value` has the shape of a job id (uuid4 hex)."""
    return bool(_JOB_ID_RE.match(value or ""))


def _fsync_dir(path: Path) -> None:
    """Make a rename durable (best effort where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class Storage:
    """The data directory: `inputs/<job>/input` and `artifacts/<job>/a<run>/<name>`."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()

    def prepare(self) -> None:
        """Create the directory layout."""
        for sub in ("inputs", "artifacts"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def resolve(self, relpath: str) -> Path:
        """The absolute path of a stored file (refuses anything outside the root)."""
        path = (self.root / relpath).resolve()
        if self.root not in path.parents:
            raise ValueError(f"path outside the data directory: {relpath!r}")
        return path

    @staticmethod
    def input_relpath(job_id: str) -> str:
        """Where a job's uploaded input lives."""
        if not is_job_id(job_id):
            raise ValueError(f"bad job id {job_id!r}")
        return f"inputs/{job_id}/input"

    @staticmethod
    def artifact_relpath(job_id: str, run: int, name: str) -> str:
        """Where an artifact of one run lives."""
        if not is_job_id(job_id) or not is_valid_artifact_name(name) or run < 0:
            raise ValueError(f"bad artifact location {job_id!r}/{run}/{name!r}")
        return f"artifacts/{job_id}/a{int(run)}/{name}"

    def save_input(self, job_id: str, stream: BinaryIO, limit: int) -> StoredFile:
        """Stream a job's input to disk."""
        return self._save(self.input_relpath(job_id), stream, limit, None, allow_empty=False)

    def save_artifact(self, job_id: str, run: int, name: str, stream: BinaryIO, limit: int,
                      expected_sha256: str | None = None) -> StoredFile:
        """Stream an artifact to disk (empty is fine: subtitles of silence); a SHA-256 mismatch stores nothing."""
        return self._save(self.artifact_relpath(job_id, run, name), stream, limit, expected_sha256,
                          allow_empty=True)

    def _save(self, relpath: str, stream: BinaryIO, limit: int,
              expected_sha256: str | None, allow_empty: bool) -> StoredFile:
        """Write to a temp file beside the target, check it, fsync, then rename into place."""
        target = self.resolve(relpath)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                size, digest = _copy(stream, out, limit)
                out.flush()
                os.fsync(out.fileno())
            _check_upload(size, digest, expected_sha256, allow_empty)
            os.replace(tmp_name, target)
        except BaseException:
            _unlink(Path(tmp_name))
            raise
        _fsync_dir(target.parent)
        logger.debug("stored %s (%d bytes)", relpath, size)
        return StoredFile(relpath=relpath, size=size, sha256=digest)

    def remove(self, relpath: str) -> None:
        """Delete one stored file if present."""
        _unlink(self.resolve(relpath))

    def remove_job(self, job_id: str) -> None:
        """Delete everything stored for a job."""
        if not is_job_id(job_id):
            return
        for sub in ("inputs", "artifacts"):
            shutil.rmtree(self.root / sub / job_id, ignore_errors=True)

    def probe(self) -> None:
        """Write, read back and delete a small file; raises OSError when storage is unusable."""
        path = self.root / f".health-{uuid.uuid4().hex}"
        try:
            path.write_bytes(b"ok")
            if path.read_bytes() != b"ok":
                raise OSError("storage probe read back different bytes")
        finally:
            _unlink(path)


def _copy(stream: BinaryIO, out: BinaryIO, limit: int) -> tuple[int, str]:
    """Copy in 1 MiB chunks, hashing on the fly and stopping past `limit` bytes."""
    digest = hashlib.sha256()
    size = 0
    while True:
        chunk = stream.read(CHUNK_SIZE)
        if not chunk:
            return size, digest.hexdigest()
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the upload is larger than {limit // (1024 * 1024)} MB")
        digest.update(chunk)
        out.write(chunk)


def _check_upload(size: int, digest: str, expected_sha256: str | None, allow_empty: bool) -> None:
    """Reject checksum mismatches, and empty uploads where content is required."""
    if size == 0 and not allow_empty:
        raise BadRequest("the uploaded file is empty")
    if expected_sha256 and expected_sha256 != digest:
        raise BadRequest("X-Content-SHA256 does not match the uploaded bytes",
                         expected=expected_sha256, actual=digest)


def _unlink(path: Path) -> None:
    """Remove a file, ignoring a missing one."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass
