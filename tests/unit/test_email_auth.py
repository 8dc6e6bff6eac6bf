"""Sender verdicts (issue 24 item 3): whose From a mail may be answered under, and whose thread it may join."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from edge.channels.email.auth import from_authentication_results, from_mailgun, from_sendgrid, judge


@pytest.mark.parametrize(("spf", "envelope", "dkim", "dmarc", "verdict"), [
    ("pass", "example.org", [], None, "pass"),
    ("pass", "bounces.example.org", [], None, "pass"),  # relaxed alignment: a subdomain sends
    (None, None, [("example.org", "pass")], None, "pass"),
    (None, None, [("mail.example.org", "pass")], None, "pass"),
    # A spammer's own domain passes SPF and DKIM while the From names the victim: that is no pass for the From
    # (before this was "pass" for SPF, "none" for DKIM, and either was answered to the victim).
    ("pass", "spammer.example", [("spammer.example", "pass")], None, "fail"),
    ("pass", None, [], None, "fail"),  # an SPF pass naming no domain vouches for nobody
    (None, None, [(None, "pass")], None, "fail"),
    ("fail", None, [("example.org", "fail")], None, "fail"),
    ("softfail", None, [], None, "fail"),
    ("neutral", None, [], None, "none"),
    ("none", None, [], None, "none"),
    (None, None, [], None, "none"),
    ("pass", "example.org", [("example.org", "pass")], "fail", "fail"),  # DMARC's word is the last
    ("fail", None, [], "pass", "pass"),
])
def test_the_verdict(spf: str | None, envelope: str | None, dkim: list[tuple[str | None, str]], dmarc: str | None,
                     verdict: str) -> None:
    assert judge(spf, dkim, dmarc, "example.org", "test", spf_domain=envelope).verdict == verdict


def test_mailguns_verdicts_from_its_fields_or_the_mails_headers() -> None:
    msg = EmailMessage()
    assert from_mailgun({"X-Mailgun-Spf": b"Fail", "X-Mailgun-Dkim-Check-Result": b"Fail"}, msg,
                        "third-party.example").verdict == "fail"  # the forged mail
    msg["X-Mailgun-Spf"], msg["X-Mailgun-Dkim-Check-Result"] = "Pass", "Fail"
    assert from_mailgun({"sender": b"alice@example.org"}, msg, "example.org").verdict == "pass"
    assert from_mailgun({"sender": b"bulk@spammer.example"}, msg, "example.org").verdict == "fail"
    assert from_mailgun({}, EmailMessage(), "example.org").verdict == "none"


def test_sendgrids_spf_and_dkim_fields() -> None:
    assert from_sendgrid({"SPF": b"pass", "dkim": b"{@example.org : pass}"}, "example.org").verdict == "pass"
    envelope = b'{"to": ["bot@example.com"], "from": "alice@example.org"}'
    assert from_sendgrid({"SPF": b"pass", "envelope": envelope}, "example.org").verdict == "pass"
    assert from_sendgrid({"SPF": b"pass", "dkim": b"{@spammer.example : pass}",
                          "envelope": b'{"from": "x@spammer.example"}'}, "example.org").verdict == "fail"
    assert from_sendgrid({"SPF": "fail", "dkim": "{@example.org : fail}"}, "example.org").verdict == "fail"
    assert from_sendgrid({"SPF": "none", "dkim": "none"}, "example.org").verdict == "none"


def test_only_the_trusted_hosts_authentication_results_count() -> None:
    msg = EmailMessage()
    msg["Authentication-Results"] = "mx.example.com; spf=pass smtp.mailfrom=example.org; dkim=pass header.d=example.org"
    forged = EmailMessage()  # written by the sender himself, below the trusted host's (which says fail)
    forged["Authentication-Results"] = "mx.example.com; dmarc=fail header.from=example.org"
    forged["Authentication-Results"] = "evil.example; spf=pass; dkim=pass header.d=example.org; dmarc=pass"
    assert from_authentication_results(msg, "mx.example.com", "example.org").verdict == "pass"
    assert from_authentication_results(msg, "", "example.org").verdict == "none"  # nobody is trusted
    assert from_authentication_results(msg, "other.example", "example.org").verdict == "none"
    assert from_authentication_results(forged, "mx.example.com", "example.org").verdict == "fail"
