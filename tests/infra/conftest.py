"""Fixtures of the static checks of infra/: every Bicep template, parsed once per session."""

from __future__ import annotations

from typing import Any

import pytest

from tests.infra.bicep_tree import INFRA, bicep_files, parse_bicep


@pytest.fixture(scope="session")
def templates() -> dict[str, dict[str, Any]]:
    """Every parsed template, keyed by its path relative to infra/ ("main.bicep", "app/api.bicep")."""
    return {path.relative_to(INFRA).as_posix(): parse_bicep(path) for path in bicep_files()}
