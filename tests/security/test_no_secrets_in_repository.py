"""No secret is committed: the code reads secrets from the environment, and var/ is ignored."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.conftest import REPO_ROOT

SECRET_PATTERNS = {
    "a private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "an AWS access key": re.compile(r"AKIA[0-9A-Z]{16}"),
    "a GitHub token": re.compile(r"gh[pousr]_[A-Za-z0-9]{36}"),
    "a Slack token": re.compile(r"xox[abpr]-[A-Za-z0-9-]{10,}"),
    "a hard-coded Django SECRET_KEY": re.compile(r"^\s*SECRET_KEY\s*=\s*['\"][^'\"]{20,}['\"]", re.MULTILINE),
    "a password in a database URL": re.compile(r"postgres(?:ql)?://[^:@/\s]+:[^@/\s]{3,}@"),
}


def repository_files() -> list[str]:
    """Tracked files and new ones git would pick up (ignored ones such as var/ are left out)."""
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT,
                                capture_output=True, text=True, check=True, timeout=30).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("Not a git checkout, so there is no repository to scan.")
    return [name for name in listed.splitlines() if (REPO_ROOT / name).is_file()]


def test_no_file_in_the_repository_holds_a_secret():
    found = []
    for name in repository_files():
        try:
            text = (REPO_ROOT / name).read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        found += [f"{name}: {what}" for what, pattern in SECRET_PATTERNS.items() if pattern.search(text)]
    assert found == []


def test_the_development_secret_key_file_is_not_in_the_repository():
    assert not [name for name in repository_files() if name.endswith("secret_key")]
