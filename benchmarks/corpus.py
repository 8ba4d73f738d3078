#!/usr/bin/env python3
"""Deterministic benchmark corpus: Maildirs, a passwd-file, a manifest.

    python benchmarks/corpus.py OUT --users 300 --messages 20 --seed 1 \
        [--scheme SHA512-CRYPT|PLAIN] [--big-mb 100] [--huge 100000]

writes

    OUT/passwd          Dovecot passwd-file, ``user:{SCHEME}hash::::::``, read
                        by both servers (popframe: ``--auth passwd-file:OUT/passwd``)
    OUT/maildirs/USER/Maildir/{cur,new,tmp}
                        messages in ``cur/`` with Postfix-style base names and
                        ``:2,`` (no ``,S=``/``,W=``: both servers must work sizes
                        out themselves at the first open)
    OUT/manifest.json   per user: password and, per message, base name (the
                        UIDL both servers are configured to show), the octets
                        RETR must deliver (CRLF line ends, before dot-stuffing,
                        as LIST reports them) and the CRC-32 of those octets.

Users ``u0001``.. hold ``--messages`` realistic RFC 5322 messages each, sizes
from a long-tailed mixture (most a few KB, ~13% 20-300 KB with an attachment,
~2% 0.3-5 MB); about 10% of messages have lines that start with ``.`` (so they
are dot-stuffed on the wire, including a line that is a lone ``.``) and about 5%
are stored with bare LF line ends (as Postfix writes them), the rest CRLF.
``--big-mb N`` adds user ``big`` with one N MB message; ``--huge N`` adds user
``huge`` with N small messages.  The same seed always gives the same bytes.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import sys
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

HOSTS = ["mx1.example.net", "mx2.example.net", "smtp.mailer.example.com", "out.list.example.org"]
BASE_TIME = 1_700_000_000
MANIFEST = "manifest.json"
FORMAT = 1

_WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which "
    "but have an they you were her she there one all we their been has would when who will more "
    "no if out so said what up its about into than them can only other new some could time these "
    "two may then do first any my now such like our over man me even most made after also did many "
    "before must through back years where much your way well down should because each just those "
    "people how too little state good very make world still own see men work long get here between "
    "both life being under never day same another know while last might us great old year off come "
    "since against go came right used take three invoice meeting report attached please review "
    "budget quarter deadline project schedule update thanks regards team release server mailbox "
    "delivery customer order shipping account password support ticket newsletter unsubscribe"
).split()

_DOT_LINES = [".", "..", ". leading dot", "...and so on", ".signature", ".\t", ". "]


def _user_name(i: int) -> str:
    return f"u{i:04d}"


class _Text:
    """A pool of wrapped text lines to sample from: fast and deterministic."""

    def __init__(self, rng: random.Random, count: int = 4000) -> None:
        self.lines = []
        for _ in range(count):
            words, width = [], 0
            target = rng.randint(40, 76)
            while width < target:
                w = rng.choice(_WORDS)
                words.append(w)
                width += len(w) + 1
            line = " ".join(words)
            self.lines.append(line[0].upper() + line[1:])

    def paragraphs(self, rng: random.Random, size: int) -> list[str]:
        out, total = [], 0
        while total < size:
            n = rng.randint(2, 8)
            for line in rng.choices(self.lines, k=n):
                out.append(line)
                total += len(line) + 2
            out.append("")
            total += 2
        return out


_POOLS: dict[int, _Text] = {}


def _text_pool(seed: int) -> _Text:
    if seed not in _POOLS:
        _POOLS[seed] = _Text(random.Random(f"{seed}:text"))
    return _POOLS[seed]


def _size_class(rng: random.Random, small_only: bool = False) -> tuple[str, int]:
    """Target body size: a mixture of log-normals with a long tail."""
    r = rng.random()
    if small_only or r < 0.85:
        return "text", int(min(60_000, max(300, rng.lognormvariate(7.6, 0.7))))  # median ~2 KB
    if r < 0.98:
        return "attachment", int(min(400_000, max(15_000, rng.lognormvariate(11.0, 0.8))))  # ~60 KB
    return "large", int(min(5_000_000, max(300_000, rng.lognormvariate(13.3, 0.6))))  # ~600 KB


def make_message(rng: random.Random, text: _Text, user: str, when: int, *,
                 small_only: bool = False, body_bytes: int | None = None) -> list[str]:
    """One RFC 5322 message as a list of lines (no line ends)."""
    kind, size = ("large", body_bytes) if body_bytes else _size_class(rng, small_only)
    sender = f"{rng.choice(['alice', 'bob', 'carol', 'dave', 'erin', 'billing', 'noreply'])}" \
             f"@{rng.choice(['example.com', 'example.org', 'shop.example', 'lists.example.net'])}"
    date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(when))
    msgid = f"<{when}.{rng.getrandbits(48):012x}@{sender.split('@')[1]}>"
    subject = " ".join(rng.choices(_WORDS, k=rng.randint(2, 9))).capitalize()
    mx = rng.choice(HOSTS)
    headers = [
        f"Return-Path: <{sender}>",
        f"Delivered-To: {user}@example.net",
        f"Received: from {mx} ({mx} [192.0.2.{rng.randint(1, 254)}])",
        f"\tby mail.example.net (Postfix) with ESMTPS id {rng.getrandbits(40):010X}",
        f"\tfor <{user}@example.net>; {date}",
        f"Received: from [198.51.100.{rng.randint(1, 254)}] by {mx} with ESMTPSA;",
        f"\t{date}",
        f"From: {sender.split('@')[0].capitalize()} <{sender}>",
        f"To: {user}@example.net",
        f"Subject: {subject}",
        f"Date: {date}",
        f"Message-ID: {msgid}",
        "MIME-Version: 1.0",
    ]
    body_text = text.paragraphs(rng, min(size, 3000) if kind != "text" else size)
    if rng.random() < 0.10:  # lines that must be dot-stuffed
        for _ in range(rng.randint(1, 4)):
            body_text.insert(rng.randrange(len(body_text) + 1), rng.choice(_DOT_LINES))
        if rng.random() < 0.3:
            body_text.append(".")  # a lone dot as the last line
    if kind == "text":
        return headers + ["Content-Type: text/plain; charset=utf-8",
                          "Content-Transfer-Encoding: 7bit", ""] + body_text
    boundary = f"=_{rng.getrandbits(64):016x}"
    raw = rng.randbytes(max(1, size * 3 // 4))
    encoded = base64.encodebytes(raw).decode("ascii").rstrip("\n").split("\n")
    name = rng.choice(["report.pdf", "photo.jpg", "archive.zip", "slides.pptx", "data.xlsx"])
    return headers + [
        f'Content-Type: multipart/mixed; boundary="{boundary}"', "",
        "This is a multi-part message in MIME format.", "",
        f"--{boundary}", "Content-Type: text/plain; charset=utf-8", "",
    ] + body_text + [
        f"--{boundary}",
        f'Content-Type: application/octet-stream; name="{name}"',
        "Content-Transfer-Encoding: base64",
        f'Content-Disposition: attachment; filename="{name}"', "",
    ] + encoded + [f"--{boundary}--", ""]


def _write_message(cur: Path, base: str, lines: list[str], bare_lf: bool, when: int) -> tuple[int, int]:
    """Store the message; return (octets RETR sends before stuffing, CRC-32 of them)."""
    wire = ("\r\n".join(lines) + "\r\n").encode("utf-8")
    stored = wire.replace(b"\r\n", b"\n") if bare_lf else wire
    path = cur / (base + ":2,")
    with open(path, "wb") as f:
        f.write(stored)
    os.utime(path, (when, when))
    return len(wire), zlib.crc32(wire)


class _Namer:
    """Postfix-style unique names: ``TIME.VdevIinoMusec.host``."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.inode = 0x10000

    def __call__(self, when: int) -> str:
        self.inode += self.rng.randint(1, 40)
        return f"{when}.V801I{self.inode:x}M{self.rng.randrange(1_000_000)}.mail"


