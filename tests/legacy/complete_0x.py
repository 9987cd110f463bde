"""Run by tests/integration/test_complete.py with a pre-2.0 ``anthropic`` (0.x) in its own
virtual environment: the generation that still has ``completions.create`` (Text
Completions). Usage: complete_0x.py BASE_URL MODEL [API_KEY]. Prints a JSON summary of
what it saw; any unexpected failure exits non-zero."""

import json
import sys

import anthropic

base_url, model = sys.argv[1], sys.argv[2]
api_key = sys.argv[3] if len(sys.argv) > 3 else "legacy-key"
assert anthropic.__version__.startswith("0."), anthropic.__version__
client = anthropic.Anthropic(base_url=base_url, api_key=api_key, max_retries=0, _strict_response_validation=True)
prompt = f"{anthropic.HUMAN_PROMPT} Name a color.{anthropic.AI_PROMPT}"
extra = {"temperature": 0}  # steadies a real model; the simulator does not care

raw = client.completions.with_raw_response.create(model=model, prompt=prompt, max_tokens_to_sample=16, **extra)
sent = {k.lower(): v for k, v in raw.http_request.headers.items()}
first = raw.parse()
story = f"{anthropic.HUMAN_PROMPT} Write a long story about the sea.{anthropic.AI_PROMPT}"
short = client.completions.create(model=model, prompt=story, max_tokens_to_sample=4, **extra)

events = list(client.completions.create(model=model, prompt=prompt, max_tokens_to_sample=16, stream=True, **extra))

try:
    client.completions.create(model=model, prompt="Name a color.", max_tokens_to_sample=16)
    bad_prompt = None
except anthropic.BadRequestError as exc:
    bad_prompt = {"status": exc.status_code, "type": exc.body["error"]["type"], "message": exc.body["error"]["message"]}

print(
    json.dumps(
        {
            "sdk": anthropic.__version__,
            "version_header": sent.get("anthropic-version"),
            "used_x_api_key": "x-api-key" in sent,
            "path": raw.http_request.url.path,
            "first": first.model_dump(),
            "short": short.model_dump(),
            "stream": [e.model_dump() for e in events],
            "bad_prompt": bad_prompt,
        }
    )
)
