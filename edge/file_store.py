"""Uploaded files and mail attachments: the bytes in a blob store (edge/file_blobs.py), their record in Redis.

Redis held every upload as base64 for a day: three 10 MB files took it from
2.3 to 66 MB, and a Redis running out of memory stops every route for
everyone.  Now Redis keeps only a small record per file (name, type, size,
owner) whose TTL is the file's life, and the bytes are named by the
unguessable id: a ``0600`` file under ``FILES_DIR/<kind>/``, or an object in
S3-compatible storage (``FILES_STORE=s3``).  A file whose record has expired
is unreachable at once and deleted by the next sweep (at most every
``FILES_SWEEP_INTERVAL`` per process, run on a write).

Every edge process (gunicorn workers, the IMAP poller) that writes or serves
files must see the same store: one machine or a shared volume for ``local``.
Records written by earlier versions (bytes in Redis) are still served.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from edge.file_blobs import PARTIAL_PREFIX, Blobs, BlobsUnavailable, LocalBlobs
from tasks.keys import Keys

__all__ = ["FileStore", "QuotaExceeded", "StoredFile"]

log = logging.getLogger(__name__)

_GRACE_SECONDS = 60.0  # a file younger than this is never swept: its record may be being written


@dataclass(frozen=True)
class StoredFile:
    data: bytes
    mime: str
    name: str
    owner: str = ""  # the client door's caller who stored it (edge/clients.py); "" for mail attachments


class QuotaExceeded(Exception):
    """The owner's stored bytes would pass its quota; ``retry_after``: seconds until its oldest file expires."""

    def __init__(self, stored: int, retry_after: int) -> None:
        super().__init__(f"{stored} bytes are stored already")
        self.stored, self.retry_after = stored, max(1, retry_after)


# KEYS: the owner's sizes (hash: file id -> bytes, and "total"), the owner's expiries (zset: file id -> expires at)
# ARGV: now, file id, size, expires at, quota, ttl.  Expired files leave first (each is seen once).
_RESERVE = """
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
for _, id in ipairs(expired) do
  redis.call('HINCRBY', KEYS[1], 'total', -tonumber(redis.call('HGET', KEYS[1], id) or '0'))
  redis.call('HDEL', KEYS[1], id)
end
if #expired > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1]) end
local total = tonumber(redis.call('HGET', KEYS[1], 'total') or '0')
if total + tonumber(ARGV[3]) > tonumber(ARGV[5]) then
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  return {0, total, oldest[2] or ARGV[4]}
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('HINCRBY', KEYS[1], 'total', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[6])
return {1, total + tonumber(ARGV[3]), 0}
"""

# KEYS: sizes, expiries;  ARGV: file id
_RELEASE = """
local size = redis.call('HGET', KEYS[1], ARGV[1])
if size then
  redis.call('HINCRBY', KEYS[1], 'total', -tonumber(size))
  redis.call('HDEL', KEYS[1], ARGV[1])
end
redis.call('ZREM', KEYS[2], ARGV[1])
return size and 1 or 0
"""


# Where each kind of file keeps its record (the keys predate the move to disk, so old records still work).
RECORD_KEYS = {"uploads": Keys.upload_file, "mail": Keys.mail_attachment}


