"""Digests of a file's bytes, streamed (the file is never whole in memory). No dependencies.

One place for "hash this file": image ids and blob keys (sha256), S3-style etags (md5), model
weight checks (sha256 / sha1) all come from :func:`file_digest`.
"""

from __future__ import annotations

import hashlib
import os


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of the file's bytes under ``algorithm`` (any :func:`hashlib.new` name)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, lambda: hashlib.new(algorithm, usedforsecurity=False)).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of the file's bytes, hex (64 chars)."""
    return file_digest(path, "sha256")


def md5_file(path: str | os.PathLike) -> str:
    """md5 of the file's bytes, hex (what S3 gives as the etag of a one-part upload)."""
    return file_digest(path, "md5")
