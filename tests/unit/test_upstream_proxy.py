"""Upstream calls take their proxy from the environment once, when the pool opens (aiohttp's
trust_env read it, and ~/.netrc on a thread, on every call)."""

from __future__ import annotations

import asyncio

import pytest

from batchyard.backends.upstream import HttpBackendOptions, UpstreamPool, env_proxy


def test_the_environments_proxy_is_read_once_per_upstream(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://user:pw@proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "skip.internal")
    proxy, auth = env_proxy("http://vllm.internal:8000/v1")
    assert str(proxy) == "http://proxy.internal:3128" and auth is not None and auth.login == "user"
    assert env_proxy("http://skip.internal:8000/v1") == (None, None)

    async def opened() -> list[tuple[object, object]]:
        pool = UpstreamPool.open(HttpBackendOptions(base_url=["http://vllm.internal:8000/v1", "http://skip.internal/v1"]))
        try:
            assert all(not u.session.trust_env for u in pool.upstreams)
            return [(u.proxy and str(u.proxy), u.proxy_auth and u.proxy_auth.login) for u in pool.upstreams]
        finally:
            await pool.close()

    assert asyncio.run(opened()) == [("http://proxy.internal:3128", "user"), (None, None)]


def test_no_proxy_in_the_environment_means_none(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert env_proxy("https://api.example.com/v1") == (None, None)


def test_sse_events_are_split_right_across_network_chunks() -> None:
    from batchyard.backends.upstream import sse_bursts

    stream = (
        "event: message_start\r\ndata: {\"a\": 1}\r\n\r\n"
        ": a comment\n\n"
        "data: first line\ndata: second line\n\n"
        "event: delta\ndata: {\"text\": \"h\u00e9llo \u2603\"}\n\n"
        "data: [DONE]"  # no final newline
    ).encode()

    class Content:
        def __init__(self, size: int) -> None:
            self.size = size

        async def iter_any(self):  # type: ignore[no-untyped-def]
            for start in range(0, len(stream), self.size):
                yield stream[start : start + self.size]

    class Response:
        def __init__(self, size: int) -> None:
            self.content = Content(size)

    async def bursts(size: int) -> list[list[tuple[str | None, str]]]:
        return [burst async for burst in sse_bursts(Response(size))]  # type: ignore[arg-type]

    async def events(size: int) -> list[tuple[str | None, str]]:
        return [event for burst in await bursts(size) for event in burst]

    expected = [
        ("message_start", '{"a": 1}'),
        (None, "first line\nsecond line"),
        ("delta", '{"text": "h\u00e9llo \u2603"}'),
        (None, "[DONE]"),
    ]
    for size in (1, 2, 3, 7, 64, len(stream)):  # boundaries everywhere, inside UTF-8 sequences too
        assert asyncio.run(events(size)) == expected, size
    # What one network read completes travels together: the whole stream read at once is
    # two bursts (the events before the unterminated last line, then that line).
    assert asyncio.run(bursts(len(stream))) == [expected[:3], expected[3:]]
    assert all(len(burst) == 1 for burst in asyncio.run(bursts(1)))
