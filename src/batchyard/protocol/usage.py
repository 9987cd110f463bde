"""Tokens of one answer, whatever its shape: a Message's ``usage`` (uncached input, cache
creation, cache read, output), or an OpenAI body's (``prompt_tokens`` with its cached part,
``completion_tokens``). Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Tokens:
    uncached_input: int = 0
    cache_creation: int = 0
    cache_read: int = 0
    output: int = 0

    def __add__(self, other: Tokens) -> Tokens:
        return Tokens(
            self.uncached_input + other.uncached_input,
            self.cache_creation + other.cache_creation,
            self.cache_read + other.cache_read,
            self.output + other.output,
        )


MAX_TOKENS = 1 << 40  # more than any answer holds; a backend's absurd count cannot overflow a bucket


def _int(value: Any) -> int:
    return min(value, MAX_TOKENS) if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def tokens_of(body: Any) -> Tokens:
    """The tokens an answer reports (nothing where it reports none)."""
    usage = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(usage, dict):
        return Tokens()
    if "input_tokens" in usage or "output_tokens" in usage:  # a Message
        return Tokens(
            _int(usage.get("input_tokens")),
            _int(usage.get("cache_creation_input_tokens")),
            _int(usage.get("cache_read_input_tokens")),
            _int(usage.get("output_tokens")),
        )
    details = usage.get("prompt_tokens_details")
    cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
    prompt = _int(usage.get("prompt_tokens"))
    return Tokens(max(0, prompt - cached), 0, cached, _int(usage.get("completion_tokens")))
