"""Keeping a helper registered: register, heartbeat, re-register when forgotten, leave on the way out.

One background thread per process that registers (under gunicorn: the
master only). It never gives up on a core that is down or answers 5xx — it
retries with exponential backoff and jitter — but stops for good on an
answer that retrying cannot change (bad token, malformed manifest) and
reports it through ``error`` and ``on_fatal``.

::

    start ─▶ POST /v1/helpers ──201──▶ secret stored ─▶ PUT …/heartbeat at once, then every heartbeat_interval
               ▲   │ 5xx, down: back off               │ 200: keep going
               │   │ 409 (name held): its Retry-After  │
               │   └ 401, 400: fatal                   │ 404 / 401: forgotten ─▶ register again at once
               └───────────────────────────────────────┘ 5xx, down: back off, keep the secret
    stop ─▶ DELETE /v1/helpers/<name>

Each POST carries the secret last held (``X-Helper-Secret``): the core renews
a live registration only for the helper that proves it holds it.  With a
``secret_file`` kept across restarts (the CLI's ``--secret-file``), a helper
killed without leaving takes its name back at once instead of waiting for the
old registration to expire.
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import requests
from standardwebhooks.webhooks import Webhook

from ._errors import RegistrationError
from ._options import check_http_url
from ._secrets import FileSecret, MemorySecret, SecretStore

if TYPE_CHECKING:
    from ._helper import Helper

__all__ = ["Lifecycle"]

log = logging.getLogger("helper_sdk")

_TRANSIENT = {408, 409, 425, 429}
_DEFAULT_INTERVAL = 30.0
_MIN_INTERVAL = 0.05


class _Retry(Exception):
    """This attempt failed in a way that may pass: wait (with backoff, or ``delay``) and try again."""

    def __init__(self, message: str, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class Lifecycle:
    """Registers ``helper`` with the core at ``core_url`` as reachable at ``public_url``, and keeps it registered.

    ``current_secret`` is what the WSGI app verifies calls with:
    ``helper.create_app(secret=lifecycle.current_secret)``. With ``secret_file``
    the secret is also written there for other processes (see the CLI).
    """

    def __init__(
        self,
        helper: Helper,
        *,
        core_url: str,
        public_url: str,
        token: str,
        secret_file: str | os.PathLike[str] | None = None,
        min_retry_delay: float = 0.5,
        max_retry_delay: float = 30.0,
        request_timeout: float = 10.0,
        on_fatal: Callable[[RegistrationError], None] | None = None,
    ) -> None:
        if not token:
            raise RegistrationError("no registration token (the core's HELPER_REGISTRATION_TOKEN)")
        self.helper = helper
        self.core_url = check_http_url(core_url, "core URL").rstrip("/")
        self.public_url = check_http_url(public_url, "public URL").rstrip("/")
        self.manifest = helper.manifest(self.public_url)
        self.min_retry_delay = min_retry_delay
        self.max_retry_delay = max_retry_delay
        self.request_timeout = request_timeout
        self.on_fatal = on_fatal
        self._token = token
        self._store: SecretStore = FileSecret(secret_file) if secret_file is not None else MemorySecret()
        self._session = requests.Session()
        self._secret: str | None = None
        self._need_registration = True
        self._interval = _DEFAULT_INTERVAL
        self._error: RegistrationError | None = None
        self._stopping = threading.Event()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._owner_pid: int | None = None
        self._stopped = False

    # --- what the app and the caller read ---

    def current_secret(self) -> str | None:
        """The secret of the live registration, or None before the first one (calls then get 503)."""
        return self._secret

    @property
    def registered(self) -> bool:
        return self._secret is not None

    @property
    def error(self) -> RegistrationError | None:
        """Why the core refused us for good, if it did; the thread has then stopped."""
        return self._error

    @property
    def heartbeat_interval(self) -> float:
        return self._interval

    def wait_until_registered(self, timeout: float | None = None) -> bool:
        """Block until registered (True), or until refused, stopped or timed out (False)."""
        with self._changed:
            self._changed.wait_for(lambda: self.registered or self._error is not None or self._stopped, timeout)
            return self.registered

    # --- start and stop ---

    def start(self) -> None:
        """Register and heartbeat in a daemon thread; ``stop`` runs at interpreter exit unless called before."""
        if self._thread is not None:
            raise RuntimeError("this Lifecycle was already started")
        self._owner_pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name=f"helper-lifecycle-{self.helper.name}", daemon=True)
        self._thread.start()
        atexit.register(self._at_exit)

    def stop(self, *, deregister: bool = True) -> None:
        """Stop heartbeating and leave the core (DELETE). Safe to call twice, and a no-op in a forked child."""
        if self._owner_pid is not None and os.getpid() != self._owner_pid:
            return  # a gunicorn worker inherited this object (and its atexit hook): only the owner may leave
        with self._changed:
            if self._stopped:
                return
            self._stopped = True
            self._changed.notify_all()
        self._stopping.set()
        atexit.unregister(self._at_exit)
        if self._thread is not None:
            self._thread.join(self.request_timeout + 1)
        if deregister and self._secret:
            self._deregister(self._secret)
        self._secret = None
        self._store.set(None)
        self._session.close()

    def _at_exit(self) -> None:
        self.stop()

    # --- the thread ---

    def _run(self) -> None:
        failures = 0
        delay = 0.0
        while not self._stopping.wait(delay):
            try:
                delay = self._register() if self._need_registration else self._heartbeat()
                failures = 0
            except _Retry as retry:
                failures += 1
                delay = self._backoff(failures) if retry.delay is None else retry.delay
                level = logging.WARNING if failures == 1 or failures % 10 == 0 else logging.DEBUG
                log.log(level, "%s (attempt %d); retrying in %.1fs", retry, failures, delay)
            except RegistrationError as error:
                log.error("%s", error)
                with self._changed:
                    self._error = error
                    self._changed.notify_all()
                if self.on_fatal is not None:
                    self.on_fatal(error)
                return
            except Exception:  # a bug or a full disk must not end the heartbeats silently
                failures += 1
                delay = self._backoff(failures)
                log.exception("registration step failed unexpectedly; retrying in %.1fs", delay)

    def _backoff(self, failures: int) -> float:
        ceiling = min(self.max_retry_delay, self.min_retry_delay * 2 ** min(failures - 1, 30))
        return ceiling * random.uniform(0.5, 1.0)

    def _register(self) -> float:
        url = f"{self.core_url}/v1/helpers"
        # The secret we last held (this run's, or a secret file kept across a restart) proves the name is ours.
        previous = self._secret or self._store.get()
        extra = {"X-Helper-Secret": previous} if previous else None
        response = self._request("POST", url, self._token, json=self.manifest, headers=extra)
        if response.status_code == 201:
            body = _json(response)
            secret = body.get("secret")
            if not isinstance(secret, str) or not _valid_secret(secret):
                raise _Retry(f"the core answered 201 without a usable secret: {response.text[:200]!r}")
            self._store.set(secret)
            with self._changed:
                self._secret = secret
                self._need_registration = False
                self._interval = _interval(body)
                self._changed.notify_all()
            log.info(
                "registered %r with %s as %s (heartbeat every %gs)",
                self.helper.name,
                self.core_url,
                self.public_url,
                self._interval,
            )
            return 0.0  # heartbeat at once: tells the core the secret is in place and calls can be verified
        if response.status_code == 409:  # a live registration holds the name: it frees when that one expires
            raise _Retry(f"registration with {url} answered 409 {_describe(response)}",
                         delay=_retry_after(response, self.min_retry_delay, self.max_retry_delay))
        if response.status_code >= 500 or response.status_code in _TRANSIENT:
            raise _Retry(f"registration with {url} answered {response.status_code} {_describe(response)}")
        raise RegistrationError(
            f"the core refused to register {self.helper.name!r}: {response.status_code} {_describe(response)}",
            status=response.status_code,
            body=_json(response) or response.text,
        )

    def _heartbeat(self) -> float:
        assert self._secret is not None
        url = f"{self.core_url}/v1/helpers/{quote(self.helper.name)}/heartbeat"
        response = self._request("PUT", url, self._secret)
        if response.status_code == 200:
            self._interval = _interval(_json(response), self._interval)
            return self._interval
        if response.status_code >= 500 or response.status_code in _TRANSIENT - {409}:
            raise _Retry(f"heartbeat to {url} answered {response.status_code} {_describe(response)}")
        # 404: the core forgot us (expired, restarted); 401: it holds another secret. Either way: register again.
        log.warning("heartbeat answered %s: registering %r again", response.status_code, self.helper.name)
        self._need_registration = True
        return 0.0

    def _deregister(self, secret: str) -> None:
        url = f"{self.core_url}/v1/helpers/{quote(self.helper.name)}"
        try:
            response = self._request("DELETE", url, secret, timeout=min(self.request_timeout, 5.0))
        except _Retry as error:
            log.warning("could not deregister %r: %s", self.helper.name, error)
            return
        if response.status_code in (200, 204, 404):
            log.info("deregistered %r from %s", self.helper.name, self.core_url)
        else:
            log.warning("deregistering %r answered %s %s", self.helper.name, response.status_code, _describe(response))

    def _request(
        self, method: str, url: str, bearer: str, *, json: Any = None, timeout: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        try:
            return self._session.request(
                method,
                url,
                json=json,
                headers={"Authorization": f"Bearer {bearer}", **(headers or {})},
                timeout=timeout or self.request_timeout,
                allow_redirects=False,
            )
        except requests.RequestException as error:
            raise _Retry(f"{method} {url} failed: {error.__class__.__name__}: {error}") from None


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _describe(response: requests.Response) -> str:
    body = _json(response)
    if "error" in body:
        fields = f" {body['fields']}" if body.get("fields") else ""
        return f"{body['error']}{fields}"
    return response.text[:200]


def _retry_after(response: requests.Response, floor: float, ceiling: float) -> float | None:
    """The core's Retry-After in seconds, kept within [floor, ceiling]; None when it sent none."""
    try:
        seconds = float(response.headers.get("Retry-After", ""))
    except ValueError:
        return None
    return min(max(seconds, floor), ceiling)


def _interval(body: dict[str, Any], default: float = _DEFAULT_INTERVAL) -> float:
    value = body.get("heartbeat_interval")
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return max(float(value), _MIN_INTERVAL)
    return default


def _valid_secret(secret: str) -> bool:
    try:
        Webhook(secret)
    except Exception:
        return False
    return True
