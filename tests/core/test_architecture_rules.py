"""The dependency direction of DESIGN.md: app/core never imports the web stack."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "app" / "core"
FORBIDDEN = ("fastapi", "starlette", "jinja2", "app.api", "app.web", "app.services")


def test_core_modules_do_not_import_the_web_stack() -> None:
    offenders = []
    files = sorted(CORE.glob("*.py"))
    assert files, "app/core has no modules"
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                if any(name == f or name.startswith(f + ".") for f in FORBIDDEN):
                    offenders.append(f"{path.name}: {name}")
    assert offenders == []


def test_no_unsafe_torch_load_in_app() -> None:
    app_dir = CORE.parent
    for path in app_dir.rglob("*.py"):
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{path}:{lineno} unpickles without weights_only=True"
