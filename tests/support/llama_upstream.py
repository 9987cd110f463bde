"""llama.cpp's own HTTP server (from the xllamacpp wheel) as a third-party upstream for tests.

    python tests/support/llama_upstream.py MODEL.gguf PORT [API_KEY]

Serves OpenAI's /v1/chat/completions and Anthropic's /v1/messages on 127.0.0.1:PORT until
SIGTERM (with LLAMA_EMBEDDINGS=1 in the environment, /v1/embeddings too). Prints
"listening <address>" once ready."""

from __future__ import annotations

import os
import signal
import sys
import threading

import xllamacpp as xlc


def main() -> None:
    model, port = sys.argv[1], int(sys.argv[2])
    params = xlc.CommonParams()
    params.model.path = model
    params.port = port
    params.hostnames = ["127.0.0.1"]
    params.n_parallel = 4
    params.n_ctx = 2048 * params.n_parallel
    params.cpuparams.n_threads = 1
    params.cpuparams_batch.n_threads = 1
    params.model_alias = {"smollm2"}
    params.use_jinja = True
    if os.environ.get("LLAMA_EMBEDDINGS") == "1":
        params.embedding = True
        params.pooling_type = xlc.llama_pooling_type.LLAMA_POOLING_TYPE_MEAN
    if len(sys.argv) > 3:
        params.api_keys = [sys.argv[3]]
    server = xlc.Server(params)
    print("listening", server.listening_address, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    del server


if __name__ == "__main__":
    main()