def _make_maildir(root: Path, user: str) -> Path:
    md = root / "maildirs" / user / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (md / sub).mkdir(parents=True, exist_ok=True)
    return md / "cur"


def _fill_user(root: Path, user: str, seed: int, count: int, *, small_only: bool = False,
               big_bytes: int | None = None, lf_fraction: float = 0.05) -> list[list]:
    rng = random.Random(f"{seed}:{user}")
    text = _text_pool(seed)
    cur = _make_maildir(root, user)
    namer = _Namer(rng)
    when = BASE_TIME + rng.randrange(86_400)
    messages = []
    for _ in range(count):
        when += rng.randint(1, 3600)
        lines = make_message(rng, text, user, when, small_only=small_only, body_bytes=big_bytes)
        base = namer(when)
        size, crc = _write_message(cur, base, lines, rng.random() < lf_fraction, when)
        messages.append([base, size, crc])
    return messages


def generate(out: Path, *, users: int, messages: int, seed: int = 1, scheme: str = "SHA512-CRYPT",
             big_mb: int = 0, huge: int = 0, lf_fraction: float = 0.05, quiet: bool = False) -> dict:
    """Write the corpus to ``out`` (which must not hold one already)."""
    from popframe.auth.schemes import make_hash

    out.mkdir(parents=True, exist_ok=True)
    manifest: dict = {
        "format": FORMAT, "seed": seed, "scheme": scheme, "users": {},
        "params": {"users": users, "messages": messages, "big_mb": big_mb, "huge": huge,
                   "lf_fraction": lf_fraction},
    }
    pw_rng = random.Random(f"{seed}:passwords")
    plan = [(_user_name(i), messages, {}) for i in range(1, users + 1)]
    if big_mb:
        plan.append(("big", 1, {"big_bytes": big_mb * 1_000_000}))
    if huge:
        plan.append(("huge", huge, {"small_only": True}))
    passwd_lines = []
    t0 = time.monotonic()
    for user, count, extra in plan:
        password = f"pw-{pw_rng.getrandbits(64):016x}"
        passwd_lines.append(f"{user}:{make_hash(scheme, password.encode())}::::::")
        msgs = _fill_user(out, user, seed, count, lf_fraction=lf_fraction, **extra)
        manifest["users"][user] = {"password": password, "messages": msgs}
        if not quiet and (user in ("big", "huge") or user.endswith("00")):
            print(f"corpus: {user} done ({time.monotonic() - t0:.1f}s)", file=sys.stderr)
    passwd = out / "passwd"
    passwd.write_text("\n".join(passwd_lines) + "\n")
    passwd.chmod(0o644)
    (out / MANIFEST).write_text(json.dumps(manifest, separators=(",", ":")))
    return manifest


