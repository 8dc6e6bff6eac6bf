"""``python -m operator_tools.deadletter_cli list|show <id>|replay <id>|purge``: the operator's dead-letter tool.

Reads the same settings as every process (``REDIS_URL``, ``SWITCHBOARD_KEY_PREFIX``)
and sends tasks by name, like the edge.  Exit status: 0 done, 1 refused or
not found, 2 usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from redis_stores.deadletters import DeadLetters
from redis_stores.helper_registry import registry_from_settings
from redis_stores.messages import MessageStore
from redis_stores.redis_client import redis_client
from redis_stores.replay import Replayer, ReplayRefused
from tasks.celery_factory import create_celery
from tasks.keys import Keys
from tasks.settings import load_settings
from telemetry.logs import configure_logging

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m operator_tools.deadletter_cli",
                                     description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="the newest dead letters, one per line")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    show = commands.add_parser("show", help="a message's dead letters, record and reply")
    show.add_argument("message_id")
    replay = commands.add_parser("replay", help="answer a failed message again, or deliver a dead reply again")
    replay.add_argument("message_id")
    replay.add_argument("--kind", choices=("poison", "delivery"),
                        help="default: poison for a failed message, delivery for an answered one")
    purge = commands.add_parser("purge", help="empty the dead-letter list")
    purge.add_argument("--replayed", action="store_true", help="only the entries of messages already replayed")
    purge.add_argument("--yes", action="store_true", help="really purge everything (without --replayed)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = load_settings()
    configure_logging("cli", "text", "WARNING")
    client = redis_client(settings)
    keys = Keys(settings.key_prefix)
    dead = DeadLetters(client, keys)
    messages = MessageStore(client, keys, status_ttl=settings.status_ttl_seconds,
                            idempotency_ttl=settings.idempotency_ttl_seconds)
    replayer = Replayer(client, keys, messages, registry_from_settings(client, keys, settings),
                        create_celery(settings, main="switchboard-cli"))
    out = sys.stdout

    if args.command == "list":
        replays = replayer.replays()
        for entry in dead.recent(args.limit):
            replayed = replays.get(entry["message_id"])
            if args.json:
                out.write(json.dumps({**entry, "replayed": replayed}) + "\n")
            else:
                mark = f"  [replayed {replayed['at']}]" if replayed else ""
                out.write(f"{entry['at']}  {entry['kind']:<9} {entry['message_id']}  {entry['reason']}{mark}\n")
        return 0

    if args.command == "show":
        entries = dead.for_message(args.message_id)
        record = messages.get(args.message_id)
        if not entries and record is None:
            sys.stderr.write(f"{args.message_id}: no dead letter and no record\n")
            return 1
        shown: dict[str, Any] = {"dead_letters": entries, "replayed": replayer.replays().get(args.message_id)}
        if record is not None:
            shown["record"] = {
                "status": record.status, "delivery": record.delivery, "stage": record.stage,
                "attempts": record.attempts, "error": record.error, "session_id": record.session_id,
                "channel": record.envelope.get("channel"), "sender": record.envelope.get("sender"),
                "text": record.envelope.get("text"), "reply": record.reply,
                "callback_url": (record.envelope.get("reply") or {}).get("callback_url"),
            }
        out.write(json.dumps(shown, indent=2, ensure_ascii=False) + "\n")
        return 0

    if args.command == "replay":
        try:
            result = replayer.replay(args.message_id, args.kind)
        except ReplayRefused as exc:
            sys.stderr.write(f"refused: {exc}\n")
            return 1
        out.write(result.describe() + "\n")
        return 0

    if args.command == "purge":
        if args.replayed:
            removed = dead.remove(set(replayer.replays()))
            out.write(f"removed {removed} entries of replayed messages\n")
            return 0
        if not args.yes:
            sys.stderr.write("purge empties the whole list: add --yes (or use --replayed)\n")
            return 2
        out.write(f"removed {dead.purge()} entries\n")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
