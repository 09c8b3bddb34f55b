"""Shared pytest configuration for the ksimdsl test suite."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-goldens",
        action="store_true",
        default=False,
        help="rewrite the expected outputs of data-driven golden tests instead of comparing",
    )


@pytest.fixture
def update_goldens(request: pytest.FixtureRequest) -> bool:
    """True when the run should rewrite golden outputs (`pytest --update-goldens`)."""
    return bool(request.config.getoption("--update-goldens"))
