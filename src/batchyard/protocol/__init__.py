"""Wire models, validation, ids, timestamps and SSE framing. Pure: no I/O."""
