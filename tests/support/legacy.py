"""The pre-2.0 ``anthropic`` SDK (0.x), the generation that still has Text Completions,
run from its own virtual environment (``.venv-legacy``, made by scripts/test)."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from .server import ROOT

LEGACY_PYTHON = ROOT / ".venv-legacy" / "bin" / "python"


def legacy_completions(url: str, model: str, api_key: str = "legacy-key") -> dict[str, Any]:
    """What the 0.x SDK saw (tests/legacy/complete_0x.py in .venv-legacy)."""
    assert LEGACY_PYTHON.exists(), "run scripts/test: it creates .venv-legacy with anthropic 0.x"
    done = subprocess.run(
        [str(LEGACY_PYTHON), str(ROOT / "tests" / "legacy" / "complete_0x.py"), url, model, api_key],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def check_legacy_completions(seen: dict[str, Any], model: str) -> None:
    """What must hold whatever backend answered."""
    assert seen["sdk"].startswith("0.") and seen["version_header"] == "2023-06-01" and seen["used_x_api_key"]
    assert seen["path"] == "/v1/complete"
    first = seen["first"]
    assert first["type"] == "completion" and first["id"].startswith("compl_") and first["model"] == model
    assert first["completion"] and first["stop_reason"] in ("stop_sequence", "max_tokens")
    assert seen["short"]["stop_reason"] == "max_tokens"
    stream = seen["stream"]
    assert all(e["type"] == "completion" and e["id"] == stream[0]["id"] for e in stream)
    assert all(e["stop_reason"] is None for e in stream[:-1]) and stream[-1]["stop_reason"] in (
        "stop_sequence",
        "max_tokens",
    )
    assert len(stream) >= 2 and "".join(e["completion"] for e in stream)
    assert seen["bad_prompt"] == {
        "status": 400,
        "type": "invalid_request_error",
        "message": 'prompt must start with "\n\nHuman:" turn after an optional system prompt',
    }
