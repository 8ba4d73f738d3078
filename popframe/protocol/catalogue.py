"""Every human-readable reply text, in every language popframe speaks
(RFC 6856 ``LANG``).

A text is known by its English template (gettext's convention: the
English is the key, so an error raised with an unknown text still reads
well); each language maps every template to its own, with the same
``{placeholders}``.  Only the text after ``+OK``/``-ERR`` and the response
code is translated: codes, numbers that clients parse (``+OK 120 octets``
keeps the number first) and SASL data never are.  ``tests/test_lang.py``
checks that every language has every template, and that the core builds
no reply text that is not a template here.

RFC 6856 section 3: the server speaks ``i-default`` (English here) until
the client asks for another language; ``*`` asks for the server's own
choice, which is ``i-default``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "DEFAULT_LANGUAGE",
    "LANGUAGES",
    "TEMPLATES",
    "Language",
    "match_language",
    "translate",
]

DEFAULT_LANGUAGE = "i-default"

#: Every template, in English.  The order groups them by where they are used.
TEMPLATES: tuple[str, ...] = (
    # popframe/protocol/session.py
    "{implementation} ready",
    "{message}; too many bad commands",
    "maildrop has {count} messages ({octets} octets)",
    "top of message follows",
    "{size} octets",
    "{implementation} signing off ({left} messages left)",
    "{implementation} signing off",
    "capability list follows",
    "send your password",
    "USER/PASS is not enabled, use AUTH",
    "send USER first",
    "UTF8 enabled",
    "SASL mechanisms follow",
    "unsupported SASL mechanism",
    "APOP is not enabled",
    "authentication cancelled",
    "TLS is already active",
    "STLS is only allowed before authentication",
    "begin TLS negotiation",
    "{count} messages ({octets} octets)",
    "unique-id listing follows",
    "message {number} deleted",
    "XCLIENT is only for proxies on trusted networks",
    "language listing follows",
    "{tag} language changed",
    "unknown language {range}",
    # popframe/protocol/commands.py
    "invalid base64",
    "invalid number",
    "wrong number of arguments",
    "USER takes one user name",
    "user name is not valid UTF-8",
    "PASS takes a password",
    "invalid mechanism name",
    "APOP digest must be 32 hex digits",
    "XCLIENT takes NAME=VALUE attributes",
    "XCLIENT ADDR is not an IP address",
    "XCLIENT PORT is not a port number",
    "NUL in command line",
    "LANG takes one language range",
    # popframe/protocol/normalize.py
    "user name not allowed (RFC 8265)",
    "password not allowed (RFC 8265)",
    # popframe/errors.py
    "command failed",
    "unknown command",
    "bad arguments",
    "command line too long",
    "command not valid in this state",
    "no such message",
    "message already deleted",
    "plaintext authentication is disabled, use STLS first",
    "STLS not available",
    "authentication failed",
    "maildrop already locked by another session",
    "login delay not yet expired",
    "temporary system failure, try again later",
    "permanent system failure",
    # errors of the adapter and the backends
    "too many failures",
    "too many sessions for this user, try again later",
    "too many connections from your address",
    "too many connections to this server, try again later",
    "disconnected for inactivity",
    "login timed out",
    "message was removed by another client, please reconnect",
    "the mailbox was changed by another program, please reconnect",
    "maildrop lock lost, please reconnect",
    "maildrop not available for this user",
    # popframe/auth/restrictions.py (Dovecot's nologin, allow_nets)
    "login disabled for this account",
    "login not allowed from this address",
)

_GERMAN: dict[str, str] = {
    "{implementation} ready": "{implementation} bereit",
    "{message}; too many bad commands": "{message}; zu viele fehlerhafte Befehle",
    "maildrop has {count} messages ({octets} octets)":
        "Postfach enthält {count} Nachrichten ({octets} Oktette)",
    "top of message follows": "Anfang der Nachricht folgt",
    "{size} octets": "{size} Oktette",
    "{implementation} signing off ({left} messages left)":
        "{implementation} meldet sich ab ({left} Nachrichten verbleiben)",
    "{implementation} signing off": "{implementation} meldet sich ab",
    "capability list follows": "Liste der Fähigkeiten folgt",
    "send your password": "Bitte Passwort senden",
    "USER/PASS is not enabled, use AUTH": "USER/PASS ist nicht aktiviert, bitte AUTH verwenden",
    "send USER first": "Bitte zuerst USER senden",
    "UTF8 enabled": "UTF8 aktiviert",
    "SASL mechanisms follow": "SASL-Mechanismen folgen",
    "unsupported SASL mechanism": "SASL-Mechanismus wird nicht unterstützt",
    "APOP is not enabled": "APOP ist nicht aktiviert",
    "authentication cancelled": "Anmeldung abgebrochen",
    "TLS is already active": "TLS ist bereits aktiv",
    "STLS is only allowed before authentication": "STLS ist nur vor der Anmeldung erlaubt",
    "begin TLS negotiation": "TLS-Aushandlung beginnt",
    "{count} messages ({octets} octets)": "{count} Nachrichten ({octets} Oktette)",
    "unique-id listing follows": "Liste der eindeutigen Kennungen folgt",
    "message {number} deleted": "Nachricht {number} gelöscht",
    "XCLIENT is only for proxies on trusted networks":
        "XCLIENT ist nur für Proxys in vertrauenswürdigen Netzen",
    "language listing follows": "Liste der Sprachen folgt",
    "{tag} language changed": "{tag} Sprache gewechselt",
    "unknown language {range}": "unbekannte Sprache {range}",
    "invalid base64": "ungültiges Base64",
    "invalid number": "ungültige Zahl",
    "wrong number of arguments": "falsche Anzahl von Argumenten",
    "USER takes one user name": "USER erwartet genau einen Benutzernamen",
    "user name is not valid UTF-8": "Benutzername ist kein gültiges UTF-8",
    "PASS takes a password": "PASS erwartet ein Passwort",
    "invalid mechanism name": "ungültiger Mechanismusname",
    "APOP digest must be 32 hex digits": "APOP-Prüfsumme muss aus 32 Hexziffern bestehen",
    "XCLIENT takes NAME=VALUE attributes": "XCLIENT erwartet Attribute der Form NAME=WERT",
    "XCLIENT ADDR is not an IP address": "XCLIENT ADDR ist keine IP-Adresse",
    "XCLIENT PORT is not a port number": "XCLIENT PORT ist keine Portnummer",
    "NUL in command line": "NUL-Zeichen in der Befehlszeile",
    "LANG takes one language range": "LANG erwartet genau einen Sprachbereich",
    "user name not allowed (RFC 8265)": "Benutzername nicht zulässig (RFC 8265)",
    "password not allowed (RFC 8265)": "Passwort nicht zulässig (RFC 8265)",
    "command failed": "Befehl fehlgeschlagen",
    "unknown command": "unbekannter Befehl",
    "bad arguments": "fehlerhafte Argumente",
    "command line too long": "Befehlszeile zu lang",
    "command not valid in this state": "Befehl in diesem Zustand nicht zulässig",
    "no such message": "keine solche Nachricht",
    "message already deleted": "Nachricht bereits gelöscht",
    "plaintext authentication is disabled, use STLS first":
        "Klartext-Anmeldung ist deaktiviert, bitte zuerst STLS verwenden",
    "STLS not available": "STLS nicht verfügbar",
    "authentication failed": "Anmeldung fehlgeschlagen",
    "maildrop already locked by another session":
        "Postfach ist bereits von einer anderen Sitzung gesperrt",
    "login delay not yet expired": "Wartezeit bis zur nächsten Anmeldung noch nicht abgelaufen",
    "temporary system failure, try again later":
        "vorübergehender Systemfehler, bitte später erneut versuchen",
    "permanent system failure": "dauerhafter Systemfehler",
    "too many failures": "zu viele Fehlversuche",
    "too many sessions for this user, try again later":
        "zu viele Sitzungen dieses Benutzers, bitte später erneut versuchen",
    "too many connections from your address": "zu viele Verbindungen von Ihrer Adresse",
    "too many connections to this server, try again later":
        "zu viele Verbindungen zu diesem Server, bitte später erneut versuchen",
    "disconnected for inactivity": "Verbindung wegen Inaktivität getrennt",
    "login timed out": "Zeit für die Anmeldung abgelaufen",
    "message was removed by another client, please reconnect":
        "Nachricht wurde von einem anderen Programm entfernt, bitte neu verbinden",
    "the mailbox was changed by another program, please reconnect":
        "das Postfach wurde von einem anderen Programm geändert, bitte neu verbinden",
    "maildrop lock lost, please reconnect": "Sperre des Postfachs verloren, bitte neu verbinden",
    "maildrop not available for this user": "Postfach für diesen Benutzer nicht verfügbar",
    "login disabled for this account": "Anmeldung für dieses Konto gesperrt",
    "login not allowed from this address": "Anmeldung von dieser Adresse nicht erlaubt",
}

_FRENCH: dict[str, str] = {
    "{implementation} ready": "{implementation} prêt",
    "{message}; too many bad commands": "{message} ; trop de commandes erronées",
    "maildrop has {count} messages ({octets} octets)":
        "la boîte contient {count} messages ({octets} octets)",
    "top of message follows": "début du message",
    "{size} octets": "{size} octets",
    "{implementation} signing off ({left} messages left)":
        "{implementation} se déconnecte ({left} messages restants)",
    "{implementation} signing off": "{implementation} se déconnecte",
    "capability list follows": "liste des capacités",
    "send your password": "envoyez votre mot de passe",
    "USER/PASS is not enabled, use AUTH": "USER/PASS n'est pas activé, utilisez AUTH",
    "send USER first": "envoyez d'abord USER",
    "UTF8 enabled": "UTF8 activé",
    "SASL mechanisms follow": "mécanismes SASL",
    "unsupported SASL mechanism": "mécanisme SASL non pris en charge",
    "APOP is not enabled": "APOP n'est pas activé",
    "authentication cancelled": "authentification annulée",
    "TLS is already active": "TLS est déjà actif",
    "STLS is only allowed before authentication":
        "STLS n'est permis qu'avant l'authentification",
    "begin TLS negotiation": "début de la négociation TLS",
    "{count} messages ({octets} octets)": "{count} messages ({octets} octets)",
    "unique-id listing follows": "liste des identifiants uniques",
    "message {number} deleted": "message {number} supprimé",
    "XCLIENT is only for proxies on trusted networks":
        "XCLIENT est réservé aux mandataires des réseaux de confiance",
    "language listing follows": "liste des langues",
    "{tag} language changed": "{tag} langue changée",
    "unknown language {range}": "langue inconnue {range}",
    "invalid base64": "base64 invalide",
    "invalid number": "nombre invalide",
    "wrong number of arguments": "nombre d'arguments incorrect",
    "USER takes one user name": "USER attend un seul nom d'utilisateur",
    "user name is not valid UTF-8": "le nom d'utilisateur n'est pas de l'UTF-8 valide",
    "PASS takes a password": "PASS attend un mot de passe",
    "invalid mechanism name": "nom de mécanisme invalide",
    "APOP digest must be 32 hex digits": "l'empreinte APOP doit compter 32 chiffres hexadécimaux",
    "XCLIENT takes NAME=VALUE attributes": "XCLIENT attend des attributs NOM=VALEUR",
    "XCLIENT ADDR is not an IP address": "XCLIENT ADDR n'est pas une adresse IP",
    "XCLIENT PORT is not a port number": "XCLIENT PORT n'est pas un numéro de port",
    "NUL in command line": "caractère NUL dans la ligne de commande",
    "LANG takes one language range": "LANG attend une seule plage de langues",
    "user name not allowed (RFC 8265)": "nom d'utilisateur non autorisé (RFC 8265)",
    "password not allowed (RFC 8265)": "mot de passe non autorisé (RFC 8265)",
    "command failed": "échec de la commande",
    "unknown command": "commande inconnue",
    "bad arguments": "arguments incorrects",
    "command line too long": "ligne de commande trop longue",
    "command not valid in this state": "commande invalide dans cet état",
    "no such message": "message inexistant",
    "message already deleted": "message déjà supprimé",
    "plaintext authentication is disabled, use STLS first":
        "l'authentification en clair est désactivée, utilisez d'abord STLS",
    "STLS not available": "STLS indisponible",
    "authentication failed": "échec de l'authentification",
    "maildrop already locked by another session":
        "boîte aux lettres déjà verrouillée par une autre session",
    "login delay not yet expired": "le délai entre deux connexions n'est pas écoulé",
    "temporary system failure, try again later":
        "panne temporaire du système, réessayez plus tard",
    "permanent system failure": "panne permanente du système",
    "too many failures": "trop d'échecs",
    "too many sessions for this user, try again later":
        "trop de sessions pour cet utilisateur, réessayez plus tard",
    "too many connections from your address": "trop de connexions depuis votre adresse",
    "too many connections to this server, try again later":
        "trop de connexions à ce serveur, réessayez plus tard",
    "disconnected for inactivity": "déconnecté pour inactivité",
    "login timed out": "délai de connexion dépassé",
    "message was removed by another client, please reconnect":
        "le message a été supprimé par un autre client, reconnectez-vous",
    "the mailbox was changed by another program, please reconnect":
        "la boîte aux lettres a été modifiée par un autre programme, reconnectez-vous",
    "maildrop lock lost, please reconnect": "verrou de la boîte perdu, reconnectez-vous",
    "maildrop not available for this user":
        "boîte aux lettres indisponible pour cet utilisateur",
    "login disabled for this account": "connexion désactivée pour ce compte",
    "login not allowed from this address": "connexion non autorisée depuis cette adresse",
}


@dataclass(frozen=True, slots=True)
class Language:
    """One language of the replies: its RFC 5646 tag, its name in itself
    (the ``LANG`` listing), and its text for every template (empty:
    the English templates as they are)."""

    tag: str
    description: str
    texts: Mapping[str, str]


#: The languages, in the order ``LANG`` lists them.
LANGUAGES: dict[str, Language] = {
    language.tag.lower(): language
    for language in (
        Language("en", "English", {}),
        Language("de", "Deutsch", _GERMAN),
        Language("fr", "Français", _FRENCH),
        Language(DEFAULT_LANGUAGE, "Default language", {}),
    )
}

_RANGE = re.compile(r"\*|[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*\Z")


def match_language(language_range: str) -> str | None:
    """The tag of the language a basic language range (RFC 4647 section
    2.1) asks for, by lookup (section 3.4: ``de-CH`` falls back to ``de``),
    case-insensitively; ``*`` is the server's choice (``i-default``).
    None: no language of ours matches."""
    if not _RANGE.match(language_range):
        return None
    if language_range == "*":
        return DEFAULT_LANGUAGE
    wanted = language_range.lower()
    while True:
        language = LANGUAGES.get(wanted)
        if language is not None:
            return language.tag
        wanted, hyphen, _ = wanted.rpartition("-")
        if not hyphen:
            return None
        if wanted[-2:-1] == "-":  # RFC 4647: drop a single-letter subtag too
            wanted = wanted[:-2]


def translate(template: str, language: str = DEFAULT_LANGUAGE, /, **params: object) -> str:
    """``template`` in ``language`` (a tag from :data:`LANGUAGES`), filled
    in.  A template the catalogue lacks (a plugin's own error text) stays
    as it is."""
    if language != DEFAULT_LANGUAGE:
        found = LANGUAGES.get(language)
        if found is not None:
            template = found.texts.get(template, template)
    return template.format(**params) if params else template
