"""Files on local disk: job inputs and attempt-scoped artifacts, written atomically; and the
choice of store (`open_storage`): this one, or an S3-compatible bucket (`coordinator.s3storage`)."""
from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Mapping

from shared.files import make_folder
from shared.protocol import is_valid_artifact_name

from . import durability
from .errors import BadRequest, PayloadTooLarge

logger = logging.getLogger(__name__)

CHUNK_SIZE = 1024 * 1024
TEMP_PREFIX = ".upload-"
_JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX_RE = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


@dataclass(frozen=True)
class StoredFile:
    """A file written into the store."""

    relpath: str
    size: int
    sha256: str


def is_job_id(value: str) -> bool:
    """True if `value` has the shape of a job id (uuid4 hex)."""
    return bool(_JOB_ID_RE.match(value or ""))


@dataclass(frozen=True)
class Received:
    """An upload streamed into a private temp file, checked and fsynced, not yet published."""

    path: Path
    size: int
    sha256: str


def parse_storage_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix"); ValueError naming what is wrong."""
    scheme, _, rest = str(url).partition("://")
    bucket, _, prefix = rest.partition("/")
    prefix = prefix.strip("/")
    if scheme != "s3" or not _BUCKET_RE.match(bucket):
        raise ValueError(f"STORAGE_URL must look like s3://bucket/prefix, not {url!r}")
    if prefix and (not _PREFIX_RE.match(prefix) or ".." in prefix.split("/")):
        raise ValueError(f"STORAGE_URL prefix {prefix!r}: use letters, digits, '.', '_', '-', '/'")
    return bucket, prefix


def open_storage(config: Mapping[str, Any]) -> Any:
    """The store `STORAGE_URL` names, prepared: files under DATA_DIR (unset, the default) or an
    S3-compatible bucket (`s3://bucket/prefix`, needs boto3: `pip install dubfleet[s3]`)."""
    Path(config["DATA_DIR"]).mkdir(parents=True, exist_ok=True)  # the SQLite database lives there
    if not config.get("STORAGE_URL"):
        storage: Any = Storage(config["DATA_DIR"])
    else:
        try:
            from .s3storage import S3Storage
        except ImportError as exc:  # boto3 is an optional dependency
            raise ValueError(f"STORAGE_URL=s3://... needs boto3 (pip install 'dubfleet[s3]'): {exc}") from exc
        storage = S3Storage.from_config(config)
    storage.prepare()
    return storage


class Layout:
    """Where each file of a job lives, relative to the store's root (shared by every store)."""

    @staticmethod
    def input_relpath(job_id: str) -> str:
        """Where a job's uploaded input lives."""
        if not is_job_id(job_id):
            raise ValueError(f"bad job id {job_id!r}")
        return f"inputs/{job_id}/input"

    @staticmethod
    def subtitles_relpath(job_id: str) -> str:
        """Where a dub's own subtitles live (next to its input: removed with the job's folder)."""
        if not is_job_id(job_id):
            raise ValueError(f"bad job id {job_id!r}")
        return f"inputs/{job_id}/subtitles"

    @staticmethod
    def parent_relpath(job_id: str) -> str:
        """Where a re-dub keeps its copy of the parent's segment bundle (next to its input)."""
        if not is_job_id(job_id):
            raise ValueError(f"bad job id {job_id!r}")
        return f"inputs/{job_id}/parent_segments"

    @staticmethod
    def artifact_dir(job_id: str, run: int) -> str:
        """The folder of one run's artifacts."""
        if not is_job_id(job_id) or run < 0:
            raise ValueError(f"bad artifact location {job_id!r}/{run}")
        return f"artifacts/{job_id}/a{int(run)}"

    @classmethod
    def artifact_relpath(cls, job_id: str, run: int, name: str, unique: str | None = None) -> str:
        """Where one upload of an artifact is published (`unique` tells uploads apart)."""
        if not is_valid_artifact_name(name):
            raise ValueError(f"bad artifact location {job_id!r}/{run}/{name!r}")
        suffix = f"~{unique}" if unique else ""
        return f"{cls.artifact_dir(job_id, run)}/{name}{suffix}"


