"""Send a message to Switchboard and receive the signed reply on a local callback.

    python examples/api_client.py "What is the capital of France?" --user alice

Needs the edge running (`make run`), a client key (API_KEY, default: .run/api-key) and the same
SWITCHBOARD_SECRET (default: .run/secret).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("text")
    parser.add_argument("--user", default="example-user")
    parser.add_argument("--edge", default=os.environ.get("PUBLIC_BASE_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    secret = os.environ.get("SWITCHBOARD_SECRET") or Path(".run/secret").read_text().strip()
    key = os.environ.get("API_KEY") or Path(".run/api-key").read_text().strip()
    replies: queue.Queue[dict[str, object]] = queue.Queue()

    class Callback(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                Webhook(secret).verify(body, {k.lower(): v for k, v in self.headers.items()})
            except WebhookVerificationError:
                self.send_response(401)
                self.end_headers()
                return
            self.send_response(204)
            self.end_headers()
            replies.put(json.loads(body))

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Callback)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    reply_url = f"http://127.0.0.1:{server.server_address[1]}/reply"
    response = requests.post(
        f"{args.edge}/v1/messages", json={"user": args.user, "text": args.text, "reply_url": reply_url},
        headers={"Authorization": f"Bearer {key}"}, timeout=30,
    )
    response.raise_for_status()
    print("queued:", response.json()["message_id"])
    reply = replies.get(timeout=args.timeout)
    print(f"[{reply['status']}] {reply['text']}")
    server.shutdown()


if __name__ == "__main__":
    main()
