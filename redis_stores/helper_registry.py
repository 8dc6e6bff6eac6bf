"""The helper registry: manifests, secrets, heartbeats and health, in Redis.

The edge writes it (registration routes), the core reads it (routing) and
records call outcomes in it (circuit breaker).  A helper's record lives as
long as its heartbeats keep it alive (``expires_in``); once it expires the
helper disappears from routing and a heartbeat gets 404, telling the helper
to register again.

Circuit breaker per helper: ``closed`` (calls flow) -> ``open`` after
``CIRCUIT_FAILURE_THRESHOLD`` consecutive failures *of the helper* (calls are
refused and the person gets a graceful reply) -> ``half-open`` once
``CIRCUIT_RESET_SECONDS`` passed (exactly one trial call, claimed by the call
itself; success closes, failure re-opens).  A helper refusing an input (its
own answer about that input, see core_worker/helper_answers.py) is a working
helper: it closes the circuit like a success and never counts as a failure.
"""

from __future__ import annotations

import fnmatch
import json
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import redis
from helper_sdk.manifest import manifest_problems, normalized
from marshmallow import ValidationError

from outbound_http.host_policy import BlockedURL, HostPolicy
from tasks.keys import Keys
from tasks.settings import Settings

__all__ = [
    "Capability",
    "CircuitState",
    "HelperRecord",
    "HelperRegistry",
    "NameTaken",
    "validate_manifest",
]

CircuitState = str  # "closed" | "open" | "half-open"


