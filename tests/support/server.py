"""A real batchyard server in a child process, on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    def __init__(
        self,
        database_url: str,
        *,
        config_text: str | None = None,
        workdir: Path,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        command: str = "serve",
        host: str = "127.0.0.1",
    ) -> None:
        self.database_url = database_url
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path: Path | None = None
        if config_text is not None:
            self.config_path = workdir / f"config-{self.port}.toml"
            self.config_path.write_text(config_text)
        self.extra_args = extra_args or []
        self.env = env or {}
        self.command = command
        self.host = host
        self.log_path = workdir / f"server-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def args(self) -> list[str]:
        args = [sys.executable, "-m", "batchyard", self.command, "--database", self.database_url]
        if self.command == "serve":
            args += ["--host", self.host, "--port", str(self.port)]
        if self.config_path is not None:
            args += ["--config", str(self.config_path)]
        return args + self.extra_args

    def start(self, wait: bool = True) -> ServerProcess:
        env = {**os.environ, **self.env}
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args(), cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.starts += 1
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.command} exited with {self.proc.returncode}:\n{self.log()}")
            if self._ready():
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.command} did not become ready:\n{self.log()}")

    def _ready(self) -> bool:
        if self.command == "worker":
            with open(self.log_path, "rb") as log:
                log.seek(self._log_offset)
                return b"engine started" in log.read()
        try:
            return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-20000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"server did not stop on SIGTERM:\n{self.log()}") from None

    def wait_exit(self, timeout: float = 30.0) -> int:
        """The exit status of a process expected to stop on its own."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
