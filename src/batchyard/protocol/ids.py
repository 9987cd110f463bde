"""Object identifiers in Anthropic's shape: ``<prefix>_01`` followed by 22 base58 characters.

Batch ids are time-ordered (a 48-bit millisecond clock in the high bits, 80 random bits
below), so ordering by id is ordering by creation time, and a cursor that names a batch
which no longer exists still marks a position in the list. The base58 alphabet is in
ASCII order, so fixed-width ids compare as strings the way their numbers compare.
"""

from __future__ import annotations

import random
import re
import secrets
import time

BASE58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_TAIL_LENGTH = 22  # 58**22 > 2**128
_BASE58_CHARS = f"[{re.escape(BASE58_ALPHABET)}]"

BATCH_PREFIX = "msgbatch_"
MESSAGE_PREFIX = "msg_"
TOOL_USE_PREFIX = "toolu_"
REQUEST_PREFIX = "req_"
FILE_PREFIX = "file_"
OPENAI_BATCH_PREFIX = "batch_"  # OpenAI's Batch API

BATCH_ID_PATTERN = re.compile(rf"^{BATCH_PREFIX}01{_BASE58_CHARS}{{{_TAIL_LENGTH}}}$")
OPENAI_BATCH_ID_PATTERN = re.compile(rf"^{OPENAI_BATCH_PREFIX}01{_BASE58_CHARS}{{{_TAIL_LENGTH}}}$")


def _base58(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, rem = divmod(number, 58)
        chars.append(BASE58_ALPHABET[rem])
    if number:
        raise ValueError("number does not fit the width")
    return "".join(reversed(chars))


_fast = random.Random(secrets.randbits(128))
# A random byte to a base58 character (byte mod 58: the first 24 characters a little more
# often, 22 of them still hold over 128 bits).
_BASE58_OF_BYTE = bytes(ord(BASE58_ALPHABET[b % 58]) for b in range(256))


def _random_tail() -> str:
    # Message, tool-use and request ids only need to be unique, not unguessable or ordered,
    # and are made on every request: a seeded PRNG spares a system call each, and 22 random
    # bytes mapped to characters in one call spare a Python loop of divisions. Batch ids
    # (which name stored data, and sort by time) keep the operating system's randomness.
    return _fast.randbytes(_TAIL_LENGTH).translate(_BASE58_OF_BYTE).decode("ascii")


def new_batch_id(now_ms: int | None = None) -> str:
    """A new batch id whose sort order follows its creation time."""
    if now_ms is None:
        now_ms = time.time_ns() // 1_000_000
    number = ((now_ms & ((1 << 48) - 1)) << 80) | secrets.randbits(80)
    return f"{BATCH_PREFIX}01{_base58(number, _TAIL_LENGTH)}"


def new_file_id(now_ms: int | None = None) -> str:
    """A new file id, time-ordered like batch ids (lists page by id)."""
    return FILE_PREFIX + new_batch_id(now_ms)[len(BATCH_PREFIX) :]


def new_openai_batch_id(now_ms: int | None = None) -> str:
    """A new OpenAI Batch API batch id (``batch_…``), time-ordered like Message Batch ids."""
    return OPENAI_BATCH_PREFIX + new_batch_id(now_ms)[len(BATCH_PREFIX) :]


def new_message_id() -> str:
    return f"{MESSAGE_PREFIX}01{_random_tail()}"


def new_tool_use_id() -> str:
    return f"{TOOL_USE_PREFIX}01{_random_tail()}"


def new_request_id() -> str:
    return f"{REQUEST_PREFIX}01{_random_tail()}"


def is_batch_id(value: str) -> bool:
    return BATCH_ID_PATTERN.match(value) is not None


def is_openai_batch_id(value: str) -> bool:
    return OPENAI_BATCH_ID_PATTERN.match(value) is not None


EVENT_PREFIX = "evt_"
WEBHOOK_ENDPOINT_PREFIX = "whep_"


def new_event_id(now_ms: int | None = None) -> str:
    """A webhook event's id (also its ``webhook-id``), time-ordered like batch ids."""
    return EVENT_PREFIX + new_batch_id(now_ms)[len(BATCH_PREFIX) :]


def new_webhook_endpoint_id(now_ms: int | None = None) -> str:
    return WEBHOOK_ENDPOINT_PREFIX + new_batch_id(now_ms)[len(BATCH_PREFIX) :]