class Storage(Layout):
    """The data directory: `inputs/<job>/input` (and a dub's `inputs/<job>/subtitles`) and
    `artifacts/<job>/a<run>/<name>~<unique>`.

    Every upload first streams into its own temp file (`.upload-*`); it is published by an atomic
    rename to a path no other upload can have, so a racing or repeated upload never touches a
    published file. A published file belongs to the data set once a row points to it; files no
    row points to are swept after a grace period (see `coordinator.sweeper`).
    """

    direct = False  # bytes pass through the coordinator (an object store moves them directly)

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self._root = str(self.root)
        self._prefix = os.path.join(self._root, "")  # the root and a separator

    def describe(self) -> str:
        """Where files go, for the start-up log."""
        return str(self.root)

    def prepare(self) -> None:
        """Create the directory layout."""
        for sub in ("inputs", "artifacts"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def resolve(self, relpath: str) -> Path:
        """The absolute path of a stored file (refuses anything outside the root).

        The check is lexical (`..`, absolute paths): every path below the root is one this
        store made, from checked job ids and artifact names, and it never makes links; so no
        file-system call per lookup (realpath cost a tiny job's upload about 5 % of its CPU)."""
        path = os.path.normpath(os.path.join(self._root, relpath))
        if not path.startswith(self._prefix):
            raise ValueError(f"path outside the data directory: {relpath!r}")
        return Path(path)

    def relative(self, path: Path) -> str:
        """A stored file's path relative to the root (as rows record it)."""
        return path.resolve().relative_to(self.root).as_posix()

    def save_input(self, job_id: str, stream: BinaryIO, limit: int) -> StoredFile:
        """Stream a job's input to disk and publish it (the job id is fresh: no one races it)."""
        folder = self.resolve(self.input_relpath(job_id)).parent
        received = self.receive(folder, stream, limit, None, allow_empty=False)
        return self._publish(received, self.input_relpath(job_id))

    def save_subtitles(self, job_id: str, data: bytes) -> StoredFile:
        """Store a dub's (already checked) subtitles next to its input."""
        folder = self.resolve(self.subtitles_relpath(job_id)).parent
        received = self.receive(folder, io.BytesIO(data), len(data), None, allow_empty=False)
        return self._publish(received, self.subtitles_relpath(job_id))

    def receive_artifact(self, job_id: str, run: int, stream: BinaryIO, limit: int,
                         expected_sha256: str | None = None) -> Received:
        """Stream an upload into a temp file in the run's folder (empty is fine: subtitles of
        silence); a SHA-256 mismatch or an oversize body keeps nothing."""
        folder = self.resolve(self.artifact_dir(job_id, run))
        return self.receive(folder, stream, limit, expected_sha256, allow_empty=True)

    def publish_artifact(self, received: Received, job_id: str, run: int, name: str) -> StoredFile:
        """Rename a received upload to its own unique published path."""
        relpath = self.artifact_relpath(job_id, run, name, uuid.uuid4().hex[:16])
        return self._publish(received, relpath)

    def save_artifact(self, job_id: str, run: int, name: str, stream: BinaryIO, limit: int,
                      expected_sha256: str | None = None) -> StoredFile:
        """Receive and publish in one step (tools and tests; the API publishes under a lock)."""
        received = self.receive_artifact(job_id, run, stream, limit, expected_sha256)
        return self.publish_artifact(received, job_id, run, name)

    def write_artifact(self, job_id: str, run: int, name: str, data: bytes) -> StoredFile:
        """Publish a small artifact the coordinator made itself (an edited summary) as a new file
        of the run; the same call on every store (`S3Storage.write_artifact`)."""
        return self.save_artifact(job_id, run, name, io.BytesIO(data), len(data))

    def receive(self, folder: Path, stream: BinaryIO, limit: int, expected_sha256: str | None,
                allow_empty: bool) -> Received:
        """Write to a fresh temp file in `folder`, check it and fsync it."""
        make_folder(folder)
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX)
        try:
            with os.fdopen(fd, "wb") as out:
                size, digest = _copy(stream, out, limit)
                out.flush()
                durability.sync_file(out.fileno())
            check_upload(size, digest, expected_sha256, allow_empty)
        except BaseException:
            _unlink(Path(tmp_name))
            raise
        return Received(path=Path(tmp_name), size=size, sha256=digest)

    def _publish(self, received: Received, relpath: str) -> StoredFile:
        """Atomically rename a received temp file to `relpath` and make the rename durable."""
        target = self.resolve(relpath)
        os.replace(received.path, target)
        durability.sync_rename(target)
        logger.debug("stored %s (%d bytes)", relpath, received.size)
        return StoredFile(relpath=relpath, size=received.size, sha256=received.sha256)

    def copy(self, source: str, target: str) -> None:
        """Give a stored (never rewritten) file a second path: a hard link where the file
        system allows, else a copy; deleting either path later leaves the other intact."""
        src, dst = self.resolve(source), self.resolve(target)
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)

    def read_bytes(self, relpath: str, limit: int) -> bytes:
        """A small stored file's bytes (PayloadTooLarge past `limit`)."""
        with open(self.resolve(relpath), "rb") as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise PayloadTooLarge(f"{relpath.rsplit('/', 1)[-1]} is larger than {limit} bytes")
        return data

    def discard(self, received: Received | None) -> None:
        """Delete a temp file that was not published (no-op once it was renamed away)."""
        if received is not None:
            _unlink(received.path)

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


def check_upload(size: int, digest: str, expected_sha256: str | None, allow_empty: bool) -> None:
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
