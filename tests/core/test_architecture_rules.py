"""The dependency direction of DESIGN.md, checked for every layer: core, services, schemas, http, api, web."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[2] / "app"
CORE = APP / "core"

WEB_STACK = ("fastapi", "starlette", "jinja2", "jinja2_fragments")
# Each layer and what it must never import (DESIGN.md: core <- services <- schemas/http <- api, web; api and web are
# siblings that share through services, app.schemas and app.http, never through each other).
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "core": (
        *WEB_STACK,
        "app.api",
        "app.web",
        "app.services",
        "app.schemas",
        "app.http",
        "app.deps",
        "app.main",
        "app.middleware",
    ),
    "services": (*WEB_STACK, "app.api", "app.web", "app.schemas", "app.http", "app.deps", "app.main"),
    "schemas": ("fastapi", "starlette", "jinja2", "app.api", "app.web", "app.http", "app.main"),
    "http": ("app.api", "app.web", "app.main"),
    "api": ("app.web", "app.main", "jinja2"),
    "web": ("app.api", "app.main"),
}


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_each_layer_imports_only_what_is_below_it(layer: str) -> None:
    files = sorted((APP / layer).rglob("*.py"))
    assert len(files) > 1, f"app/{layer} has no modules"
    offenders = [
        f"{path.relative_to(APP)}: {name}"
        for path in files
        for name in _imports(path)
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[layer])
    ]
    assert offenders == []


def test_core_is_grouped_by_concept() -> None:
    # New core code goes into a concept package (imaging, convolution, models, ...), never flat in app/core.
    flat = sorted(p.name for p in CORE.glob("*.py") if p.name != "__init__.py")
    assert flat == []
    packages = sorted(p.name for p in CORE.iterdir() if (p / "__init__.py").exists())
    assert {"imaging", "convolution", "models", "inspection", "explanation", "training"} <= set(packages)


def test_every_router_is_listed_in_main() -> None:
    # main.py lists routers explicitly; a module with a router that is not listed would be dead code.
    import importlib

    from app import main

    listed = {id(r) for r in (*main.API_ROUTERS, *main.WEB_ROUTERS)}
    for layer in ("api", "web"):
        for path in sorted((APP / layer).glob("*.py")):
            module = importlib.import_module(f"app.{layer}.{path.stem}")
            router = getattr(module, "router", None)
            assert router is None or id(router) in listed, (
                f"app/{layer}/{path.name} has a router main.py does not list"
            )
    assert all(r.include_in_schema for r in main.API_ROUTERS)


def test_no_unsafe_torch_load_in_app() -> None:
    app_dir = CORE.parent
    for path in app_dir.rglob("*.py"):
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{path}:{lineno} unpickles without weights_only=True"


def test_no_picture_is_inlined_and_the_overlay_slider_has_one_name() -> None:
    # Pictures are served by URL (app/services/pictures.py), never as data URIs; the slider is `opacity` everywhere.
    root = APP.parent
    sources = [
        *APP.rglob("*.py"),
        *(root / "templates").rglob("*.html"),
        *(root / "static" / "js").rglob("*.js"),
    ]
    inlined = [str(p.relative_to(root)) for p in sources if "data:image" in p.read_text()]
    assert inlined == []
    named_alpha = [
        str(p.relative_to(root))
        for p in sources
        if p.suffix in {".html", ".js"} and re.search(r"name=\"alpha\"|[?&]alpha=|\balpha:", p.read_text())
    ]
    assert named_alpha == []
