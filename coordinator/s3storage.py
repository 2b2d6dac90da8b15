"""Files in an S3-compatible object store (AWS S3, Cloudflare R2, MinIO) through boto3.

The layout is the local store's (`storage.Layout`) under the URL's prefix, and rows record keys
relative to the prefix exactly as they record local paths. A client's input streams from its
request into the bucket in bounded parts. Everything else moves directly between the store and
workers or clients with presigned URLs: workers download inputs with a presigned GET and upload
results with a presigned PUT (or one per part of a multipart upload) to a key unique to that
upload; the coordinator checks the object's size and sha256 (reading it once, 1 MiB at a time)
before a row points to the key (`coordinator.direct`). Clients download through a redirect to a
presigned GET.
"""
from __future__ import annotations

import hashlib
import io
import logging
import math
import uuid
from contextlib import closing
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Mapping

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from .errors import BadRequest, CoordinatorError, NotFound, PayloadTooLarge, ServiceUnavailable
from .storage import Layout, StoredFile, check_upload, is_job_id, parse_storage_url

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
HASH_CHUNK = MIB
STREAM_PART = 8 * MIB  # parts of the coordinator's own uploads (a client's input): memory per upload
MAX_PARTS = 10_000  # S3's limit per multipart upload
MAX_SLOT_PARTS = 1_000  # presigned URLs in one slot reply; bigger results get bigger parts
DELETE_BATCH = 1_000  # keys per DeleteObjects request


