"""Where stored files' bytes live: a local directory (default) or S3-compatible object storage.

The record of a file (name, type, size, owner, and its TTL) is always in Redis (edge/file_store.py); a
backend keeps only the bytes, under ``<kind>/<id>``, and lists what is old enough for the sweep to check
against the records. ``FILES_STORE=local`` writes ``0600`` files under ``FILES_DIR`` (every edge process
must see the same directory); ``FILES_STORE=s3`` puts objects in ``FILES_S3_BUCKET`` with boto3 (any
S3-compatible server through ``FILES_S3_ENDPOINT_URL``: MinIO, Ceph, R2…), so edges on many machines
share them.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from tasks.settings import Settings, SettingsError

__all__ = ["Blobs", "BlobsUnavailable", "LocalBlobs", "S3Blobs", "blobs_from_settings"]

PARTIAL_PREFIX = ".upload-"  # a local write not yet renamed into place


class BlobsUnavailable(Exception):
    """The bytes cannot be written or read now (a full disk, the bucket unreachable): the caller answers 503."""


class Blobs(Protocol):
    def write(self, kind: str, name: str, data: bytes) -> None: ...

    def read(self, kind: str, name: str) -> bytes | None:
        """The bytes, or None when there are none."""
        ...

    def delete(self, kind: str, name: str) -> None: ...

    def older_than(self, kind: str, epoch: float) -> list[str]:
        """Names under ``kind`` last written before ``epoch`` (unfinished writes included)."""
        ...


class LocalBlobs:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def write(self, kind: str, name: str, data: bytes) -> None:
        path = self._path(kind, name)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=PARTIAL_PREFIX)  # mode 0600
        except OSError as exc:
            raise BlobsUnavailable(f"cannot write in {path.parent}: {exc}") from exc
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
            os.replace(temporary, path)
        except BaseException as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            if isinstance(exc, OSError):  # ENOSPC, EDQUOT, EIO
                raise BlobsUnavailable(f"cannot write {path}: {exc}") from exc
            raise

    def read(self, kind: str, name: str) -> bytes | None:
        try:
            return self._path(kind, name).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise BlobsUnavailable(f"cannot read {kind}/{name}: {exc}") from exc

    def delete(self, kind: str, name: str) -> None:
        self._path(kind, name).unlink(missing_ok=True)

    def older_than(self, kind: str, epoch: float) -> list[str]:
        try:
            entries = list(os.scandir(self.directory / kind))
        except FileNotFoundError:
            return []
        names = []
        for entry in entries:
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime < epoch:
                    names.append(entry.name)
        return names

    def _path(self, kind: str, name: str) -> Path:
        if not name or "/" in name or name in (".", "..") or not name.isascii():
            raise ValueError(f"not a stored file name: {name!r}")
        return self.directory / kind / name


class S3Blobs:
    """Objects ``<prefix><kind>/<name>`` in one bucket; a put is atomic, so there are no partial writes."""

    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        self.client, self.bucket, self.prefix = client, bucket, prefix
        self._failures: tuple[type[Exception], ...] = (BotoCoreError, ClientError)

    def write(self, kind: str, name: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(kind, name), Body=data)
        except self._failures as exc:
            raise BlobsUnavailable(f"cannot write s3://{self.bucket}/{self._key(kind, name)}: {exc}") from exc

    def read(self, kind: str, name: str) -> bytes | None:
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self._key(kind, name))
            data: bytes = answer["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None
        except self._failures as exc:
            raise BlobsUnavailable(f"cannot read s3://{self.bucket}/{self._key(kind, name)}: {exc}") from exc
        return data

    def delete(self, kind: str, name: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(kind, name))
        except self._failures as exc:
            raise BlobsUnavailable(f"cannot delete s3://{self.bucket}/{self._key(kind, name)}: {exc}") from exc

    def older_than(self, kind: str, epoch: float) -> list[str]:
        start = self._key(kind, "")
        names = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start):
                for item in page.get("Contents", []):
                    modified: datetime = item["LastModified"]
                    if modified.timestamp() < epoch:
                        names.append(item["Key"][len(start):])
        except self._failures as exc:
            raise BlobsUnavailable(f"cannot list s3://{self.bucket}/{start}: {exc}") from exc
        return names

    def _key(self, kind: str, name: str) -> str:
        return f"{self.prefix}{kind}/{name}"


def blobs_from_settings(settings: Settings) -> Blobs:
    if settings.files_store == "local":
        return LocalBlobs(Path(settings.files_dir))
    if settings.files_store == "s3":
        if not settings.files_s3_bucket:
            raise SettingsError("FILES_STORE=s3 needs FILES_S3_BUCKET")
        try:
            import boto3  # only with FILES_STORE=s3: pip install 'switchboard[s3]'
            from botocore.config import Config
        except ImportError as exc:
            raise SettingsError("FILES_STORE=s3 needs boto3: pip install 'switchboard[s3]'") from exc
        # An upload or a converter's GET waits on the bucket inside a request: bounded, not boto3's 60 s.
        timeout = settings.files_s3_timeout
        config = Config(connect_timeout=timeout, read_timeout=timeout,
                        retries={"max_attempts": 2, "mode": "standard"})
        client = boto3.client("s3", endpoint_url=settings.files_s3_endpoint_url or None,
                              region_name=settings.files_s3_region or None, config=config)
        return S3Blobs(client, settings.files_s3_bucket, settings.files_s3_prefix)
    raise SettingsError(f"FILES_STORE must be local or s3, not {settings.files_store!r}")
