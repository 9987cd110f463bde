"""Backends: where a Messages request is actually answered."""

from .base import Backend, BackendError, GenerateRequest

__all__ = ["Backend", "BackendError", "GenerateRequest"]
