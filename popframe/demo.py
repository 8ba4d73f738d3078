"""The ``--demo`` environment: a user, a Maildir with mail, a certificate.

Everything lives in one directory so a first-time user can run popframe
with one option, connect with curl or poplib, and delete the directory to
start over.  A second run reuses what is there: the same password, the same
certificate (clients that pinned it keep working) and whatever mail is left.
The sample mail is only delivered when the Maildir is created, so messages
deleted with DELE stay deleted, as they would with a real maildrop.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import secrets
import shlex
import shutil
import socket
import time
from dataclasses import dataclass, replace
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

from popframe.auth.schemes import make_hash
from popframe.config import ConfigurationError
from popframe.files import write_file_atomically
from popframe.tls import load_server_certificate, make_self_signed

__all__ = ["DEMO_USER", "DemoEnvironment", "demo_instructions", "prepare_demo"]

DEMO_USER = "demo"
DEMO_KEY = "--demo"
PASSWORD_SCHEME = "SHA512-CRYPT"
_DOMAIN = "example.org"


@dataclass(frozen=True)
class DemoEnvironment:
    """What ``prepare_demo`` set up, for the service and the start-up text."""

    directory: Path
    passwd_file: Path
    maildir_template: str
    cert_path: Path
    key_path: Path
    user: str
    password: str

    @property
    def maildir(self) -> Path:
        """The demo user's Maildir (the template expanded for ``user``)."""
        return Path(self.maildir_template.replace("%u", self.user))


def prepare_demo(directory: Path) -> DemoEnvironment:
    """Create the demo environment in ``directory``, or reuse it.

    Raises ``ConfigurationError("--demo", ...)`` when the directory cannot
    be used (not writable, a file in the way, a ``%`` in its path).
    """
    directory = Path(directory).expanduser().absolute()
    if "%" in str(directory):
        # The Maildir path is a %u template; a literal % would be expanded.
        raise ConfigurationError(DEMO_KEY, f"the directory path may not contain '%': {directory}")
    env = DemoEnvironment(
        directory=directory,
        passwd_file=directory / "users",
        maildir_template=f"{directory}/mail/%u/Maildir",
        cert_path=directory / "cert.pem",
        key_path=directory / "key.pem",
        user=DEMO_USER,
        password="",
    )
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        password = _demo_password(directory / "demo-password")
        _write_passwd_file(env.passwd_file, env.user, password)
        _create_maildir(env.maildir)
        _ensure_certificate(env.cert_path, env.key_path)
    except OSError as error:
        where = f" ({error.filename})" if error.filename else ""
        raise ConfigurationError(
            DEMO_KEY, f"cannot set up the demo in {directory}: {error.strerror or error}{where}"
        ) from error
    return replace(env, password=password)


# -- the user ------------------------------------------------------------------