def make_client(config: Mapping[str, Any]) -> Any:
    """A thread-safe boto3 S3 client: S3_ENDPOINT_URL, S3_REGION, credentials from boto3's chain."""
    endpoint = config.get("S3_ENDPOINT_URL") or None
    options = Config(
        signature_version="s3v4",
        # MinIO and most self-hosted stores serve buckets as paths, not as host names.
        s3={"addressing_style": "path" if endpoint else "auto"},
        retries={"max_attempts": 5, "mode": "standard"},
        connect_timeout=10, read_timeout=60,
        max_pool_connections=max(10, int(config.get("THREADS") or 10)),
        # boto3 >= 1.36 adds CRC checksums to every upload by default, which R2, MinIO and other
        # S3-compatible stores do not all accept; the sha256 is checked by the coordinator anyway.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required")
    return boto3.session.Session().client("s3", endpoint_url=endpoint,
                                          region_name=config.get("S3_REGION") or None, config=options)


def _code(exc: ClientError) -> str:
    """The S3 error code of a failed call ('NoSuchUpload', '404', ...)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    """The HTTP status of a failed call."""
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def _unavailable(what: str, exc: Exception) -> ServiceUnavailable:
    """A 503 for the caller (retry later) when the store cannot do `what` right now."""
    logger.warning("object storage: could not %s: %s", what, exc)
    error = ServiceUnavailable(f"object storage: could not {what}; retry shortly")
    error.headers["Retry-After"] = "5"
    return error


def _refused(what: str, exc: Exception) -> CoordinatorError:
    """The store refused a request about a worker's upload: 404 / 400, or 503 when it failed."""
    if not isinstance(exc, ClientError) or _status(exc) >= 500 or _status(exc) in (0, 403, 429):
        return _unavailable(what, exc)
    message = f"object storage refused to {what}: {_code(exc)}"
    return NotFound(message) if _status(exc) == 404 else BadRequest(message)


class _Metered:
    """Reads a request body in blocks, hashing and counting, refusing more than `limit` bytes."""

    def __init__(self, stream: BinaryIO, limit: int):
        self.stream, self.limit = stream, limit
        self.size = 0
        self.digest = hashlib.sha256()

    def block(self, size: int) -> bytes:
        """Up to `size` bytes (fewer only at the end of the body)."""
        chunks: list[bytes] = []
        got = 0
        while got < size:
            chunk = self.stream.read(min(HASH_CHUNK, size - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
            if self.size + got > self.limit:
                raise PayloadTooLarge(f"the upload is larger than {self.limit // MIB} MB")
        self.size += got
        data = b"".join(chunks)
        self.digest.update(data)
        return data


class S3Storage(Layout):
    """A bucket (and key prefix) holding the same files as the data directory would."""

    direct = True  # workers and clients move bytes to and from the store themselves

    def __init__(self, client: Any, bucket: str, prefix: str = "", *, part_size: int = 64 * MIB,
                 presign_ttl: float = 900.0):
        self.client, self.bucket = client, bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.part_size, self.ttl = part_size, presign_ttl

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "S3Storage":
        """The store STORAGE_URL names, with the S3_* and PRESIGN_TTL_SECONDS settings."""
        bucket, prefix = parse_storage_url(config["STORAGE_URL"])
        return cls(make_client(config), bucket, prefix, part_size=int(config["S3_PART_SIZE_MB"]) * MIB,
                   presign_ttl=float(config["PRESIGN_TTL_SECONDS"]))

    def describe(self) -> str:
        """Where files go, for the start-up log."""
        return f"s3://{self.bucket}/{self.prefix} at {self.client.meta.endpoint_url}"

    def key(self, relpath: str) -> str:
        """The object key of a path relative to the store's root."""
        if not relpath or relpath.startswith("/") or ".." in relpath.split("/"):
            raise ValueError(f"bad storage path {relpath!r}")
        return self.prefix + relpath

    def relative(self, key: str) -> str:
        """A key relative to the prefix (as rows record it)."""
        return key[len(self.prefix):]

    def prepare(self) -> None:
        """Nothing to create (the bucket is the operator's); log where files go."""
        logger.info("object storage: %s", self.describe())

    def probe(self) -> None:
        """Raise OSError when the bucket cannot be reached with these credentials."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            raise OSError(f"object storage: {exc}") from exc

    def _call(self, what: str, method: Callable[..., Any], **params: Any) -> Any:
        """One store request; a failure becomes a 503 for the caller."""
        try:
            return method(Bucket=self.bucket, **params)
        except (BotoCoreError, ClientError) as exc:
            raise _unavailable(what, exc) from exc

    # -- a client's input and subtitles: streamed through the coordinator ------------------------

    def save_input(self, job_id: str, stream: BinaryIO, limit: int) -> StoredFile:
        """Stream a job's input into the bucket (bounded memory), hashing it on the way."""
        return self._stream(self.input_relpath(job_id), stream, limit)

    def save_subtitles(self, job_id: str, data: bytes) -> StoredFile:
        """Store a dub's (already checked) subtitles next to its input."""
        return self._stream(self.subtitles_relpath(job_id), io.BytesIO(data), len(data))

    def write_artifact(self, job_id: str, run: int, name: str, data: bytes) -> StoredFile:
        """Publish a small artifact the coordinator made itself (an edited summary) as a new
        object of the run (one PUT; the same call as `Storage.write_artifact`)."""
        relpath = self.artifact_relpath(job_id, run, name, uuid.uuid4().hex[:16])
        return self._stream(relpath, io.BytesIO(data), len(data), allow_empty=True)

    def _stream(self, relpath: str, stream: BinaryIO, limit: int,
                allow_empty: bool = False) -> StoredFile:
        """One PUT when the body fits in a part, else a multipart upload, one part in memory."""
        reader = _Metered(stream, limit)
        part = max(STREAM_PART, math.ceil(limit / MAX_PARTS))
        first = reader.block(part)
        key = self.key(relpath)
        if len(first) < part:
            check_upload(reader.size, reader.digest.hexdigest(), None, allow_empty=allow_empty)
            self._call("store the upload", self.client.put_object, Key=key, Body=first)
        else:
            self._stream_parts(key, reader, first, part)
        logger.debug("stored %s (%d bytes)", key, reader.size)
        return StoredFile(relpath=relpath, size=reader.size, sha256=reader.digest.hexdigest())

    def _stream_parts(self, key: str, reader: _Metered, block: bytes, part: int) -> None:
        """Upload `block` and the rest of `reader` as parts; abort the upload on any failure."""
        upload_id = self._call("start an upload", self.client.create_multipart_upload, Key=key)["UploadId"]
        parts: list[dict[str, Any]] = []
        try:
            while block:
                number = len(parts) + 1
                reply = self._call("store a part", self.client.upload_part, Key=key, UploadId=upload_id,
                                   PartNumber=number, Body=block)
                parts.append({"PartNumber": number, "ETag": reply["ETag"]})
                block = reader.block(part)
            self._call("finish an upload", self.client.complete_multipart_upload, Key=key,
                       UploadId=upload_id, MultipartUpload={"Parts": parts})
        except BaseException:
            self.abort(self.relative(key), upload_id)
            raise

    def copy(self, source: str, target: str) -> None:
        """Copy a stored object to a second key inside the store (nothing passes through here)."""
        self._call("copy a file", self.client.copy_object, Key=self.key(target),
                   CopySource={"Bucket": self.bucket, "Key": self.key(source)})

    def read_bytes(self, relpath: str, limit: int) -> bytes:
        """A small stored object's bytes (PayloadTooLarge past `limit`)."""
        reply = self._call("read a file", self.client.get_object, Key=self.key(relpath))
        with reply["Body"] as body:
            data = body.read(limit + 1)
        if len(data) > limit:
            raise PayloadTooLarge(f"{relpath.rsplit('/', 1)[-1]} is larger than {limit} bytes")
        return data

    # -- presigned transfers ------------------------------------------------------------------

    def _presign(self, operation: str, **params: Any) -> str:
        """A URL that allows `operation` on this bucket for PRESIGN_TTL_SECONDS."""
        try:
            return self.client.generate_presigned_url(operation, Params={"Bucket": self.bucket, **params},
                                                      ExpiresIn=int(self.ttl))
        except BotoCoreError as exc:  # e.g. no credentials
            raise _unavailable("sign a URL", exc) from exc

    def presign_get(self, relpath: str, disposition: str | None = None,
                    content_type: str | None = None) -> str:
        """A presigned GET; the store answers with these Content-Disposition / Content-Type."""
        params: dict[str, Any] = {"Key": self.key(relpath)}
        if disposition:
            params["ResponseContentDisposition"] = disposition
        if content_type:
            params["ResponseContentType"] = content_type
        return self._presign("get_object", **params)

    def part_size_for(self, size: int) -> int:
        """The part size of a result of `size` bytes (at most MAX_SLOT_PARTS parts, whole MiBs)."""
        need = math.ceil(size / MAX_SLOT_PARTS)
        return max(self.part_size, math.ceil(need / MIB) * MIB)

    def start_upload(self, relpath: str, size: int, content_type: str) -> str | None:
        """Begin a multipart upload when `size` needs more than one part; its id, else None."""
        if size <= self.part_size_for(size):
            return None
        reply = self._call("start an upload", self.client.create_multipart_upload, Key=self.key(relpath),
                           ContentType=content_type)
        return str(reply["UploadId"])

    def presign_upload(self, relpath: str, upload_id: str | None, size: int) -> tuple[list[str], int]:
        """Presigned PUT URLs for a result (one, or one per part of `upload_id`) and the part size."""
        part, key = self.part_size_for(size), self.key(relpath)
        if upload_id is None:
            return [self._presign("put_object", Key=key)], part
        count = max(1, math.ceil(size / part))
        return [self._presign("upload_part", Key=key, UploadId=upload_id, PartNumber=number)
                for number in range(1, count + 1)], part

    def finish_upload(self, relpath: str, upload_id: str | None) -> None:
        """Complete a worker's multipart upload from the parts the store holds (a repeat of a
        completed one is fine: the object exists)."""
        if upload_id is None:
            return
        key = self.key(relpath)
        try:
            parts = [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in self._parts(key, upload_id)]
            if not parts:
                raise BadRequest("no part of the upload reached the object store")
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                                  MultipartUpload={"Parts": parts})
        except (BotoCoreError, ClientError) as exc:
            gone = isinstance(exc, ClientError) and _code(exc) == "NoSuchUpload"
            if gone and self.size_of(relpath) is not None:
                return  # completed by an earlier call whose reply was lost
            raise _refused("finish the upload", exc) from exc

    def _parts(self, key: str, upload_id: str) -> list[dict[str, Any]]:
        """Every stored part of an upload, in order."""
        pages = self.client.get_paginator("list_parts").paginate(Bucket=self.bucket, Key=key,
                                                                 UploadId=upload_id)
        parts = [part for page in pages for part in page.get("Parts", [])]
        return sorted(parts, key=lambda p: p["PartNumber"])

    def size_of(self, relpath: str) -> int | None:
        """The stored object's size, or None when there is none."""
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=self.key(relpath))["ContentLength"])
        except (BotoCoreError, ClientError) as exc:
            if isinstance(exc, ClientError) and _status(exc) == 404:
                return None
            raise _refused("look at the upload", exc) from exc

    def verify(self, relpath: str, size: int, sha256: str) -> None:
        """Check that the object holds exactly `size` bytes hashing to `sha256` (400 otherwise).

        The size first (HEAD: a wrong-sized object is never read), then the bytes themselves.
        """
        stored = self.size_of(relpath)
        if stored is None:
            raise NotFound("nothing was uploaded to this key")
        read, digest = self._hash(relpath) if stored == size else (stored, "")
        if read != size:
            raise BadRequest(f"the stored object has {read} bytes, not the declared {size}",
                             expected_size=size, actual_size=read)
        if digest != sha256:
            raise BadRequest("X-Content-SHA256 does not match the stored bytes", expected=sha256,
                             actual=digest)

    def _hash(self, relpath: str) -> tuple[int, str]:
        """Read the object once, 1 MiB at a time: (bytes read, sha256)."""
        digest, size = hashlib.sha256(), 0
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.key(relpath))["Body"]
            with closing(body):
                for chunk in body.iter_chunks(HASH_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
        except (BotoCoreError, ClientError) as exc:
            raise _refused("read the upload back", exc) from exc
        return size, digest.hexdigest()

    # -- deletion and listing (best effort: what is left is swept later) ----------------------

    def remove(self, relpath: str) -> None:
        """Delete one object if present."""
        self.remove_many([relpath])

    def remove_many(self, relpaths: Iterable[str]) -> None:
        """Delete objects, a thousand per request; failures are logged (the sweep retries)."""
        keys = [self.key(r) for r in relpaths]
        for start in range(0, len(keys), DELETE_BATCH):
            batch = [{"Key": k} for k in keys[start:start + DELETE_BATCH]]
            try:
                reply = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            except (BotoCoreError, ClientError) as exc:
                logger.warning("object storage: could not delete %d objects: %s", len(batch), exc)
                continue
            for error in reply.get("Errors", []):
                logger.warning("object storage: could not delete %s: %s", error.get("Key"), error.get("Code"))

    def abort(self, relpath: str, upload_id: str) -> None:
        """Abandon an unfinished multipart upload (its parts are deleted)."""
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key(relpath), UploadId=upload_id)
        except (BotoCoreError, ClientError) as exc:
            logger.warning("object storage: could not abort the upload of %s: %s", relpath, exc)

    def remove_job(self, job_id: str) -> None:
        """Delete everything stored for a job, unfinished uploads included."""
        if not is_job_id(job_id):
            return
        try:
            for folder in (f"inputs/{job_id}", f"artifacts/{job_id}"):
                self.remove_many([relpath for relpath, _, _ in self.objects(folder)])
                for relpath, upload_id, _ in self.uploads(folder):
                    self.abort(relpath, upload_id)
        except (BotoCoreError, ClientError) as exc:
            logger.warning("object storage: could not list the files of job %s: %s", job_id, exc)

    def objects(self, folder: str) -> Iterator[tuple[str, float, int]]:
        """(path, last modified, size) of every object under `folder` (a relative path)."""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                      Prefix=self.key(folder) + "/")
        for page in pages:
            for item in page.get("Contents", []):
                yield self.relative(item["Key"]), item["LastModified"].timestamp(), int(item["Size"])

    def uploads(self, folder: str) -> Iterator[tuple[str, str, float]]:
        """(path, upload id, initiated) of every unfinished multipart upload under `folder`."""
        pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket,
                                                                             Prefix=self.key(folder) + "/")
        for page in pages:
            for item in page.get("Uploads", []):
                yield self.relative(item["Key"]), str(item["UploadId"]), item["Initiated"].timestamp()
