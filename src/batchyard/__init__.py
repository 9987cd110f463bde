"""batchyard: a self-hosted server for Anthropic's Message Batches and Messages APIs."""

__version__ = "0.1.0"
