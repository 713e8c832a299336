"""ASGI middleware that guards every request before a route sees it (body size, security headers)."""
