"""RFC 6856 LANG: the reply texts in one catalogue, listed and switched
per session, response codes and parsed numbers unchanged."""

from __future__ import annotations

import ast
import string
from pathlib import Path

import pytest
from test_server import LOGIN, connect
from test_session import MESSAGES, logged_in, replies
from twisted.internet.task import Clock

import popframe
from popframe.errors import AuthenticationFailed
from popframe.protocol import Session, SessionConfig
from popframe.protocol.catalogue import (
    DEFAULT_LANGUAGE,
    LANGUAGES,
    TEMPLATES,
    match_language,
    translate,
)
from popframe.testing import BufferedTransport

pytestmark = pytest.mark.core

ROOT = Path(popframe.__file__).parent


def fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


# -- the catalogue ------------------------------------------------------------------


def test_every_language_has_every_template_with_the_same_placeholders() -> None:
    assert len(set(TEMPLATES)) == len(TEMPLATES)
    assert DEFAULT_LANGUAGE in LANGUAGES and "en" in LANGUAGES
    translated = [language for language in LANGUAGES.values() if language.texts]
    assert {language.tag for language in translated} >= {"de", "fr"}
    for language in translated:
        assert set(language.texts) == set(TEMPLATES), language.tag
        for template, text in language.texts.items():
            assert fields(text) == fields(template), (language.tag, template)
            assert "\r" not in text and "\n" not in text
            # A number first stays first ("+OK 120 octets": clients parse it).
            if template.startswith("{"):
                first = template[: template.index("}") + 1]
                assert text.startswith(first), (language.tag, text)


def test_language_ranges_match_by_lookup() -> None:
    assert match_language("de") == "de"
    assert match_language("DE") == "de"
    assert match_language("de-CH") == "de"
    assert match_language("fr-x-y") == "fr"
    assert match_language("*") == DEFAULT_LANGUAGE
    assert match_language("I-DEFAULT") == DEFAULT_LANGUAGE
    assert match_language("uga") is None
    assert match_language("de_DE") is None
    assert match_language("toolonglanguage") is None


def test_a_text_the_catalogue_lacks_stays_english() -> None:
    assert translate("a plugin's own text", "de") == "a plugin's own text"
    assert translate("{size} octets", "de", size=3) == "3 Oktette"


# -- no reply text bypasses the catalogue ---------------------------------------------

#: The modules that build reply texts: the core, the errors, the adapter.
REPLY_MODULES = [
    "protocol/session.py", "protocol/replies.py", "protocol/commands.py",
    "protocol/normalize.py", "errors.py", "server/protocol.py", "server/login.py",
    "throttle.py",
]


def error_classes(trees: list[ast.Module]) -> tuple[set[str], set[str]]:
    """POP3Error and every class derived from it in ``trees`` whose first
    argument is still the client's text (not those with an ``__init__`` of
    their own, whose arguments are for the log: ``reason``): (all, those)."""
    names = {"POP3Error"}
    own_init = set()
    while True:
        classes = [
            node for tree in trees for node in ast.walk(tree)
            if isinstance(node, ast.ClassDef)
            and any(isinstance(base, ast.Name) and base.id in names for base in node.bases)
        ]
        own_init |= {
            node.name for node in classes
            if any(isinstance(s, ast.FunctionDef) and s.name == "__init__" for s in node.body)
        }
        found = {node.name for node in classes}
        if found <= names:
            return names, names - own_init
        names |= found


def all_trees() -> list[ast.Module]:
    return [ast.parse(path.read_text()) for path in sorted(ROOT.rglob("*.py"))]


def test_no_reply_text_is_a_bare_literal() -> None:
    """Every Reply's text comes from the catalogue (a ``_text``/``translate``
    call, or a variable holding one), never a literal or an f-string."""
    offenders = []
    for name in REPLY_MODULES:
        tree = ast.parse((ROOT / name).read_text())
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "Reply"):
                continue
            if any(k.arg == "continuation" for k in node.keywords):
                continue  # SASL data (base64), not words
            texts = node.args[1:2] + [k.value for k in node.keywords if k.arg == "text"]
            for text in texts:
                if isinstance(text, (ast.Constant, ast.JoinedStr, ast.BinOp)):
                    offenders.append(f"{name}:{node.lineno}")
    assert offenders == []


def test_every_error_text_and_template_is_in_the_catalogue() -> None:
    """The literal of every ``_text``/``translate`` call, every error raised
    with a text, and every ``default_message`` of a POP3Error in popframe."""
    trees = all_trees()
    errors, with_text = error_classes(trees)
    missing = []
    for tree in trees:
        for node in ast.walk(tree):
            literal = None
            if isinstance(node, ast.Call) and node.args:
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if called in with_text | {"_text", "translate"}:
                    literal = node.args[0]
            elif isinstance(node, ast.ClassDef) and node.name in errors:
                for statement in node.body:
                    if (isinstance(statement, ast.Assign)
                            and any(getattr(t, "id", "") == "default_message"
                                    for t in statement.targets)):
                        literal = statement.value
            if isinstance(literal, ast.Constant) and isinstance(literal.value, str):
                if literal.value not in TEMPLATES:
                    missing.append(literal.value)
            elif isinstance(literal, ast.JoinedStr):
                missing.append(ast.unparse(literal))
    assert missing == []


