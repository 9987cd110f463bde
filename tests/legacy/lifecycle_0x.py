"""Run by tests/integration/test_legacy_sdk.py with a pre-2.0 ``anthropic`` (0.x) in its own
virtual environment: that SDK sends ``x-api-key`` and ``anthropic-version: 2023-06-01``.
Prints a JSON summary of what it saw; any failure exits non-zero."""

import json
import sys
import time

import anthropic

base_url = sys.argv[1]
client = anthropic.Anthropic(base_url=base_url, api_key="legacy-key", max_retries=0, _strict_response_validation=True)
assert anthropic.__version__.startswith("0."), anthropic.__version__
params = {"model": "claude-sim", "max_tokens": 32, "messages": [{"role": "user", "content": "hi from 0.x"}]}

batch = client.messages.batches.create(requests=[{"custom_id": f"l{i}", "params": params} for i in range(3)])
raw = client.messages.batches.with_raw_response.retrieve(batch.id)
sent_headers = {k.lower(): v for k, v in raw.http_request.headers.items()}
while (current := client.messages.batches.retrieve(batch.id)).processing_status != "ended":
    time.sleep(0.1)
results = list(client.messages.batches.results(batch.id))
listed = [b.id for b in client.messages.batches.list(limit=100)]
slow = client.messages.batches.create(
    requests=[{"custom_id": "s", "params": {**params, "model": "slow-model"}}]
)
canceled = client.messages.batches.cancel(slow.id)
deleted = client.messages.batches.delete(batch.id)
try:
    client.messages.batches.retrieve(batch.id)
    after_delete = "found"
except anthropic.NotFoundError as exc:
    after_delete = exc.body["error"]["message"]

print(
    json.dumps(
        {
            "sdk": anthropic.__version__,
            "version_header": sent_headers.get("anthropic-version"),
            "used_x_api_key": "x-api-key" in sent_headers,
            "counts": current.request_counts.model_dump(),
            "result_types": sorted(r.result.type for r in results),
            "custom_ids": sorted(r.custom_id for r in results),
            "listed": batch.id in listed,
            "canceled_status": canceled.processing_status,
            "deleted_type": deleted.type,
            "after_delete": after_delete,
            "batch_id": batch.id,
        }
    )
)
