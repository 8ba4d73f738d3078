"""``pip install .`` and ``pip install -e .`` both make twistd find the
plugins (setuptools' default editable mode hides twisted/plugins; setup.cfg
asks for compat mode).  Each install goes into a fresh virtualenv without
the system's site-packages, so nothing installed elsewhere can make the test
pass by accident."""

from __future__ import annotations

import shutil
import subprocess
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.process

ROOT = Path(__file__).resolve().parent.parent

CHECK = """
from twisted.cred.strcred import ICheckerFactory
from twisted.plugin import getPlugins
from popframe.interfaces import IMaildropStoreFactory
import popframe
import pathlib
print("popframe at", popframe.__file__)
print("typed", (pathlib.Path(popframe.__file__).parent / "py.typed").exists())
print("checkers", sorted(f.authType for f in getPlugins(ICheckerFactory)))
print("stores", sorted(f.storeName for f in getPlugins(IMaildropStoreFactory)))
"""


def project_copy(destination: Path) -> Path:
    """The tracked files only, as a clean clone would have them."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


@pytest.mark.parametrize("editable", [False, True], ids=["regular", "editable"])
def test_install_makes_twistd_find_the_plugins(tmp_path: Path, editable: bool) -> None:
    source = project_copy(tmp_path / "src")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    install = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    install += ["-e", str(source)] if editable else [str(source)]
    result = subprocess.run(install, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr

    help_text = subprocess.run([env_dir / "bin" / "twistd", "--help"],
                               capture_output=True, text=True, timeout=120).stdout
    assert "pop3" in help_text

    found = subprocess.run([python, "-c", CHECK], capture_output=True, text=True,
                           timeout=120, cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    assert "passwd-file" in found.stdout and "maildir" in found.stdout
    assert "typed True" in found.stdout  # PEP 561: backend authors type-check against popframe
    location = str(source) if editable else str(env_dir)
    assert f"popframe at {location}" in found.stdout
