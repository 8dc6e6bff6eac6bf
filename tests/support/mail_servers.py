"""Real mail servers on loopback for the email tests: aiosmtpd (SMTP) and Debian's dovecot (IMAP)."""

from __future__ import annotations

import asyncio
import getpass
import grp
import imaplib
import os
import pwd
import shutil
import threading
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from tests.support.harness import Proc, free_port, wait_until

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"


@dataclass
class SmtpRecorder:
    """An SMTP server recording what it receives; stop() and start() again to simulate an outage."""

    port: int = field(default_factory=free_port)  # aiosmtpd 1.4.6 cannot bind port 0
    received: list[EmailMessage] = field(default_factory=list)
    step_delay: float = 0.0  # seconds before answering MAIL, RCPT and DATA each (a slow provider)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.controller: Controller | None = None

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        await asyncio.sleep(self.step_delay)
        envelope.mail_from, envelope.mail_options = address, list(options)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        await asyncio.sleep(self.step_delay)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(self.step_delay)
        message = BytesParser(policy=policy.default).parsebytes(envelope.content)
        with self.lock:
            self.received.append(message)
        return "250 OK"

    def start(self) -> None:
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


class Dovecot:
    """dovecot-imapd with a throwaway config: one user, maildir in a temp dir, plain IMAP on loopback."""

    user, password = "bot@example.com", "secret-pw"

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()
        for sub in ("run", "state", "mail", "home"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        me = getpass.getuser()
        uid, gid = os.getuid(), os.getgid()
        as_root = uid == 0 and _user_exists("dovecot")
        internal = "dovecot" if as_root else me
        login = "dovenull" if as_root and _user_exists("dovenull") else me
        if as_root:  # dovecot refuses to store mail as root: use its own user, which must reach the temp dirs
            uid, gid = pwd.getpwnam("dovecot").pw_uid, pwd.getpwnam("dovecot").pw_gid
            for path in [root, *root.parents]:
                if path == Path("/"):
                    break
                path.chmod(path.stat().st_mode | 0o711)
            for sub in ("mail", "home"):
                os.chown(root / sub, uid, gid)
        (root / "users").write_text(f"{self.user}:{{PLAIN}}{self.password}::::\n")
        (root / "dovecot.conf").write_text(f"""
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {internal}
default_internal_group = {internal if as_root else grp.getgrgid(gid).gr_name}
default_login_user = {login}
mail_location = maildir:{root}/mail/%u
mail_uid = {uid}
mail_gid = {gid}
first_valid_uid = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
""")
        self.proc = Proc("dovecot", [DOVECOT, "-F", "-c", str(root / "dovecot.conf")], dict(os.environ), root)
        wait_until(self._ready, 20, "dovecot")

    def _ready(self) -> bool:
        conn = self.connect()
        conn.logout()
        return True

    def connect(self) -> imaplib.IMAP4:
        conn = imaplib.IMAP4("127.0.0.1", self.port, timeout=5)
        conn.login(self.user, self.password)
        return conn

    def deliver(self, raw: bytes) -> None:
        """Put a mail in INBOX, unseen, as an MTA would."""
        conn = self.connect()
        try:
            typ, data = conn.append("INBOX", "", None, raw)
            assert typ == "OK", data
        finally:
            conn.logout()

    def flags(self) -> list[str]:
        conn = self.connect()
        try:
            conn.select("INBOX")
            _, data = conn.fetch("1:*", "(FLAGS)")
            return [item.decode() for item in data if isinstance(item, bytes)]
        finally:
            conn.logout()

    def stop(self) -> None:
        self.proc.stop()


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False
