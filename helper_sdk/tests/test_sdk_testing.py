"""helper_sdk.testing answers like the core does, and signs like the core does."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from standardwebhooks.webhooks import Webhook

from helper_sdk import Helper, verify_core_signature
from helper_sdk.testing import FakeCore, HelperClient, new_secret, signed_invocation


def register(core: FakeCore, body: Any, token: str | None = None, secret: str = "") -> requests.Response:
    headers = {"Authorization": f"Bearer {token or core.token}", **({"X-Helper-Secret": secret} if secret else {})}
    return requests.post(f"{core.url}/v1/helpers", json=body, headers=headers, timeout=5)


def auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_signed_invocations_verify_with_standard_webhooks() -> None:
    secret = new_secret()
    path, body, headers = signed_invocation(secret, "calc", {"x": 1}, {"channel": "sms"}, call_id="c-1")
    assert path == "/invoke/calc"
    assert Webhook(secret).verify(body, headers) == {
        "input": {"x": 1},
        "context": {"call_id": "c-1", "message_id": "test-message", "session_id": "test:session", "channel": "sms"},
    }
    verify_core_signature(secret, body, headers)
    assert headers["webhook-id"] == "c-1"


def test_the_fake_core_registers_and_answers_like_the_contract(fake_core: FakeCore, sample_helper: Helper) -> None:
    answer = register(fake_core, sample_helper.manifest("http://127.0.0.1:9"))
    assert answer.status_code == 201
    body = answer.json()
    assert set(body) == {"name", "secret", "heartbeat_interval", "expires_in"}
    assert body["secret"].startswith("whsec_")
    url = f"{fake_core.url}/v1/helpers/sample"
    beat = requests.put(f"{url}/heartbeat", headers=auth(body["secret"]), timeout=5)
    assert beat.json() == {"heartbeat_interval": 0.05, "expires_in": 10}
    assert requests.put(f"{url}/heartbeat", headers=auth(new_secret()), timeout=5).status_code == 401
    assert requests.delete(url, headers=auth(body["secret"]), timeout=5).status_code == 204
    assert requests.put(f"{url}/heartbeat", headers=auth(body["secret"]), timeout=5).status_code == 404
    assert fake_core.heartbeats == ["sample"]
    assert fake_core.deregistrations == ["sample"]


def test_the_fake_core_refuses_what_the_core_refuses(fake_core: FakeCore, sample_helper: Helper) -> None:
    manifest = sample_helper.manifest("http://127.0.0.1:9")
    assert register(fake_core, manifest, token="wrong").status_code == 401
    bad = {**manifest, "name": "Bad Name", "capabilities": [{**manifest["capabilities"][0], "reply": "shout"}]}
    refused = register(fake_core, bad)
    assert refused.status_code == 400
    assert refused.json()["fields"] == {
        "name": ["use 1-32 of a-z, 0-9, _ and -, starting with a letter"],
        "capabilities": {"0": {"reply": ["must be 'model' or 'direct'"]}},
    }
    secret = register(fake_core, manifest).json()["secret"]
    held = register(fake_core, manifest)  # the same URL proves nothing: anyone can claim it
    assert held.status_code == 409 and 1 <= int(held.headers["Retry-After"]) <= 10
    moved = {**manifest, "url": "http://127.0.0.1:10"}
    assert register(fake_core, moved, secret=secret).status_code == 201  # its current secret renews or moves it
    wild = {**manifest, "capabilities": [{**manifest["capabilities"][0], "accepts": ["image/*"]}]}
    assert "HELPER_WILDCARD_ACCEPTS" in register(fake_core, wild).json()["fields"]["capabilities"]["0"]["accepts"][0]
    fake_core.available = False
    assert register(fake_core, manifest).status_code == 503
    assert fake_core.registrations == [manifest, moved]
    assert [r.status for r in fake_core.requests] == [401, 400, 201, 409, 201, 400, 503]


def test_invoking_a_capability_nobody_offers_is_a_lookup_error(fake_core: FakeCore) -> None:
    with pytest.raises(LookupError):
        fake_core.invoke("nothing", {})


def test_the_helper_client_signs_with_its_secret(sample_helper: Helper) -> None:
    client = HelperClient(sample_helper, secret=(secret := new_secret()))
    assert client.secret == secret
    assert client.invoke("whoami", {}, context={"channel": "mail"}).json["output"]["channel"] == "mail"
