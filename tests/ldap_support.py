"""A real OpenLDAP ``slapd`` (and a Samba AD DC) for the LDAP tests, and a
reactor to talk to them.

:func:`start_slapd` runs one slapd of our own (never the system instance)
on two free loopback ports, ``ldap://`` (which also offers StartTLS) and
``ldaps://``, from a temporary ``slapd.conf`` and a database seeded with
:data:`USERS` by ``slapadd`` before it starts.  Its certificate is
self-signed for 127.0.0.1 and localhost and is the test CA
(``Slapd.ca_file``).  ``stop()``, ``start()``, ``pause()`` (SIGSTOP) and
``resume()`` drive the outage tests.

Locally the tests skip when slapd is not installed; with ``CI=true`` they
fail (tests/run.sh installs it).

The checker under test is Twisted-native: the tests call it through
:meth:`ReactorRunner.call`, which runs the global reactor until the
Deferred fires (a bounded time).
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support.clocks import ManualClock
from support.ports import free_port

from popframe.testing import wait_until
from popframe.tls import make_self_signed

SUFFIX = "dc=example,dc=org"
ADMIN_DN = f"cn=admin,{SUFFIX}"
ADMIN_PASSWORD = "admin-secret"
SERVICE_DN = f"cn=popframe,ou=services,{SUFFIX}"
SERVICE_PASSWORD = "service-secret"
PEOPLE = f"ou=people,{SUFFIX}"
AD_USERS = f"cn=Users,ou=ad,{SUFFIX}"


@dataclass(frozen=True)
class User:
    uid: str
    password: str
    ou: str = PEOPLE
    extra: tuple[tuple[str, str], ...] = ()

    @property
    def dn(self) -> str:
        from popframe.auth.ldap import escape_dn_value

        return f"uid={escape_dn_value(self.uid)},{self.ou}"


#: The seeded users (objectClass inetOrgPerson + popframeMailUser).
USERS = [
    User("alice", "alice-pw", extra=(("mailMessageStore", "/srv/mail/alice-from-ldap"),
                                     ("popframeLoginDelay", "120"))),
    User("bob", "bob-pw"),
    User("carol", "carol-pw", extra=(("employeeType", "disabled"),)),
    # Two entries answer to "twin": a login as twin must be refused.
    User("twin", "twin-pw"),
    User("twin", "twin-pw", ou=f"ou=others,{SUFFIX}"),
    # Names full of filter and DN syntax: they must match themselves only.
    User("star*user", "star-pw"),
    User("paren)(uid=*", "paren-pw"),
    User("back\\slash", "backslash-pw"),
    User("jörg", "jörg-pw"),
    User("comma,plus+user", "comma-pw"),
]

#: Active Directory look-alikes (AD's attribute names and OIDs), under
#: cn=Users: (sAMAccountName, userPrincipalName, password, userAccountControl).
AD_ACCOUNTS = [
    ("dave", "dave@example.test", "Dave-pw1", 512),
    ("erin", "erin@example.test", "Erin-pw1", 514),  # ACCOUNTDISABLE (2) set
]

#: What the test schema adds: AD's user attributes with AD's OIDs, and two
#: mail attributes under UUID-based OIDs (2.25, no registration needed).
TEST_SCHEMA = """\
attributetype ( 1.2.840.113556.1.4.221 NAME 'sAMAccountName'
    EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.656 NAME 'userPrincipalName'
    EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.8 NAME 'userAccountControl'
    EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
objectclass ( 1.2.840.113556.1.5.9 NAME 'user' SUP inetOrgPerson STRUCTURAL
    MAY ( sAMAccountName $ userPrincipalName $ userAccountControl ) )
attributetype ( 2.25.247186307658473418906377101470434521501.1 NAME 'mailMessageStore'
    EQUALITY caseExactMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 2.25.247186307658473418906377101470434521501.2 NAME 'popframeLoginDelay'
    EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
objectclass ( 2.25.247186307658473418906377101470434521501.3 NAME 'popframeMailUser'
    AUXILIARY MAY ( mailMessageStore $ popframeLoginDelay ) )
"""


def ssha(password: str) -> str:
    """An OpenLDAP {SSHA} userPassword."""
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def _ldif_value(name: str, value: str) -> str:
    if value.isascii() and value.isprintable() and not value.startswith((" ", ":", "<")):
        return f"{name}: {value}\n"
    return f"{name}:: {base64.b64encode(value.encode()).decode()}\n"


def numbered_users(count: int) -> list[User]:
    """``user0``..: many users for the benchmark (password ``password-N``)."""
    return [User(f"user{n}", f"password-{n}") for n in range(count)]


def user_ldif(user: User, user_password: str) -> str:
    """One user's entry; ``user_password`` as stored (``{SSHA}...``)."""
    text = _ldif_value("dn", user.dn)
    text += "objectClass: inetOrgPerson\nobjectClass: popframeMailUser\n"
    text += _ldif_value("uid", user.uid) + _ldif_value("cn", user.uid) + "sn: test\n"
    text += _ldif_value("userPassword", user_password)
    for name, value in user.extra:
        text += _ldif_value(name, value)
    return text


def seed_ldif(extra_users: int = 0) -> str:
    parts = [
        f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n",
        f"dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n",
        f"dn: ou=others,{SUFFIX}\nobjectClass: organizationalUnit\nou: others\n",
        f"dn: ou=services,{SUFFIX}\nobjectClass: organizationalUnit\nou: services\n",
        f"dn: ou=ad,{SUFFIX}\nobjectClass: organizationalUnit\nou: ad\n",
        f"dn: {AD_USERS}\nobjectClass: organizationalRole\ncn: Users\n",
        f"dn: {SERVICE_DN}\nobjectClass: person\nobjectClass: simpleSecurityObject\n"
        f"cn: popframe\nsn: service\nuserPassword: {ssha(SERVICE_PASSWORD)}\n",
    ]
    parts += [user_ldif(user, ssha(user.password)) for user in USERS + numbered_users(extra_users)]
    for sam, upn, password, control in AD_ACCOUNTS:
        parts.append(
            f"dn: cn={sam},{AD_USERS}\nobjectClass: user\ncn: {sam}\nsn: test\n"
            f"sAMAccountName: {sam}\nuserPrincipalName: {upn}\n"
            f"userAccountControl: {control}\nmail: {upn}\n"
            + _ldif_value("userPassword", ssha(password)))
    return "\n".join(parts)



def _missing(reason: str) -> None:
    """Skip locally; fail in CI (tests/run.sh installs what is missing)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"the LDAP tests must run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass
class Slapd:
    """One slapd of the tests' own; see the module docstring."""

    root: Path
    port: int = field(default_factory=free_port)
    tls_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    extra_users: int = 0
    #: More entries for the seed (LDIF), and modules to load (``pw-sha2``
    #: for ``{SSHA512}`` passwords): the benchmark's corpus users.
    extra_ldif: str = ""
    modules: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.tls_port}"

    @property
    def ca_file(self) -> Path:
        return self.root / "cert.pem"

    @property
    def config(self) -> Path:
        return self.root / "slapd.conf"

    def prepare(self) -> None:
        make_self_signed(self.root / "cert.pem", self.root / "key.pem",
                         hostnames=["localhost"], ip_addresses=["127.0.0.1"])
        (self.root / "test.schema").write_text(TEST_SCHEMA)
        (self.root / "db").mkdir()
        schema = "/etc/ldap/schema"
        self.config.write_text(f"""\
include {schema}/core.schema
include {schema}/cosine.schema
include {schema}/inetorgperson.schema
include {self.root}/test.schema
pidfile {self.root}/slapd.pid
argsfile {self.root}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
{"".join(f"moduleload {module}{chr(10)}" for module in self.modules)}TLSCertificateFile {self.root}/cert.pem
TLSCertificateKeyFile {self.root}/key.pem
database mdb
maxsize 10485760
suffix "{SUFFIX}"
rootdn "{ADMIN_DN}"
rootpw {ADMIN_PASSWORD}
directory {self.root}/db
access to attrs=userPassword by anonymous auth by self write by * none
access to * by users read by * none
""")
        (self.root / "seed.ldif").write_text("\n".join(filter(None, [seed_ldif(self.extra_users),
                                                                     self.extra_ldif])))
        subprocess.run(["slapadd", "-q", "-f", str(self.config), "-l", str(self.root / "seed.ldif")],
                       check=True, capture_output=True)

    def start(self, startup_seconds: float = 15) -> None:
        """Start slapd (again) on the same ports; return once both answer."""
        assert self.process is None
        self.process = _spawn(
            ["slapd", "-d", "0", "-f", str(self.config),
             "-h", f"ldap://127.0.0.1:{self.port}/ ldaps://127.0.0.1:{self.tls_port}/"],
            self.root / "slapd.log")
        _wait_listening(self.process, "127.0.0.1", [self.port, self.tls_port], startup_seconds,
                        self.root / "slapd.log")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            process.send_signal(signal.SIGCONT)  # a paused slapd cannot stop
            _terminate(process)

    def pause(self) -> None:
        """SIGSTOP: connections are accepted by the kernel, never answered.
        Returns once the kernel says the process is stopped."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self._wait_for_state(stopped=True)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self._wait_for_state(stopped=False)

    def _wait_for_state(self, stopped: bool) -> None:
        assert self.process is not None
        stat = Path(f"/proc/{self.process.pid}/stat")
        deadline = time.monotonic() + 10
        while (stat.read_text().rpartition(")")[2].split()[0] in "Tt") != stopped:
            if time.monotonic() > deadline:
                raise RuntimeError(f"slapd did not {'stop' if stopped else 'continue'}")
            time.sleep(0.001)

    def ldapsearch(self, *args: str) -> str:
        """ldapsearch as the admin, for checks from outside popframe."""
        result = subprocess.run(
            ["ldapsearch", "-LLL", "-x", "-H", self.url, "-D", ADMIN_DN, "-w", ADMIN_PASSWORD,
             "-b", SUFFIX, *args], check=True, capture_output=True, text=True, timeout=30)
        return result.stdout


def _serving(server: Any) -> Iterator[Any]:
    """Prepare and start ``server``; stop it when the fixture ends."""
    server.prepare()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _spawn(command: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start a server in the foreground, its output appended to ``log_path``."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)


def _wait_listening(process: subprocess.Popen[bytes], host: str, ports: list[int],
                    seconds: float, log_path: Path) -> None:
    """Return once ``host`` accepts TCP on every port; kill the process and
    raise ``RuntimeError`` with its log if it exits or takes too long."""
    def listening() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited: {log_path.read_text()}")
        for port in ports:
            socket.create_connection((host, port), timeout=1).close()
        return True

    try:
        wait_until(listening, f"{process.args[0]} to listen", seconds, 0.02, retry_on=(OSError,))
    except AssertionError as error:
        _terminate(process)
        raise RuntimeError(f"{error}: {log_path.read_text()}") from None


def _terminate(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def start_slapd(extra_users: int = 0) -> Iterator[Slapd]:
    """The body of a module-scoped fixture: one seeded slapd, stopped at the end."""
    if shutil.which("slapd") is None and not os.path.exists("/usr/sbin/slapd"):
        _missing("slapd is not installed (apt-get install slapd ldap-utils)")
    os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/sbin"
    if shutil.which("slapadd") is None or shutil.which("ldapsearch") is None:
        _missing("slapadd or ldapsearch is missing (apt-get install slapd ldap-utils)")
    with tempfile.TemporaryDirectory(prefix="popframe-slapd-") as root:
        yield from _serving(Slapd(Path(root), extra_users=extra_users))


# -- a Samba Active Directory domain controller -------------------------------------------

#: The Samba AD DC's address: its LDAP ports are always 389 and 636, so it
#: gets a loopback address of its own rather than 127.0.0.1.
SAMBA_ADDRESS = "127.0.0.2"
SAMBA_BASE = "DC=example,DC=test"
SAMBA_ADMIN_PASSWORD = "Adm1nPassw0rd!"
#: (sAMAccountName, password, enabled): the service account first.
SAMBA_ACCOUNTS = [("svc", "Svc-pw1!x", True), ("dave", "Dave-pw1!x", True),
                  ("erin", "Erin-pw1!x", False)]


@dataclass
class SambaDC:
    """A throwaway Samba AD DC serving only LDAP on 127.0.0.2 (recipe:
    shared/notes/samba-ad.md), with our own certificate for 127.0.0.2."""

    root: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def smb_conf(self) -> Path:
        return self.root / "etc" / "smb.conf"

    @property
    def ca_file(self) -> Path:
        return self.root / "tls-cert.pem"

    def prepare(self) -> None:
        tool = ["samba-tool"]
        subprocess.run(
            [*tool, "domain", "provision", "-q", "-s", "/dev/null", f"--targetdir={self.root}",
             "--realm=EXAMPLE.TEST", "--domain=EXAMPLE", "--host-name=dc1",
             f"--adminpass={SAMBA_ADMIN_PASSWORD}", "--dns-backend=NONE",
             f"--option=interfaces={SAMBA_ADDRESS}/8", "--option=bind interfaces only=yes",
             "--option=server services=ldap", f"--option=pid directory={self.root}/run",
             f"--option=log file={self.root}/log.%m"],
            check=True, capture_output=True, timeout=120)
        make_self_signed(self.ca_file, self.root / "tls-key.pem", hostnames=["dc1.example.test"],
                         ip_addresses=[SAMBA_ADDRESS])

    def start(self, startup_seconds: float = 30) -> None:
        for port in (389, 636):
            with socket.socket() as probe:
                # (REUSEADDR: only a listener counts, not connections in TIME_WAIT)
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((SAMBA_ADDRESS, port))
                    probe.listen(1)
                except OSError as error:
                    raise RuntimeError(f"{SAMBA_ADDRESS}:{port} is taken ({error}): "
                                       "something listens on all addresses there") from None
        self.process = _spawn(
            ["samba", "-i", "-M", "single", "-s", str(self.smb_conf), "--maximum-runtime=900",
             f"--option=tls certfile={self.ca_file}", f"--option=tls keyfile={self.root}/tls-key.pem",
             "--option=tls cafile="],
            self.root / "samba.log")
        _wait_listening(self.process, SAMBA_ADDRESS, [636], startup_seconds, self.root / "samba.log")
        self._add_accounts()

    def _add_accounts(self) -> None:
        """The accounts, in one ldapmodify over ldaps as Administrator
        (one samba-tool call per user costs a second of Python start-up)."""
        changes = []
        for name, password, enabled in SAMBA_ACCOUNTS:
            quoted = base64.b64encode(f'"{password}"'.encode("utf-16-le")).decode()
            changes.append(
                f"dn: CN={name},CN=Users,{SAMBA_BASE}\nchangetype: add\nobjectClass: user\n"
                f"sAMAccountName: {name}\nuserPrincipalName: {name}@example.test\n"
                f"mail: {name}@example.test\nunicodePwd:: {quoted}\n"
                f"userAccountControl: {512 if enabled else 514}\n")
        subprocess.run(
            ["ldapmodify", "-x", "-H", f"ldaps://{SAMBA_ADDRESS}", "-D", "Administrator@example.test",
             "-w", SAMBA_ADMIN_PASSWORD], input="\n".join(changes), text=True, check=True,
            capture_output=True, timeout=60, env={**os.environ, "LDAPTLS_CACERT": str(self.ca_file)})

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            _terminate(process)


def start_samba_dc() -> Iterator[SambaDC]:
    """The body of a module-scoped fixture: a provisioned, running DC."""
    os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/sbin"
    if shutil.which("samba") is None or shutil.which("samba-tool") is None:
        _missing("Samba is not installed (apt-get install samba-ad-dc samba-ad-provision)")
    if os.geteuid() != 0:
        _missing("a Samba AD DC must run as root (its ports are 389 and 636)")
    with tempfile.TemporaryDirectory(prefix="popframe-samba-") as root:
        yield from _serving(SambaDC(Path(root)))


#: The name the LDAP test modules import.
Clock = ManualClock


class Unresponsive:
    """A listening socket that never accepts: TCP connects (the kernel's
    backlog), no byte is ever answered.  A hung directory."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(64)
        self.port = self.socket.getsockname()[1]

    def close(self) -> None:
        self.socket.close()


# -- the reactor -----------------------------------------------------------------------------


class ReactorRunner:
    """Calls into the checker, running the global reactor only while a
    test waits for the answer (:func:`popframe.testing.wait_for`), so the
    other test modules find it stopped."""

    def __init__(self) -> None:
        from twisted.internet import reactor

        self.reactor: Any = reactor

    def call(self, function: Callable[..., Any], *args: Any, timeout: float = 30, **kwargs: Any) -> Any:
        """``function``'s result, or its Deferred's once it fires (at most
        ``timeout`` seconds); raises its exception."""
        from twisted.internet.defer import maybeDeferred

        from popframe.testing import wait_for

        return wait_for(maybeDeferred(function, *args, **kwargs), timeout)


def reactor_runner() -> ReactorRunner:
    return ReactorRunner()
