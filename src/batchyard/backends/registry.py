"""Backend kinds by the name a route's ``backend`` key uses. A new backend is one line here."""

from __future__ import annotations

from .anthropic import AnthropicBackend
from .base import Backend
from .llamacpp import LlamaCppBackend
from .openai import OpenAIBackend
from .simulator import SimulatorBackend

BACKENDS: dict[str, type[Backend]] = {
    SimulatorBackend.name: SimulatorBackend,
    OpenAIBackend.name: OpenAIBackend,
    AnthropicBackend.name: AnthropicBackend,
    LlamaCppBackend.name: LlamaCppBackend,
}