# -- LANG in a session ------------------------------------------------------------------


def test_capa_advertises_lang_in_both_states() -> None:
    [capa] = replies(Session(), b"CAPA\r\n")
    assert b"\r\nLANG\r\n" in capa
    [capa] = replies(logged_in(), b"CAPA\r\n")
    assert b"\r\nLANG\r\n" in capa


def test_lang_lists_the_languages() -> None:
    assert replies(Session(), b"LANG\r\n") == [
        b"+OK language listing follows\r\n"
        b"en English\r\nde Deutsch\r\nfr Fran\xc3\xa7ais\r\ni-default Default language\r\n"
        b".\r\n"
    ]


def test_lang_switches_every_reply_but_codes_and_numbers() -> None:
    session = Session()
    assert replies(session, b"LANG de\r\n") == [b"+OK de Sprache gewechselt\r\n"]
    assert session.language == "de"
    assert replies(session, b"FOO\r\n") == [b"-ERR unbekannter Befehl\r\n"]
    assert replies(session, b"USER alice\r\n") == [b"+OK Bitte Passwort senden\r\n"]
    replies(session, b"PASS wrong\r\n")
    assert session.request_failed(AuthenticationFailed()).encode() == (
        b"-ERR [AUTH] Anmeldung fehlgeschlagen\r\n"
    )
    replies(session, b"USER alice\r\nPASS secret\r\n")
    assert session.logged_in(MESSAGES).encode() == (
        "+OK Postfach enthält 3 Nachrichten (325 Oktette)\r\n".encode()
    )
    assert replies(session, b"STAT\r\nLIST 1\r\nUIDL 1\r\n") == [
        b"+OK 3 325\r\n", b"+OK 1 120\r\n", b"+OK 1 uid-a\r\n",
    ]
    [retrieve] = replies(session, b"RETR 1\r\n")
    assert session.message_follows().encode() == b"+OK 120 Oktette\r\n"
    session.request_done()
    assert replies(session, b"LANG fr-CA\r\n") == [
        "+OK fr langue changée\r\n".encode()
    ]
    assert replies(session, b"DELE 9\r\n") == [b"-ERR message inexistant\r\n"]


def test_an_unknown_language_changes_nothing() -> None:
    session = Session()
    replies(session, b"LANG de\r\n")
    assert replies(session, b"LANG uga\r\n") == [b"-ERR unbekannte Sprache uga\r\n"]
    assert session.language == "de"
    assert replies(session, b"LANG de fr\r\n") == [
        b"-ERR LANG erwartet genau einen Sprachbereich\r\n"
    ]


def test_lang_star_is_the_servers_default() -> None:
    session = Session()
    replies(session, b"LANG de\r\n")
    assert replies(session, b"LANG *\r\n") == [b"+OK i-default language changed\r\n"]
    assert session.language == DEFAULT_LANGUAGE


@pytest.mark.parametrize("order", [b"UTF8\r\nLANG de\r\n", b"LANG de\r\nUTF8\r\n"])
def test_lang_before_or_after_utf8(order: bytes) -> None:
    """RFC 6856: LANG may come before or after UTF8; neither undoes the other."""
    session = Session()
    out = replies(session, order)
    assert b"+OK UTF8 aktiviert\r\n" in out or b"+OK UTF8 enabled\r\n" in out
    assert session.language == "de"
    assert replies(session, "USER jörg\r\n".encode()) == [b"+OK Bitte Passwort senden\r\n"]
    assert session.user == "jörg"


def test_too_many_bad_commands_in_the_language() -> None:
    session = Session(SessionConfig())
    replies(session, b"LANG de\r\n")
    out = replies(session, b"FOO\r\n" * 10)
    assert out[-1] == b"-ERR unbekannter Befehl; zu viele fehlerhafte Befehle\r\n"


@pytest.mark.adapter
def test_the_adapters_own_replies_speak_the_language() -> None:
    clock = Clock()
    transport = BufferedTransport(limit=1 << 20)
    protocol = connect(transport, clock=clock, idle_timeout=600)
    protocol.dataReceived(b"LANG de\r\n" + LOGIN)
    clock.advance(600)
    assert transport.value().endswith(
        "-ERR Verbindung wegen Inaktivität getrennt\r\n".encode()
    )


@pytest.mark.process
def test_a_real_server_speaks_french_to_poplib(pop3_server, mail_home) -> None:
    """Over a socket with Python's poplib: the listing, a switch, a
    translated -ERR with its code, and numbers that still parse."""
    import poplib

    client = poplib.POP3("127.0.0.1", pop3_server.port, timeout=10)
    try:
        assert "LANG" in client.capa()
        response, lines, _ = client._longcmd("LANG")
        assert response == b"+OK language listing follows"
        assert "fr Français".encode() in lines
        assert client._shortcmd("LANG fr") == "+OK fr langue changée".encode()
        client.user("alice")
        with pytest.raises(poplib.error_proto) as failed:
            client.pass_("wrong")
        assert failed.value.args[0] == "-ERR [AUTH] échec de l'authentification".encode()
        client.user("alice")
        assert client.pass_("alice password").startswith(b"+OK la bo\xc3\xaete contient 0")
        assert client.stat() == (0, 0)
        assert "USER" in client.capa() and "UTF8" in client.capa()  # both states (RFC 2449)
    finally:
        client.quit()
