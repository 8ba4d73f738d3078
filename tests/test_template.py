"""Path templates: Dovecot's variables, and user names that must never
reach outside the store root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from popframe.config import ConfigurationError
from popframe.errors import PermanentFailure
from popframe.stores.template import PathTemplate, UnsafeUserName, real_path

pytestmark = pytest.mark.core


@pytest.mark.parametrize(
    ("template", "user", "expected"),
    [
        ("/var/mail/%u/Maildir", "alice", "/var/mail/alice/Maildir"),
        ("/var/mail/%u/Maildir", "bob@example.org", "/var/mail/bob@example.org/Maildir"),
        ("/var/vmail/%d/%n/Maildir", "bob@example.org", "/var/vmail/example.org/bob/Maildir"),
        ("/var/vmail/%d/%n", "a@b@c", "/var/vmail/b@c/a"),  # split at the first @, as Dovecot
        ("/var/mail/%n-%d", "alice", "/var/mail/alice-"),  # %d is empty without a domain
        ("/var/mail/100%%/%u", "alice", "/var/mail/100%/alice"),
        ("/var/mail/%Lu", "Alice@Example.ORG", "/var/mail/alice@example.org"),
        ("/var/mail/%Ld/%Ln", "Bob@Example.ORG", "/var/mail/example.org/bob"),
    ],
)
def test_expand(template: str, user: str, expected: str) -> None:
    assert PathTemplate(template).expand(user) == expected


def test_prefix_is_the_fixed_directory() -> None:
    assert PathTemplate("/var/mail/%u/Maildir").prefix == "/var/mail"
    assert PathTemplate("/var/mail/u-%u").prefix == "/var/mail"
    assert PathTemplate("/%u").prefix == "/"


@pytest.mark.parametrize("user", ["%u", "%2e%2e", "%%", "%n@%d", "100%"])
def test_percent_in_a_user_name_is_literal(user: str) -> None:
    """One-pass substitution: a name is never itself expanded."""
    template = PathTemplate("/var/mail/%u/Maildir")
    assert template.expand(user) == f"/var/mail/{user}/Maildir"


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("", "empty"),
        ("var/mail/%u", "absolute"),
        ("/var/mail/%x/Maildir", "'%x'"),
        ("/var/mail/%u/%", "'%'"),
        ("/var/mail/%U", "'%U'"),
        ("/var/mail/%d", "needs %u or %n"),
        ("/var/mail/shared", "needs %u or %n"),
    ],
)
def test_bad_templates_are_configuration_errors(template: str, problem: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        PathTemplate(template)
    assert info.value.key == "--store"
    assert problem in info.value.problem


@pytest.mark.parametrize(
    "user",
    [
        "",
        "..",
        ".",
        "../x",
        "../../etc",
        "a/b",
        "/etc",
        "a\\b",
        "..\\x",
        "x\x00y",
        "x\ny",
        "x\ry",
        "x\ty",
        "\x1b[31m",
        "x\x7f",
        "x\x85",  # C1 NEL
        "x\udcff",  # an undecodable byte smuggled through surrogateescape
        ".hidden",
        "a" * 256,
    ],
)
def test_unsafe_user_names_are_refused(user: str) -> None:
    with pytest.raises(UnsafeUserName) as info:
        PathTemplate("/var/mail/%u/Maildir").expand(user)
    error = info.value
    assert isinstance(error, PermanentFailure)
    assert error.code == "SYS/PERM"
    assert user not in str(error) or not user  # the client learns nothing
    assert error.reason


@pytest.mark.parametrize(
    "user", ["..@example.org", "alice@..", "alice@.", "@example.org", "alice@", "alice@.evil"]
)
def test_parts_are_checked_as_components(user: str) -> None:
    """``%n`` and ``%d`` alone must not become ``..``, ``.`` or nothing."""
    with pytest.raises(UnsafeUserName):
        PathTemplate("/var/vmail/%d/%n/Maildir").expand(user)


def test_parts_inside_a_component_may_be_dots() -> None:
    """``u-..`` is an ordinary name; only whole components are special."""
    assert PathTemplate("/var/mail/u-%u").expand("..") == "/var/mail/u-.."


def test_long_names_fit_the_component_limit() -> None:
    assert PathTemplate("/m/%u").expand("a" * 255) == "/m/" + "a" * 255
    with pytest.raises(UnsafeUserName):
        PathTemplate("/m/x%u").expand("a" * 255)
    with pytest.raises(UnsafeUserName):
        PathTemplate("/m/%u").expand("é" * 128)  # 256 bytes in UTF-8


@given(st.text(max_size=40))
def test_no_name_escapes_the_prefix(user: str) -> None:
    """Whatever the name, the path is refused or stays below the prefix
    with the template's shape (without the domain's component for a name
    without a domain)."""
    template = PathTemplate("/srv/mail/%d/%n/Maildir")
    try:
        path = template.expand(user)
    except UnsafeUserName:
        return
    normal = os.path.normpath(path)
    assert normal == path
    assert normal.startswith("/srv/mail/")
    assert normal.endswith("/Maildir")
    shape = "/srv/mail/d/n/Maildir" if "@" in user else "/srv/mail/n/Maildir"
    assert len(Path(normal).parts) == len(Path(shape).parts)


def test_resolve_follows_symlinks_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "mail"
    (root / "real-alice").mkdir(parents=True)
    (root / "alice").symlink_to(root / "real-alice")
    template = PathTemplate(f"{root}/%u/Maildir")
    assert template.resolve("alice") == f"{root}/alice/Maildir"


def test_resolve_refuses_a_symlink_out_of_the_root(tmp_path: Path) -> None:
    root = tmp_path / "mail"
    root.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (root / "mallory").symlink_to(tmp_path / "elsewhere")
    template = PathTemplate(f"{root}/%u/Maildir")
    with pytest.raises(UnsafeUserName):
        template.resolve("mallory")


def test_resolve_allows_a_symlinked_root(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "mail").symlink_to(tmp_path / "real")
    template = PathTemplate(f"{tmp_path}/mail/%u/Maildir")
    assert template.resolve("alice") == f"{tmp_path}/mail/alice/Maildir"


def test_a_root_moved_behind_its_symlink_is_found_again(tmp_path: Path) -> None:
    for name in ("old", "new"):
        (tmp_path / name / "alice" / "Maildir").mkdir(parents=True)
    (tmp_path / "mail").symlink_to(tmp_path / "old")
    template = PathTemplate(f"{tmp_path}/mail/%u/Maildir")
    assert template.resolve("alice") == f"{tmp_path}/mail/alice/Maildir"
    (tmp_path / "mail").unlink()
    (tmp_path / "mail").symlink_to(tmp_path / "new")
    assert template.resolve("alice") == f"{tmp_path}/mail/alice/Maildir"
    (tmp_path / "new" / "bob").symlink_to(tmp_path / "old" / "alice")  # out of the root now
    with pytest.raises(UnsafeUserName):
        template.resolve("bob")


def test_real_path_is_what_realpath_says(tmp_path: Path) -> None:
    (tmp_path / "dir" / "sub").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "dir")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    for path in ("dir", "dir/sub", "link", "link/sub", "link/../dir/sub", "dangling",
                 "nowhere/at/all", "file", "link/sub/.."):
        assert real_path(f"{tmp_path}/{path}") == os.path.realpath(f"{tmp_path}/{path}"), path


def test_a_domain_component_disappears_for_users_without_a_domain() -> None:
    """The README's production template serves ``alice`` too (as Dovecot's
    ``//`` does), and never as someone else: ``alice@`` stays refused."""
    template = PathTemplate("/var/mail/%d/%n/Maildir")
    assert template.expand("alice") == "/var/mail/alice/Maildir"
    assert template.expand("bob@example.org") == "/var/mail/example.org/bob/Maildir"
    assert PathTemplate("/var/mail/%Ld/%u").expand("carol") == "/var/mail/carol"
    with pytest.raises(UnsafeUserName):
        template.expand("alice@")
    # A component with more than the domain keeps it, empty.
    assert PathTemplate("/var/mail/d-%d/%n").expand("alice") == "/var/mail/d-/alice"


def test_expanded_paths_are_remembered_and_refusals_are_not() -> None:
    from popframe.stores import template as module

    t = PathTemplate("/var/mail/%d/%n/Maildir")
    assert t.expand("alice@example.org") == "/var/mail/example.org/alice/Maildir"
    assert t.expand("alice@example.org") == "/var/mail/example.org/alice/Maildir"
    for _ in range(2):
        with pytest.raises(UnsafeUserName):
            t.expand("../alice@example.org")
    assert "../alice@example.org" not in t._expanded
    for i in range(module._EXPANDED_MAX + 1):  # bounded: emptied when full
        t.expand(f"u{i}@example.org")
    assert len(t._expanded) <= module._EXPANDED_MAX
    assert t.expand("u0@example.org") == "/var/mail/example.org/u0/Maildir"
