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
