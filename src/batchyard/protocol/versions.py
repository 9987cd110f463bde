"""The ``anthropic-version`` values this server speaks."""

from __future__ import annotations

from .errors import invalid_request

V2023_06_01 = "2023-06-01"
V2026_10_21 = "2026-10-21"
SUPPORTED_VERSIONS = (V2023_06_01, V2026_10_21)


def check_version(value: str | None) -> str:
    """Return the version a request asked for, or raise the API's 400."""
    if value is None or value == "":
        raise invalid_request("anthropic-version: header is required")
    value = value.strip()
    if value not in SUPPORTED_VERSIONS:
        shown = value if len(value) <= 64 else value[:64] + "..."
        raise invalid_request(
            f"anthropic-version: {shown!r} is not a supported version. "
            f"Supported versions: {', '.join(SUPPORTED_VERSIONS)}"
        )
    return value