def _demo_password(path: Path) -> str:
    """The password kept in ``demo-password``, or a new random one.

    The file is the one source of truth: edit it to choose a password.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (FileNotFoundError, UnicodeDecodeError):
        lines = []
    if lines and lines[0].strip():
        return lines[0].strip()
    password = secrets.token_urlsafe(12)
    write_file_atomically(path, f"{password}\n".encode("ascii"), mode=0o600)
    return password


def _write_passwd_file(path: Path, user: str, password: str) -> None:
    """The Dovecot-style passwd-file, derived from ``demo-password`` and
    rewritten at every start (a fresh salt; lines added by hand are lost)."""
    line = f"{user}:{make_hash(PASSWORD_SCHEME, password.encode('utf-8'))}\n"
    write_file_atomically(path, line.encode("utf-8"), mode=0o600)


# -- the certificate -------------------------------------------------------------


def _ensure_certificate(cert_path: Path, key_path: Path) -> None:
    """Reuse a matching pair that is valid for another day; else make one."""
    if cert_path.exists() and key_path.exists():
        try:
            server = load_server_certificate(cert_path, key_path)
        except ConfigurationError:
            pass
        else:
            tomorrow = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
            if server.certificate.not_valid_after_utc > tomorrow:
                return
    make_self_signed(cert_path, key_path)


# -- the Maildir -------------------------------------------------------------------


def _create_maildir(maildir: Path) -> None:
    """Create the Maildir with the sample mail in it, unless it exists.

    It is built under a temporary name and renamed into place, so a run
    that dies half way leaves no Maildir that a rerun would take as done.
    """
    if maildir.exists():
        return
    maildir.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    staging = maildir.with_name(f".{maildir.name}.{secrets.token_hex(4)}.tmp")
    try:
        for sub in ("tmp", "new", "cur"):
            (staging / sub).mkdir(mode=0o700, parents=True)
        messages = sample_messages()
        first = int(time.time()) - len(messages)  # oldest first, none in the future
        for number, message in enumerate(messages):
            _deliver(staging, message, first + number, number)
        os.rename(staging, maildir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _deliver(maildir: Path, message: bytes, when: int, sequence: int) -> None:
    """Deliver as an MTA does: write into tmp/, then rename into new/."""
    name = f"{when}.M{time.time_ns() // 1000 % 1_000_000}P{os.getpid()}Q{sequence + 1}.{_host()}"
    temporary = maildir / "tmp" / name
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(message)
        file.flush()
        os.fsync(file.fileno())
    os.utime(temporary, (when, when))
    os.rename(temporary, maildir / "new" / name)


def _host() -> str:
    """The host part of a Maildir name: the first label of the host name,
    short and without '/' or ':', so file names stay valid UIDL values."""
    label = socket.gethostname().split(".")[0]
    return re.sub(r"[^A-Za-z0-9-]", "_", label)[:32] or "localhost"


def sample_messages() -> list[bytes]:
    """The demo mail, as stored: each one exercises a part of POP3."""
    now = datetime.datetime.now(datetime.UTC).astimezone()
    builders = [_welcome, _dot_lines, _bare_lf, _attachment, _long_utf8]
    count = len(builders)
    return [
        build(now - datetime.timedelta(minutes=count - number))
        for number, build in enumerate(builders)
    ]


def _envelope(subject: str, date: datetime.datetime, *, lf: bool = False) -> EmailMessage:
    """A message with the headers an MTA and a mail client would add."""
    msg_policy = policy.default if lf else policy.SMTP
    message = EmailMessage(policy=msg_policy)
    message["Return-Path"] = f"<postmaster@{_DOMAIN}>"
    message["Delivered-To"] = f"{DEMO_USER}@{_DOMAIN}"
    message["Received"] = (
        f"from mail.{_DOMAIN} (mail.{_DOMAIN} [192.0.2.25]) by mx.{_DOMAIN} "
        f"with ESMTPS id {secrets.token_hex(6).upper()} for <{DEMO_USER}@{_DOMAIN}>; "
        f"{format_datetime(date)}"
    )
    message["From"] = f"popframe <postmaster@{_DOMAIN}>"
    message["To"] = f"Demo User <{DEMO_USER}@{_DOMAIN}>"
    message["Subject"] = subject
    message["Date"] = format_datetime(date)
    message["Message-ID"] = make_msgid(domain=_DOMAIN)
    return message


def _as_bytes(message: EmailMessage) -> bytes:
    return message.as_bytes(policy=message.policy)


def _welcome(date: datetime.datetime) -> bytes:
    message = _envelope("Welcome to popframe", date)
    message.set_content(
        "Hello,\n"
        "\n"
        "this is the popframe demo maildrop.  popframe is a POP3 server\n"
        "framework on Twisted: credential sources and mailbox stores are\n"
        "plugins, and the protocol core follows RFC 1939, 2449, 2595 and 5034.\n"
        "\n"
        "The messages here each try one thing:\n"
        "  2. lines that start with a dot (dot-stuffing),\n"
        "  3. a message stored with bare LF line ends,\n"
        "  4. a MIME attachment,\n"
        "  5. a UTF-8 subject and 40 numbered lines for TOP.\n"
        "\n"
        "Things to try: CAPA, STAT, LIST, UIDL, TOP 5 10, RETR 2, DELE 1\n"
        "then QUIT (deletions happen at QUIT, RSET undoes them).\n"
        "\n"
        "The mail lives in an ordinary Maildir; drop more messages into its\n"
        "new/ directory and they show up at the next login.\n"
        "\n"
        "-- \n"
        "popframe\n",
        cte="7bit",
    )
    return _as_bytes(message)


def _dot_lines(date: datetime.datetime) -> bytes:
    message = _envelope("Lines that start with a dot", date)
    message.set_content(
        "POP3 ends a multi-line reply with a line holding one dot, so the\n"
        'server doubles a dot that starts a line ("dot-stuffing", RFC 1939\n'
        "section 3) and your client removes it again.  Between the rules\n"
        "below, every line starts with a dot; you should see them unchanged:\n"
        "\n"
        "----\n"
        ".\n"
        "..\n"
        ".profile\n"
        "...and an ellipsis\n"
        ". a dot, then a space\n"
        "----\n"
        "\n"
        "The line after the first rule holds a single dot: without stuffing,\n"
        "the message would end there.\n",
        cte="7bit",
    )
    return _as_bytes(message)


def _bare_lf(date: datetime.datetime) -> bytes:
    message = _envelope("Stored with bare LF line ends", date, lf=True)
    message.set_content(
        "This message is stored with LF line ends, as Postfix and Dovecot\n"
        "write Maildir files.  POP3 sends CRLF, so the server converts line\n"
        "ends as it sends, and the sizes in LIST and STAT count the CRLF\n"
        "form: they are larger than the file on disk.\n",
        cte="7bit",
    )
    return _as_bytes(message)


def _attachment(date: datetime.datetime) -> bytes:
    message = _envelope("Your message list, attached", date)
    message.set_content(
        "The attached file lists the messages of this demo maildrop.\n"
        "A MIME client shows it as an attachment; in raw form it is a\n"
        "base64 part at the end of this message.\n",
        cte="7bit",
    )
    listing = (
        "number,subject,what it tests\r\n"
        "1,Welcome to popframe,plain text\r\n"
        "2,Lines that start with a dot,dot-stuffing\r\n"
        "3,Stored with bare LF line ends,line end conversion\r\n"
        "4,\"Your message list, attached\",MIME\r\n"
        "5,Numbered lines,TOP and UTF-8\r\n"
    )
    message.add_attachment(
        listing.encode("utf-8"), maintype="text", subtype="csv", filename="messages.csv"
    )
    for part in message.iter_parts():
        del part["MIME-Version"]  # the email package repeats it in each part
    return _as_bytes(message)


def _long_utf8(date: datetime.datetime) -> bytes:
    message = _envelope("Grüße: numbered lines for TOP", date)
    lines = [f"Line {number:2d} of 40 – ünïcödé in quoted-printable" for number in range(1, 41)]
    message.set_content("\n".join(lines) + "\n", charset="utf-8", cte="quoted-printable")
    return _as_bytes(message)


# -- what to tell the user ---------------------------------------------------------


def demo_instructions(env: DemoEnvironment, plain_port: int = 1110, tls_port: int = 1995) -> str:
    """The text printed at start-up: the credentials and commands to paste.

    The commands check the certificate against the demo's own cert.pem
    rather than switching verification off, so they teach the safe habit.
    """
    cert = shlex.quote(str(env.cert_path))
    login = shlex.quote(f"{env.user}:{env.password}")
    python = (
        "import poplib, ssl; "
        f"c = ssl.create_default_context(cafile={json.dumps(str(env.cert_path))}); "
        f'p = poplib.POP3_SSL("127.0.0.1", {tls_port}, context=c); '
        f"p.user({json.dumps(env.user)}); p.pass_({json.dumps(env.password)}); "
        "print(p.stat()); print(p.retr(1)[1][-3:]); p.quit()"
    )
    return "\n".join(
        [
            f"popframe demo in {env.directory}",
            f"  user:        {env.user}",
            f"  password:    {env.password}",
            f"  certificate: {env.cert_path} (self-signed: localhost, 127.0.0.1, ::1)",
            f"  mail:        {env.maildir}",
            "",
            f"List the messages over STLS (port {plain_port}):",
            f"  curl --ssl-reqd --cacert {cert} pop3://127.0.0.1:{plain_port}/ -u {login}",
            f"Fetch message 1 over implicit TLS (port {tls_port}):",
            f"  curl --cacert {cert} pop3s://127.0.0.1:{tls_port}/1 -u {login}",
            "  (curl -k instead of --cacert skips the certificate check)",
            "With Python's poplib:",
            f"  python3 -c {shlex.quote(python)}",
            f"By hand (then type: USER {env.user}, PASS {env.password}, LIST, RETR 1, QUIT):",
            f"  openssl s_client -starttls pop3 -connect 127.0.0.1:{plain_port} "
            f"-CAfile {cert} -crlf -quiet",
            "",
            f"Deleted mail stays deleted; remove {env.directory} to start over.",
        ]
    )
