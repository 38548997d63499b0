"""Fixtures for running the real CLIs: the pinned executables (skipping when they cannot be installed),
a recording server, and an empty working directory outside any git repository."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.clis import harness
from tests.clis.recording_server import RecordingServer


@pytest.fixture
def require_cli() -> Callable[[str], Path]:
    """``require_cli("codex")`` → the executable, installing it on first use; skips with npm's reason."""

    def require(name: str) -> Path:
        path = harness.ensure_cli(name)
        if path is None:
            pytest.skip(harness.install_error(name))
        return path

    return require


@pytest.fixture
def recording_server() -> Iterator[RecordingServer]:
    with RecordingServer() as server:
        yield server


@pytest.fixture
def cli_cwd(tmp_path: Path) -> Path:
    """An empty project folder for a CLI to work in (pytest's tmp_path is outside the repository)."""
    work = tmp_path / "project"
    work.mkdir()
    return work
