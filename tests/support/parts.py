"""Real parts the tests start on 127.0.0.1 (llama.cpp server, chromium, PostgreSQL ...): a test
that needs one and cannot have it is skipped on a developer's machine and fails under CI
(``CI=true``, or ``SCENEMAKE_REQUIRE_LLAMA=1`` as before), so CI never passes by skipping."""

from __future__ import annotations

import os

import pytest


def required() -> bool:
    """True where a missing real part must fail the test (CI)."""
    return (os.environ.get("CI", "").lower() in ("1", "true", "yes")
            or os.environ.get("SCENEMAKE_REQUIRE_LLAMA") == "1")


def require(available: bool, what: str, how: str) -> None:
    """Skip the calling test when ``what`` is missing (saying ``how`` to get it); fail in CI."""
    if available:
        return
    message = f"{what} is not available ({how})"
    if required():
        pytest.fail(f"{message}, and CI must run every real-part test", pytrace=False)
    pytest.skip(message)