# KEYS: helper record;  ARGV: ttl, now.  Never recreate an expired record as a partial hash.
_HEARTBEAT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], 'last_heartbeat', ARGV[2])
return 1
"""


# KEYS: helper record, helper set, health;  ARGV: mode, current secret, manifest, new secret, now, ttl, name.
# mode "free": only when no live helper holds the name; "secret": only when ARGV[2] is the live helper's secret
# (or none holds it); "owner": always (the caller proved it is this helper with its own registration token).
# Returns {1, 0} when registered, {0, seconds left} when the name is held.  One step: two helpers racing for a
# free name cannot both get it.
_REGISTER = """
local current = redis.call('HGET', KEYS[1], 'secret')
if current and ARGV[1] ~= 'owner' and (ARGV[1] == 'free' or current ~= ARGV[2]) then
  return {0, math.max(redis.call('TTL', KEYS[1]), 1)}
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'manifest', ARGV[3], 'secret', ARGV[4], 'registered_at', ARGV[5], 'last_heartbeat', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('SADD', KEYS[2], ARGV[7])
redis.call('HSET', KEYS[3], 'consecutive', 0, 'opened_at', 0)
return {1, 0}
"""


class NameTaken(Exception):
    """A live helper holds this name, and the registration proved neither its secret nor its own token."""

    def __init__(self, name: str, retry_after: int) -> None:
        super().__init__(name)
        self.name, self.retry_after = name, retry_after


def validate_manifest(body: Any, policy: HostPolicy, *, wildcard_accepts: bool = False) -> dict[str, Any]:
    """The manifest, validated by the rules the SDK's fake core uses too (``helper_sdk.manifest``), with its
    defaults filled in; raises ValidationError naming each problem, or the URL this deployment refuses."""
    problems = manifest_problems(body, wildcard_accepts=wildcard_accepts)
    if problems:
        raise ValidationError(problems)
    manifest = normalized(body)
    try:
        policy.check(manifest["url"])
    except BlockedURL as exc:
        raise ValidationError({"url": [str(exc)]}) from exc
    return manifest


@dataclass(frozen=True)
class Capability:
    helper: str
    name: str
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    accepts: tuple[str, ...]
    produces: tuple[str, ...]
    reply: str
    timeout: float | None

    @property
    def qualified(self) -> str:
        return f"{self.helper}.{self.name}"

    def accepts_mime(self, mime: str) -> bool:
        return any(fnmatch.fnmatch(mime.lower(), pattern.lower()) for pattern in self.accepts)


@dataclass(frozen=True)
class HelperRecord:
    name: str
    url: str
    version: str
    description: str
    secret: str
    capabilities: tuple[Capability, ...]
    registered_at: float
    last_heartbeat: float
    health: dict[str, Any] = field(default_factory=dict)

    def capability(self, name: str) -> Capability | None:
        return next((c for c in self.capabilities if c.name == name), None)

    def public(self, now: float) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "version": self.version,
            "description": self.description,
            "capabilities": [c.name for c in self.capabilities],
            "registered_at": self.registered_at,
            "last_heartbeat": self.last_heartbeat,
            "seconds_since_heartbeat": round(now - self.last_heartbeat, 1),
            "health": self.health,
        }


def _record(raw: dict[str, str], health: dict[str, str], circuit: CircuitState) -> HelperRecord:
    manifest = json.loads(raw["manifest"])
    caps = tuple(
        Capability(
            helper=manifest["name"], name=c["name"], description=c["description"], input_schema=c["input_schema"],
            output_schema=c["output_schema"], accepts=tuple(c.get("accepts", ())),
            produces=tuple(c.get("produces", ())), reply=c.get("reply", "model"), timeout=c.get("timeout"),
        )
        for c in manifest["capabilities"]
    )
    return HelperRecord(
        name=manifest["name"], url=manifest["url"], version=manifest["version"],
        description=manifest.get("description", ""), secret=raw["secret"], capabilities=caps,
        registered_at=float(raw["registered_at"]), last_heartbeat=float(raw["last_heartbeat"]),
        health={
            "circuit": circuit,
            "consecutive_failures": int(health.get("consecutive", 0)),
            "recent_failures": int(health.get("failures", 0)),
            "calls": int(health.get("calls", 0)),
            "refused_calls": int(health.get("refused", 0)),
            "last_error": health.get("last_error") or None,
        },
    )


class HelperRegistry:
    def __init__(
        self, client: redis.Redis, keys: Keys, *, heartbeat_interval: int, missed_heartbeats: int,
        failure_threshold: int, reset_seconds: float,
    ) -> None:
        self.redis, self.keys = client, keys
        self.heartbeat_interval = heartbeat_interval
        self.expires_in = heartbeat_interval * missed_heartbeats
        self.failure_threshold, self.reset_seconds = failure_threshold, reset_seconds
        self._heartbeat = client.register_script(_HEARTBEAT)
        self._register = client.register_script(_REGISTER)

    # -- lifecycle (edge) ----------------------------------------------------
    def register(
        self, manifest: dict[str, Any], secret: str, *, current_secret: str = "", owner: bool = False
    ) -> None:
        """Store the manifest under its name with a new ``secret``; NameTaken while another live helper holds it.

        A held name is renewed or changed (URL, capabilities) only with the live helper's ``current_secret``,
        or by its ``owner`` (its own token from HELPER_TOKENS).  A helper that registers again was restarted:
        it gets a fresh circuit (its counts stay).
        """
        name = manifest["name"]
        mode = "owner" if owner else "secret" if current_secret else "free"
        done, left = self._register(
            keys=[self.keys.helper(name), self.keys.helpers, self.keys.helper_health(name)],
            args=[mode, current_secret, json.dumps(manifest), secret, repr(time.time()), self.expires_in, name],
        )
        if not int(done):
            raise NameTaken(name, int(left))

    def heartbeat(self, name: str) -> bool:
        """Extend the helper's life; False (the edge answers 404) once it has expired."""
        return bool(self._heartbeat(keys=[self.keys.helper(name)], args=[self.expires_in, repr(time.time())]))

    def deregister(self, name: str) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.keys.helper(name), self.keys.helper_health(name))
        pipe.srem(self.keys.helpers, name)
        pipe.execute()

    def secret(self, name: str) -> str | None:
        value = self.redis.hget(self.keys.helper(name), "secret")
        return None if value is None else str(value)

    # -- reading (edge and core) ---------------------------------------------
    def get(self, name: str) -> HelperRecord | None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.keys.helper(name))
        pipe.hgetall(self.keys.helper_health(name))
        raw, health = pipe.execute()
        if not raw:
            return None
        return _record(raw, health, self._circuit(health, time.time()))

    def all(self) -> list[HelperRecord]:
        names = sorted(str(n) for n in self.redis.smembers(self.keys.helpers))
        records = []
        for name in names:
            record = self.get(name)
            if record is None:
                self.redis.srem(self.keys.helpers, name)  # expired: prune
            else:
                records.append(record)
        return records

    def names(self) -> list[str]:
        return sorted(str(n) for n in self.redis.smembers(self.keys.helpers))

    # -- circuit breaker (core) ------------------------------------------------
    def _circuit(self, health: dict[str, str], now: float) -> CircuitState:
        opened_at = float(health.get("opened_at") or 0)
        if not opened_at:
            return "closed"
        return "half-open" if now - opened_at >= self.reset_seconds else "open"

    def circuit(self, name: str) -> CircuitState:
        """The circuit's state, without claiming anything (the core answers at once while it is open)."""
        health: dict[str, str] = self.redis.hgetall(self.keys.helper_health(name))  # type: ignore[assignment]
        return self._circuit(health, time.time())

    def allow_call(self, name: str, call_id: str = "", trial_seconds: float | None = None) -> bool:
        """False while the circuit is open; in half-open, exactly one call gets the trial.

        The trial belongs to ``call_id``: that call's own re-try is let through again, any other call is
        refused.  It is held for ``trial_seconds`` (the call's timeout and a margin; default
        CIRCUIT_RESET_SECONDS), so a trial lost with its worker is given to another call after that.
        """
        state = self.circuit(name)
        if state == "closed":
            return True
        if state == "open":
            return False
        trial_key = self.keys.helper_trial(name)
        owner = call_id or uuid.uuid4().hex
        ttl = max(1, math.ceil(trial_seconds if trial_seconds is not None else self.reset_seconds))
        if self.redis.set(trial_key, owner, nx=True, ex=ttl):
            return True
        return bool(call_id) and self.redis.get(trial_key) == call_id

    def record_success(self, name: str, *, refused: bool = False) -> None:
        """The helper answered as its contract says: a result, or (``refused``) its own refusal of the input."""
        key = self.keys.helper_health(name)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hincrby(key, "calls", 1)
        if refused:
            pipe.hincrby(key, "refused", 1)
        pipe.hset(key, mapping={"consecutive": 0, "opened_at": 0})
        pipe.delete(self.keys.helper_trial(name))
        pipe.expire(key, 7 * 24 * 3600)
        pipe.execute()

    def record_failure(self, name: str, error: str) -> CircuitState:
        key = self.keys.helper_health(name)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hincrby(key, "calls", 1)
        pipe.hincrby(key, "failures", 1)
        pipe.hincrby(key, "consecutive", 1)
        pipe.hset(key, "last_error", error[:300])
        pipe.expire(key, 7 * 24 * 3600)
        _, _, consecutive, _, _ = pipe.execute()
        if int(consecutive) >= self.failure_threshold:
            self.redis.hset(key, "opened_at", repr(time.time()))
            self.redis.delete(self.keys.helper_trial(name))
            return "open"
        return "closed"


def registry_from_settings(client: redis.Redis, keys: Keys, settings: Settings) -> HelperRegistry:
    return HelperRegistry(
        client, keys,
        heartbeat_interval=settings.helper_heartbeat_interval, missed_heartbeats=settings.helper_missed_heartbeats,
        failure_threshold=settings.circuit_failure_threshold, reset_seconds=settings.circuit_reset_seconds,
    )