def summary(manifest: dict) -> str:
    sizes = sorted(m[1] for u, v in manifest["users"].items() if u.startswith("u") for m in v["messages"])
    if not sizes:
        return "no regular users"
    q = lambda p: sizes[min(len(sizes) - 1, int(p * len(sizes)))]  # noqa: E731
    return (f"{len(sizes)} messages in {sum(1 for u in manifest['users'] if u.startswith('u'))} users, "
            f"{sum(sizes) / 1e6:.1f} MB; size p50 {q(0.5) / 1e3:.1f} KB, p90 {q(0.9) / 1e3:.1f} KB, "
            f"p99 {q(0.99) / 1e3:.0f} KB, max {sizes[-1] / 1e6:.2f} MB, mean {sum(sizes) / len(sizes) / 1e3:.1f} KB")


def load_or_generate(out: Path, **params) -> dict:
    """Reuse ``out`` if it holds a corpus made with the same parameters."""
    manifest_path = out / MANIFEST
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        want = {k: params[k] for k in ("users", "messages", "big_mb", "huge", "lf_fraction") if k in params}
        have = manifest.get("params", {})
        if (manifest.get("format") == FORMAT and manifest.get("seed") == params.get("seed", 1)
                and manifest.get("scheme") == params.get("scheme", "SHA512-CRYPT")
                and all(have.get(k) == v for k, v in want.items())):
            return manifest
    if out.exists():
        import shutil
        shutil.rmtree(out)
    return generate(out, **params)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("--users", type=int, default=300)
    p.add_argument("--messages", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--scheme", default="SHA512-CRYPT",
                   help="password scheme for the passwd-file (SHA512-CRYPT, or PLAIN to isolate protocol cost)")
    p.add_argument("--big-mb", type=int, default=0, help="add user 'big' with one message of this many MB")
    p.add_argument("--huge", type=int, default=0, help="add user 'huge' with this many small messages")
    p.add_argument("--lf-fraction", type=float, default=0.05,
                   help="share of messages stored with bare LF (Postfix writes all with LF: try 1)")
    a = p.parse_args(argv)
    if (a.out / MANIFEST).exists():
        p.error(f"{a.out} already holds a corpus")
    m = generate(a.out, users=a.users, messages=a.messages, seed=a.seed, scheme=a.scheme,
                 big_mb=a.big_mb, huge=a.huge, lf_fraction=a.lf_fraction)
    print(summary(m))


if __name__ == "__main__":
    main()
