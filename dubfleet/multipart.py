"""A multipart/form-data request body streamed from disk with a known length.

`requests` builds `files=` bodies in memory; a video can be gigabytes, so the client writes the
parts itself: headers, then each file read in chunks, never the whole file at once.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

CHUNK_SIZE = 1024 * 1024


@dataclass(frozen=True)
class FilePart:
    """One file part: the form field name, the file name sent, and the file on disk."""

    field: str
    path: Path
    filename: str = ""
    content_type: str = "application/octet-stream"


def _quoted(value: str) -> str:
    """A header parameter value that cannot break the header (quotes and newlines escaped)."""
    return (value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D")
            .replace("\n", "%0A"))


class MultipartBody:
    """Iterable body of the given file parts; `len()` is exact, so requests sends a
    Content-Length; `progress(done, total)` is called as bytes go out."""

    def __init__(self, parts: list[FilePart], progress=None):
        self.boundary = "dubfleet-" + secrets.token_hex(16)
        self.parts = parts
        self.progress = progress
        self._heads = [self._head(p) for p in parts]
        self._tail = f"--{self.boundary}--\r\n".encode()
        self._len = (sum(len(h) + p.path.stat().st_size + 2 for h, p in zip(self._heads, parts))
                     + len(self._tail))
        self._sent = 0

    @property
    def content_type(self) -> str:
        """The request's Content-Type header value."""
        return f"multipart/form-data; boundary={self.boundary}"

    def _head(self, part: FilePart) -> bytes:
        name = _quoted(part.filename or part.path.name)
        return (f"--{self.boundary}\r\n"
                f'Content-Disposition: form-data; name="{_quoted(part.field)}"; filename="{name}"\r\n'
                f"Content-Type: {part.content_type}\r\n\r\n").encode()

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[bytes]:
        for head, part in zip(self._heads, self.parts):
            yield self._count(head)
            with open(part.path, "rb") as fh:
                for chunk in iter(lambda: fh.read(CHUNK_SIZE), b""):
                    yield self._count(chunk)
            yield self._count(b"\r\n")
        yield self._count(self._tail)

    def _count(self, data: bytes) -> bytes:
        self._sent += len(data)
        if self.progress is not None:
            self.progress(len(data))
        return data
