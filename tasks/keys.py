"""Every Redis key the system writes, in one place.

Keys of one session share a ``{session}`` hash tag so the Lua scripts that
touch several of them stay valid on a Redis Cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Keys", "scoped"]


def scoped(*parts: str) -> str:
    """One unambiguous key part from several, each length-prefixed (``5:alice2:42``): a ``:``-join of
    user-controlled parts would let ``alice:order`` + ``42`` collide with ``alice`` + ``order:42``."""
    return "".join(f"{len(part)}:{part}" for part in parts)


@dataclass(frozen=True)
class Keys:
    prefix: str = "sb"

    # messages
    def message(self, message_id: str) -> str:
        return f"{self.prefix}:msg:{message_id}"

    def message_events(self, message_id: str) -> str:
        """Pub/sub channel announcing a message's status changes (long polls listen)."""
        return f"{self.prefix}:msg:{message_id}:events"

    def owner_open(self, owner: str) -> str:
        """The open (not yet answered or failed) messages of one client door's caller: its quota."""
        return f"{self.prefix}:owner:{scoped(owner)}:open"

    def owner_files(self, owner: str) -> str:
        """The stored uploads of one client door's caller, with their sizes: its byte quota."""
        return f"{self.prefix}:owner:{scoped(owner)}:files"

    def idempotency(self, scope: str, key: str) -> str:
        return f"{self.prefix}:idem:{scope}:{key}"

    @property
    def ratelimit(self) -> str:
        """The prefix of every rate-limit bucket (the edge's limits and the helper-call limit)."""
        return f"{self.prefix}:ratelimit"

    # files
    def upload_file(self, file_id: str) -> str:
        """Hash: the record (mime, name, size, owner) of a file sent to ``POST /v1/files``."""
        return f"{self.prefix}:file:{file_id}"

    def mail_attachment(self, file_id: str) -> str:
        """Hash: the record of a mail's attachment kept for the converters."""
        return f"{self.prefix}:email:attachment:{file_id}"

    def owner_files_expiry(self, owner: str) -> str:
        """Sorted set: when each of ``owner_files``' uploads expires (the quota forgets it then)."""
        return f"{self.owner_files(owner)}:expires"

    # sessions
    def session_inbox(self, session_id: str) -> str:
        return f"{self.prefix}:session:{{{session_id}}}:inbox"

    def session_history(self, session_id: str) -> str:
        return f"{self.prefix}:session:{{{session_id}}}:history"

    def session_lock(self, session_id: str) -> str:
        return f"{self.prefix}:session:{{{session_id}}}:lock"

    def session_outbox(self, session_id: str) -> str:
        """Replies waiting to be delivered, in answer order (delivery is ordered per session too)."""
        return f"{self.prefix}:session:{{{session_id}}}:outbox"

    @property
    def pending_sessions(self) -> str:
        """Sessions with messages in their inbox: what the sweeper looks at."""
        return f"{self.prefix}:sessions:pending"

    def session_fence(self, session_id: str) -> str:
        return f"{self.prefix}:session:{{{session_id}}}:fence"

    # delivery
    def owner_deliveries(self, owner: str) -> str:
        """The deliveries to one client door caller's reply URLs being posted now (its delivery bulkhead)."""
        return f"{self.prefix}:owner:{scoped(owner)}:delivering"

    def delivery_claim(self, message_id: str) -> str:
        return f"{self.prefix}:deliver:{message_id}:claim"

    def delivery_posting(self, message_id: str) -> str:
        """The lease of the one attempt posting this reply now (a nonce; it lapses with the POST's deadline)."""
        return f"{self.prefix}:deliver:{message_id}:posting"

    def delivery_alive(self, message_id: str) -> str:
        """Set by each attempt at an outbox head: its delivery task is alive (the sweeper leaves it alone)."""
        return f"{self.prefix}:deliver:{message_id}:alive"

    @property
    def outbox_pattern(self) -> str:
        """SCAN pattern of every session's outbox (the sweeper looks for heads that lost their task)."""
        return f"{self.prefix}:session:{{*}}:outbox"

    # helpers
    @property
    def helpers(self) -> str:
        return f"{self.prefix}:helpers"

    def helper(self, name: str) -> str:
        return f"{self.prefix}:helper:{name}"

    def helper_health(self, name: str) -> str:
        return f"{self.prefix}:helper:{name}:health"

    def helper_trial(self, name: str) -> str:
        """The half-open circuit's one trial call, claimed by the call that makes it."""
        return f"{self.helper_health(name)}:trial"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}:deadletter"

    # channels
    def callback_sent(self, channel: str, webhook_id: str) -> str:
        """Set once a channel callback (its ``webhook-id``) was handed to the provider: a repeat is dropped."""
        return f"{self.prefix}:channel:{channel}:sent:{webhook_id}"

    def callback_claim(self, channel: str, webhook_id: str) -> str:
        """The lease of the one request sending that callback now."""
        return f"{self.callback_sent(channel, webhook_id)}:claim"

    def reply_part_sent(self, provider: str, message_id: str, index: int) -> str:
        """Set once part ``index`` of a reply reached the provider (``telegram``, ``slack``, ``twilio``)."""
        return f"{self.prefix}:{provider}:sent:{message_id}:{index}"

    def partial_reply(self, channel: str, message_id: str) -> str:
        """Hash: which provider message shows a reply still being written (``edge/channels/partials.py``)."""
        return f"{self.prefix}:{channel}:partial:{message_id}"

    def partial_reply_lock(self, channel: str, message_id: str) -> str:
        return f"{self.partial_reply(channel, message_id)}:lock"

    def twilio_opt_out(self, number: str) -> str:
        """Set while a phone number has opted out of SMS (STOP … START)."""
        return f"{self.prefix}:twilio:optout:{number}"

    def mailgun_token(self, token_sha256: str) -> str:
        """A Mailgun webhook token already seen (a replayed signed request is refused)."""
        return f"{self.prefix}:email:mailgun-token:{token_sha256}"

    # operations
    @property
    def metrics_counters(self) -> str:
        """Hash: one field per counter series (``telemetry/metrics.py``), summed over every process."""
        return f"{self.prefix}:metrics:counters"

    @property
    def metrics_histograms(self) -> str:
        """Hash: one field per histogram bucket, sum and count."""
        return f"{self.prefix}:metrics:histograms"

    @property
    def workers(self) -> str:
        """Hash: one heartbeat record per worker process (``telemetry/heartbeat.py``)."""
        return f"{self.prefix}:workers"

    @property
    def dead_letter_replays(self) -> str:
        """Hash: message id -> what its replay did (so a replay is never repeated)."""
        return f"{self.prefix}:deadletter:replays"
