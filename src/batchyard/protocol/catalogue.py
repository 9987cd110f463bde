"""The Claude model catalogue the simulator's catch-all route advertises by default, so
that client code which lists models, or checks one before using it, works against it as
against the real API.

Figures from Anthropic's model pages (platform.claude.com/docs, models overview and each
model's page, late 2026); release dates as ``created_at`` at midnight UTC. All current
models take images and PDFs, cite, and run in batches. Structured outputs are marked only
where a source says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from .models import capabilities, model_info


@dataclass(frozen=True)
class CatalogueModel:
    id: str
    display_name: str
    created_at: str
    max_input_tokens: int
    max_tokens: int
    thinking: Literal["adaptive", "extended", "none"]
    effort: bool
    structured_outputs: bool
    aliases: tuple[str, ...] = ()

    def info(self) -> dict[str, Any]:
        return model_info(
            self.id,
            display_name=self.display_name,
            created_at=self.created_at,
            max_input_tokens=self.max_input_tokens,
            max_tokens=self.max_tokens,
            caps=capabilities(
                thinking=self.thinking != "none",
                thinking_enabled=self.thinking == "extended",
                effort=self.effort,
                image_input=True,
                pdf_input=True,
                citations=True,
                structured_outputs=self.structured_outputs,
            ),
        )


CLAUDE_MODELS: tuple[CatalogueModel, ...] = (
    CatalogueModel(
        "claude-fable-5-2",
        "Claude Fable 5.2",
        "2026-11-09T00:00:00Z",
        1000000,
        128000,
        thinking="adaptive",
        effort=True,
        structured_outputs=False,
        aliases=(),
    ),
    CatalogueModel(
        "claude-mythos-5-2",
        "Claude Mythos 5.2",
        "2026-11-09T00:00:00Z",
        1000000,
        128000,
        thinking="adaptive",
        effort=True,
        structured_outputs=False,
        aliases=(),
    ),
    CatalogueModel(
        "claude-haiku-5-5",
        "Claude Haiku 5.5",
        "2026-10-07T00:00:00Z",
        1000000,
        128000,
        thinking="adaptive",
        effort=True,
        structured_outputs=False,
        aliases=(),
    ),
    CatalogueModel(
        "claude-sonnet-5-5",
        "Claude Sonnet 5.5",
        "2026-09-28T00:00:00Z",
        1000000,
        128000,
        thinking="adaptive",
        effort=True,
        structured_outputs=True,
        aliases=(),
    ),
    CatalogueModel(
        "claude-opus-5-5",
        "Claude Opus 5.5",
        "2026-09-22T00:00:00Z",
        1000000,
        128000,
        thinking="adaptive",
        effort=True,
        structured_outputs=True,
        aliases=(),
    ),
    CatalogueModel(
        "claude-fable-5-1",
        "Claude Fable 5.1",
        "2026-09-01T00:00:00Z",
        1000000,
        128000,
        thinking="adaptive",
        effort=True,
        structured_outputs=True,
        aliases=(),
    ),
    CatalogueModel(
        "claude-mythos-5-1",
        "Claude Mythos 5.1",
        "2026-09-01T00:00:00Z",
        1000000,
        128000,
        thinking="adaptive",
        effort=True,
        structured_outputs=True,
        aliases=(),
    ),
    CatalogueModel(
        "claude-opus-5",
        "Claude Opus 5",
        "2026-07-24T00:00:00Z",
        1000000,
        128000,
        thinking="adaptive",
        effort=True,
        structured_outputs=True,
        aliases=(),
    ),
    CatalogueModel(
        "claude-sonnet-5",
        "Claude Sonnet 5",
        "2026-06-30T00:00:00Z",
        1000000,
        128000,
        thinking="adaptive",
        effort=True,
        structured_outputs=False,
        aliases=(),
    ),
    CatalogueModel(
        "claude-fable-5",
        "Claude Fable 5",
        "2026-06-09T00:00:00Z",
        1000000,
        128000,
        thinking="adaptive",
        effort=True,
        structured_outputs=True,
        aliases=(),
    ),
    CatalogueModel(
        "claude-mythos-5",
        "Claude Mythos 5",
        "2026-06-09T00:00:00Z",
        1000000,
        128000,
        thinking="adaptive",
        effort=True,
        structured_outputs=True,
        aliases=(),
    ),
    CatalogueModel(
        "claude-opus-4-8",
        "Claude Opus 4.8",
        "2026-05-28T00:00:00Z",
        1000000,
        128000,
        thinking="adaptive",
        effort=True,
        structured_outputs=True,
        aliases=(),
    ),
    CatalogueModel(
        "claude-opus-4-7",
        "Claude Opus 4.7",
        "2026-04-16T00:00:00Z",
        1000000,
        128000,
        thinking="adaptive",
        effort=True,
        structured_outputs=True,
        aliases=(),
    ),
    CatalogueModel(
        "claude-sonnet-4-6",
        "Claude Sonnet 4.6",
        "2026-02-17T00:00:00Z",
        1000000,
        128000,
        thinking="adaptive",
        effort=True,
        structured_outputs=True,
        aliases=(),
    ),
    CatalogueModel(
        "claude-opus-4-6",
        "Claude Opus 4.6",
        "2026-02-05T00:00:00Z",
        1000000,
        128000,
        thinking="adaptive",
        effort=True,
        structured_outputs=True,
        aliases=(),
    ),
    CatalogueModel(
        "claude-opus-4-5-20251101",
        "Claude Opus 4.5",
        "2025-11-24T00:00:00Z",
        200000,
        64000,
        thinking="extended",
        effort=True,
        structured_outputs=True,
        aliases=("claude-opus-4-5",),
    ),
    CatalogueModel(
        "claude-haiku-4-5-20251001",
        "Claude Haiku 4.5",
        "2025-10-15T00:00:00Z",
        200000,
        64000,
        thinking="extended",
        effort=False,
        structured_outputs=True,
        aliases=("claude-haiku-4-5",),
    ),
)

BY_NAME: dict[str, CatalogueModel] = {name: m for m in CLAUDE_MODELS for name in (m.id, *m.aliases)}
