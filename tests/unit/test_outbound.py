from __future__ import annotations

import pytest

from outbound_http.host_policy import BlockedURL, HostPolicy

LOOPBACK = HostPolicy(["127.0.0.0/8", "::1", "localhost"])


def test_loopback_addresses_are_allowed_by_default() -> None:
    target = LOOPBACK.check("http://127.0.0.1:8123/cb?x=1")
    assert (target.address, target.port, target.path) == ("127.0.0.1", 8123, "/cb?x=1")


def test_a_named_host_is_allowed() -> None:
    assert LOOPBACK.check("https://localhost/x").port == 443


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/",
        "http://169.254.169.254/latest/meta-data",
        "ftp://127.0.0.1/",
        "http://user:pw@127.0.0.1/",
        "http:///nohost",
        "http://127.0.0.1:99999/",
    ],
)
def test_urls_outside_the_allow_list_are_refused(url: str) -> None:
    with pytest.raises(BlockedURL):
        LOOPBACK.check(url)


def test_a_cidr_allows_its_addresses_only() -> None:
    policy = HostPolicy(["10.1.0.0/16"])
    assert policy.check("http://10.1.2.3/").address == "10.1.2.3"
    with pytest.raises(BlockedURL):
        policy.check("http://10.2.0.1/")


def test_wildcard_names_match_subdomains_only() -> None:
    policy = HostPolicy(["*.localhost"])
    with pytest.raises(BlockedURL):
        policy.check("http://localhost/")
