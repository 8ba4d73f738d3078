"""popframe with LDAP users, for ``run.py --servers``:

- ``ldap-wN`` (``ldap-w2``): ``twistd pop3 --workers N --auth ldap:FILE.toml``
  and the Maildir store on the server's copy of the corpus, against a
  throwaway slapd of its own (tests/ldap_support.py's ``Slapd``: its own
  config and mdb database on two free loopback ports), seeded before it
  starts with the corpus's users;
- ``ldap-wN+ldapcache``: the same with the checker's cache of successful
  binds (``cache_ttl = 3600``): a repeated login skips the directory.

Each user's ``userPassword`` is the corpus's own hash, so slapd verifies
the same work popframe and Dovecot do from the passwd-file: ``{SSHA512}``
(slapd's ``pw-sha2`` module), ``{CRYPT}$6$...`` for SHA512-CRYPT (crypt(3)),
the cleartext for PLAIN.  popframe searches as a service account, then
binds as the user (``filter``, as benchmarks/ldap_logins.py does).  slapd
is stopped and its directory removed with the server; its CPU is the
``database server CPU`` of the report.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import servers as srv

HERE = Path(__file__).resolve().parent
CACHE_TTL = 3600


def user_password(stored: str) -> tuple[str, tuple[str, ...]]:
    """The corpus's passwd-file field as an OpenLDAP ``userPassword``, and
    the slapd modules that verifying it needs."""
    scheme, _, value = stored[1:].partition("}")
    if scheme == "SSHA512":
        return stored, ("pw-sha2",)
    if scheme == "SHA512-CRYPT":
        return "{CRYPT}" + value, ()
    if scheme in ("PLAIN", "CLEAR", "CLEARTEXT"):
        return value, ()
    if scheme in ("SSHA", "SHA"):
        return stored, ()
    raise ValueError(f"no slapd equivalent for the corpus's {{{scheme}}} passwords")


class LDAPPopframe(srv.Popframe):
    def __init__(self, workdir: Path, corpus: Path, workers: int | None, src: Path,
                 cache: bool) -> None:
        super().__init__(workdir, corpus, workers=workers, src=src)
        self.cache = cache
        self.name = "ldap" + (f"-w{workers}" if workers else "") + ("+ldapcache" if cache else "")
        self.dir = workdir / self.name
        self.log = self.dir / "server.log"
        self.maildirs = self.dir / "maildirs"
        self.slapd = None

    def prepare(self) -> None:
        import sys

        sys.path.insert(0, str(srv.REPO / "tests"))
        from ldap_logins import settings, toml
        from ldap_support import Slapd, User, user_ldif

        if shutil.which("slapd") is None:
            os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/sbin"
        entries, modules = [], set()
        for line in (self.corpus / "passwd").read_text().splitlines():
            name, stored = line.split(":")[:2]
            value, needs = user_password(stored)
            modules.update(needs)
            entries.append(user_ldif(User(name, ""), value))
        root = self.dir / "slapd"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        self.slapd = Slapd(root, extra_ldif="\n".join(entries), modules=tuple(sorted(modules)))
        self.slapd.prepare()
        self.slapd.start()
        (self.dir / "ldap.toml").write_text(
            toml(settings(self.slapd, "plain", CACHE_TTL if self.cache else 0)))

    def command(self) -> list[str]:
        cmd = super().command()
        cmd[cmd.index("--auth") + 1] = f"ldap:{self.dir / 'ldap.toml'}"
        return cmd

    def database_cpu(self) -> float:
        process = self.slapd.process if self.slapd is not None else None
        return srv.tree_cpu(process.pid) if process is not None else 0.0

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            if self.slapd is not None:
                self.slapd.stop()
                shutil.rmtree(self.slapd.root, ignore_errors=True)
                self.slapd = None


def make_ldap_server(kind: str, workdir: Path, corpus: Path, src: Path) -> LDAPPopframe:
    base, plus, option = kind.partition("+")
    workers = base[len("ldap"):]
    if (plus and option != "ldapcache") or (workers and not (workers.startswith("-w")
                                                             and workers[2:].isdigit())):
        raise ValueError(f"unknown server {kind!r}")
    return LDAPPopframe(workdir, corpus, int(workers[2:]) if workers else None, src,
                        cache=bool(plus))
