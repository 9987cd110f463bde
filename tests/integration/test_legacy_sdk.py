"""The pre-2.0 SDK generation (x-api-key, 2023-06-01) through the whole lifecycle.

It lives in its own virtual environment (``.venv-legacy``, made by scripts/test) because
one environment cannot hold two versions of the ``anthropic`` package."""

from __future__ import annotations

import json
import subprocess

from support.server import ROOT

LEGACY_PYTHON = ROOT / ".venv-legacy" / "bin" / "python"


def test_legacy_sdk_runs_the_lifecycle(server) -> None:
    assert LEGACY_PYTHON.exists(), "run scripts/test: it creates .venv-legacy with anthropic 0.x"
    done = subprocess.run(
        [str(LEGACY_PYTHON), str(ROOT / "tests" / "legacy" / "lifecycle_0x.py"), server.url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["sdk"].startswith("0.")
    assert seen["version_header"] == "2023-06-01"
    assert seen["used_x_api_key"] is True
    assert seen["counts"] == {"processing": 0, "succeeded": 3, "errored": 0, "canceled": 0, "expired": 0}
    assert seen["result_types"] == ["succeeded"] * 3
    assert seen["custom_ids"] == ["l0", "l1", "l2"]
    assert seen["listed"] is True
    assert seen["canceled_status"] == "canceling"
    assert seen["deleted_type"] == "message_batch_deleted"
    assert seen["after_delete"] == f"Message Batch {seen['batch_id']} not found."
