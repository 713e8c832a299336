"""ASGI middleware: wraps the whole app (refusals before any body is read)."""
