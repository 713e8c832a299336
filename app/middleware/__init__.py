"""ASGI middleware that guards every request before a route sees it (security checks, body size)."""
