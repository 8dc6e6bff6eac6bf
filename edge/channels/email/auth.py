"""Is a mail's ``From`` its sender? The verdicts of whoever received it (Mailgun, SendGrid, our IMAP host's MTA).

Anyone can write ``From: alice@example.org``. Answering such a mail mails a stranger's text to alice
(backscatter: rotating forged senders makes the system a spam relay), and letting it join alice's thread puts
words into her conversation. The receiving server checked SPF and DKIM when the mail came in; this reads
its verdict:

- Mailgun: ``X-Mailgun-Spf`` and ``X-Mailgun-Dkim-Check-Result`` (form fields, else the mail's headers);
- SendGrid: the ``SPF`` and ``dkim`` fields (``{@example.org : pass}``);
- IMAP: the ``Authentication-Results`` header (RFC 8601) added by the host named in ``EMAIL_AUTHSERV_ID``.
  Any other such header could have been written by the sender, so it is never read.

``pass``: DMARC passed, or DKIM passed for the From domain, or SPF passed for an envelope sender in the From
domain (a parent or child of it counts: relaxed alignment). A pass for another domain, or one naming no
domain, says nothing about the From: a spammer's own domain passes SPF and DKIM while the From names a
victim. ``fail``: DMARC failed, or checks ran and none passed for the From domain. ``none``: no check ran
(or only ``none``, ``neutral``, ``temperror``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import Message

__all__ = ["SenderCheck", "from_authentication_results", "from_mailgun", "from_sendgrid", "judge"]

FAILED = frozenset({"fail", "softfail", "permerror"})


@dataclass(frozen=True)
class SenderCheck:
    verdict: str  # "pass" | "fail" | "none"
    detail: str  # what the verdict rests on, for the dead letter and the logs


def _aligned(domain: str | None, from_domain: str) -> bool:
    if not domain:
        return False  # a pass that names no domain cannot vouch for the From
    domain, from_domain = domain.lower().strip("."), from_domain.lower().strip(".")
    return domain == from_domain or from_domain.endswith("." + domain) or domain.endswith("." + from_domain)


def judge(spf: str | None, dkim: Sequence[tuple[str | None, str]], dmarc: str | None, from_domain: str,
          source: str, spf_domain: str | None = None) -> SenderCheck:
    """The verdict from SPF's result (for the envelope sender's ``spf_domain``), DKIM's (domain, result) pairs
    and DMARC's result, all lowercase."""
    given = [f"spf={spf}" + (f" ({spf_domain})" if spf_domain else "")] if spf else []
    given += [f"dkim={result}" + (f" ({domain})" if domain else "") for domain, result in dkim]
    given += [f"dmarc={dmarc}"] if dmarc else []
    detail = f"{source}: " + (", ".join(given) or "no verdict")
    if dmarc == "fail":
        return SenderCheck("fail", detail)
    if (dmarc == "pass" or (spf == "pass" and _aligned(spf_domain, from_domain))
            or any(r == "pass" and _aligned(d, from_domain) for d, r in dkim)):
        return SenderCheck("pass", detail)
    if any(r == "pass" or r in FAILED for r in [spf, *(r for _, r in dkim)]):
        return SenderCheck("fail", detail)  # checks ran, and none vouches for the From domain
    return SenderCheck("none", detail)  # only none/neutral/temperror: nothing to go by


def _domain(address: str | None) -> str | None:
    """The domain of an envelope sender (``<bounce@lists.example.org>``), or None."""
    found = re.search(r"@([\w.-]+)>?\s*\Z", address or "")
    return found.group(1).lower() if found else None


def _word(value: str | None) -> str | None:
    found = re.match(r"\s*([A-Za-z]+)", value or "")
    return found.group(1).lower() if found else None


Fields = Mapping[str, bytes] | Mapping[str, str]


def _field(fields: Fields, name: str) -> str | None:
    value = fields.get(name)
    return value.decode("latin-1") if isinstance(value, bytes) else value


def from_mailgun(fields: Fields, msg: Message, from_domain: str) -> SenderCheck:
    spf = _field(fields, "X-Mailgun-Spf") or msg.get("X-Mailgun-Spf")
    dkim = _field(fields, "X-Mailgun-Dkim-Check-Result") or msg.get("X-Mailgun-Dkim-Check-Result")
    envelope = _field(fields, "sender") or msg.get("Return-Path")  # Mailgun posts the envelope sender as "sender"
    return judge(_word(str(spf) if spf else None), [(None, w) for w in [_word(str(dkim) if dkim else None)] if w],
                 None, from_domain, "mailgun", spf_domain=_domain(str(envelope) if envelope else None))


def from_sendgrid(fields: Fields, from_domain: str) -> SenderCheck:
    pairs = re.findall(r"@([\w.-]+)\s*:\s*([A-Za-z]+)", _field(fields, "dkim") or "")
    dkim = [(domain, result.lower()) for domain, result in pairs]
    envelope = re.search(r'"from"\s*:\s*"([^"]*)"', _field(fields, "envelope") or "")  # {"to": [...], "from": "..."}
    return judge(_word(_field(fields, "SPF")), dkim, None, from_domain, "sendgrid",
                 spf_domain=_domain(envelope.group(1)) if envelope else None)


def from_authentication_results(msg: Message, authserv_id: str, from_domain: str) -> SenderCheck:
    """The first ``Authentication-Results`` of the trusted host (the one nearest the top: added last, by it)."""
    if not authserv_id:
        return SenderCheck("none", "imap: no EMAIL_AUTHSERV_ID to trust an Authentication-Results header of")
    for value in msg.get_all("Authentication-Results") or []:
        text = " ".join(str(value).split())
        server, _, results = text.partition(";")
        host = server.split()[0].lower() if server.split() else ""
        if host != authserv_id.lower():
            continue
        spf = re.search(r"\bspf=([a-z]+)", results, re.I)
        mailfrom = re.search(r"\bsmtp\.mailfrom=([^\s;]+)", results, re.I)
        dmarc = re.search(r"\bdmarc=([a-z]+)", results, re.I)
        dkim = [(d or None, r.lower()) for r, d in re.findall(
            r"\bdkim=([a-z]+)(?:[^;]*?\bheader\.[di]=@?([\w.-]+))?", results, re.I)]
        return judge(spf.group(1).lower() if spf else None, dkim, dmarc.group(1).lower() if dmarc else None,
                     from_domain, f"imap ({authserv_id})",
                     spf_domain=(mailfrom.group(1).rpartition("@")[2].lower() or None) if mailfrom else None)
    return SenderCheck("none", f"imap: no Authentication-Results from {authserv_id}")