class FileStore:
    def __init__(self, client: redis.Redis, prefix: str, blobs: Blobs | Path, *, sweep_interval: float) -> None:
        self.redis, self.prefix, self.sweep_interval = client, prefix, sweep_interval
        self.blobs: Blobs = LocalBlobs(blobs) if isinstance(blobs, Path) else blobs
        self._lock = threading.Lock()
        self._swept_at = time.monotonic()
        self._keys = Keys(prefix)
        self._reserve = client.register_script(_RESERVE)
        self._release = client.register_script(_RELEASE)

    def record_key(self, kind: str, file_id: str) -> str:
        return RECORD_KEYS[kind](self._keys, file_id)

    def put(self, kind: str, file_id: str, data: bytes, *, mime: str, name: str, ttl: int, owner: str = "",
            quota: int = 0) -> None:
        """Write the bytes, then the record that makes them reachable for ``ttl`` seconds.

        With ``owner`` and a ``quota`` above 0, QuotaExceeded (nothing written) when the owner's files that
        have not expired yet hold more than ``quota`` bytes with this one."""
        self._check(kind, file_id)
        counted = bool(owner) and quota > 0
        if counted:
            self._reserve_bytes(owner, file_id, len(data), ttl, quota)
        try:
            self._write(kind, file_id, data, mime=mime, name=name, ttl=ttl, owner=owner)
        except BaseException:
            if counted:
                self._release_bytes(owner, file_id)
            raise
        self._maybe_sweep(kind)

    def discard(self, kind: str, file_id: str, owner: str = "") -> None:
        """Delete a file that will not be used (its message was refused), and give its bytes back."""
        self._check(kind, file_id)
        self.redis.delete(self.record_key(kind, file_id))
        with contextlib.suppress(BlobsUnavailable):  # its record is gone: the sweep deletes the bytes later
            self.blobs.delete(kind, file_id)
        if owner:
            self._release_bytes(owner, file_id)

    def stored_bytes(self, owner: str) -> int:
        """What the owner's files hold now, as the quota counts it (expired files leave at the next upload)."""
        return int(self.redis.hget(self._keys.owner_files(owner), "total") or 0)

    def _reserve_bytes(self, owner: str, file_id: str, size: int, ttl: int, quota: int) -> None:
        now = time.time()
        ok, stored, oldest = self._reserve(keys=self._quota_keys(owner),
                                           args=[repr(now), file_id, size, repr(now + ttl), quota, ttl])
        if not int(ok):
            raise QuotaExceeded(int(stored), int(float(oldest) - now) + 1)

    def _release_bytes(self, owner: str, file_id: str) -> None:
        with contextlib.suppress(redis.RedisError):
            self._release(keys=self._quota_keys(owner), args=[file_id])

    def _quota_keys(self, owner: str) -> list[str]:
        return [self._keys.owner_files(owner), self._keys.owner_files_expiry(owner)]

    def _write(self, kind: str, file_id: str, data: bytes, *, mime: str, name: str, ttl: int, owner: str) -> None:
        self.blobs.write(kind, file_id, data)
        key = self.record_key(kind, file_id)
        try:
            pipe = self.redis.pipeline(transaction=True)
            pipe.hset(key, mapping={"mime": mime, "name": name, "size": len(data), "owner": owner})
            pipe.expire(key, ttl)
            pipe.execute()
        except BaseException:
            with contextlib.suppress(Exception):
                self.blobs.delete(kind, file_id)  # no record, no file: nothing is left behind on a 503
            raise

    def get(self, kind: str, file_id: str) -> StoredFile | None:
        """The file while its record lives; None once it expired (or never was)."""
        record: dict[str, str] = self.redis.hgetall(self.record_key(kind, file_id))  # type: ignore[assignment]
        if not record:
            return None
        name, mime = str(record.get("name", "file")), str(record.get("mime", "application/octet-stream"))
        owner = str(record.get("owner", ""))
        if "data" in record:  # written before the bytes moved out of Redis
            return StoredFile(base64.b64decode(record["data"]), mime, name, owner)
        self._check(kind, file_id)
        data = self.blobs.read(kind, file_id)
        if data is None:
            log.warning("file %s/%s has a record but no bytes (the store not shared by every edge?)", kind, file_id)
            return None
        return StoredFile(data, mime, name, owner)

    def sweep(self, kind: str, *, now: float | None = None) -> int:
        """Delete the files of ``kind`` whose record is gone (and stale partial writes); how many."""
        now = time.time() if now is None else now
        removed = 0
        old = self.blobs.older_than(kind, now - _GRACE_SECONDS)  # younger: being written, or its record is
        pipe = self.redis.pipeline(transaction=False)
        for name in old:
            pipe.exists(self.record_key(kind, name) if name.isalnum() else "")
        for name, alive in zip(old, pipe.execute() if old else [], strict=True):
            if name.startswith(PARTIAL_PREFIX) or (name.isalnum() and not alive):  # left behind, or expired
                with contextlib.suppress(FileNotFoundError):
                    self.blobs.delete(kind, name)
                    removed += 1
        return removed

    def _maybe_sweep(self, kind: str) -> None:
        with self._lock:
            if time.monotonic() - self._swept_at < self.sweep_interval:
                return
            self._swept_at = time.monotonic()
        try:
            removed = self.sweep(kind)
        except (OSError, redis.RedisError, BlobsUnavailable) as exc:
            log.warning("file sweep of %s failed: %s", kind, exc)
            return
        if removed:
            log.info("file sweep: %d expired %s file(s) deleted", removed, kind)

    @staticmethod
    def _check(kind: str, file_id: str) -> None:
        if kind not in RECORD_KEYS or not file_id.isalnum() or not file_id.isascii():
            raise ValueError(f"not a stored file: {kind}/{file_id!r}")
