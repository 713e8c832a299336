"""The Dockerfile's structure, checked without a container engine (none is available where the tests run).

The file is parsed line by line (continuations joined, comments dropped) and each property the image must
have is asserted on the instructions and their order: dependencies in a cached layer before the code, the CPU
wheels of torch, a non-root user, a health check, and a `.dockerignore` that keeps the build context small
without leaving out anything the image copies. The one piece of the build that runs Python on the repository
(the line that lists pyproject's dependencies) is run here against the real pyproject.toml.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

# The image's Python (3.11) has tomllib; the checks below are about the image, so 3.10 skips them.
tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# What the image needs at run time: config.PROJECT_ROOT / templates, static and models sit next to app/.
NEEDED = ("app", "templates", "static", "models", "pyproject.toml", "README.md")


@dataclass(frozen=True)
class Instruction:
    line: int  # 1-based line where the instruction starts
    keyword: str  # upper case: FROM, RUN, COPY, ...
    args: str  # the rest, continuation lines joined


def parse(text: str) -> list[Instruction]:
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):  # comments inside a continued instruction are dropped
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        keyword, _, args = " ".join(part for part in pending if part).partition(" ")
        instructions.append(Instruction(start, keyword.upper(), args.strip()))
        pending = []
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def copy_sources(instruction: Instruction) -> list[str]:
    parts = [part for part in shlex.split(instruction.args) if not part.startswith("--")]
    assert len(parts) >= 2, f"line {instruction.line}: COPY needs a source and a destination"
    return parts[:-1]


@pytest.fixture(scope="module")
def steps() -> list[Instruction]:
    return parse(DOCKERFILE.read_text(encoding="utf-8"))


def first(
    steps: list[Instruction], keyword: str, predicate: Callable[[Instruction], object] | None = None
) -> Instruction:
    for step in steps:
        if step.keyword == keyword and (predicate is None or predicate(step)):
            return step
    raise AssertionError(f"no matching {keyword} instruction")


def index_of(steps: list[Instruction], step: Instruction) -> int:
    return steps.index(step)


def copies_app(step: Instruction) -> bool:
    return step.keyword == "COPY" and any(
        src.rstrip("/") in {"app", ".", "./app"} for src in copy_sources(step)
    )


def pyproject() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        return tomllib.load(handle)


def test_base_image_is_python_311_slim(steps: list[Instruction]) -> None:
    final_from = [step for step in steps if step.keyword == "FROM"][-1]
    assert re.fullmatch(
        r"python:3\.11(\.\d+)?-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?( +AS +\w+)?", final_from.args, re.I
    ), final_from.args


def test_torch_comes_from_the_cpu_index_before_anything_else_is_installed(steps: list[Instruction]) -> None:
    installs = [step for step in steps if step.keyword == "RUN" and "pip install" in step.args]
    assert installs, "no pip install step"
    torch_step = installs[0]
    # First install, so no dependency's requirement on torch can pull the CUDA build from PyPI before it.
    assert re.search(r"\btorch\b", torch_step.args) and re.search(r"\btorchvision\b", torch_step.args)
    assert f"--index-url {CPU_INDEX}" in torch_step.args, torch_step.args
    # The floors are pyproject's, so the cached torch layer and the package agree.
    wanted = {
        re.split(r"[<>=!~ ;]", dep, maxsplit=1)[0]: dep
        for dep in pyproject()["project"]["dependencies"]  # type: ignore[index]
    }
    for name in ("torch", "torchvision"):
        assert f'"{wanted[name]}"' in torch_step.args, f"{name}: pyproject says {wanted[name]!r}"


def test_dependencies_are_installed_in_a_layer_before_the_code(steps: list[Instruction]) -> None:
    app_copy = first(steps, "COPY", copies_app)
    dep_step = first(steps, "RUN", lambda step: "pyproject.toml" in step.args and "pip install" in step.args)
    assert index_of(steps, dep_step) < index_of(steps, app_copy), "dependencies are installed after the code"
    # Only pyproject.toml reaches the image before the dependency install, so a code change keeps that layer.
    before = steps[: index_of(steps, dep_step)]
    early_sources = [src for step in before if step.keyword == "COPY" for src in copy_sources(step)]
    assert early_sources == ["pyproject.toml"], early_sources
    # The package itself is installed after the code without touching the dependencies.
    after = steps[index_of(steps, app_copy) :]
    project_install = first(after, "RUN", lambda step: "pip install" in step.args)
    assert "--no-deps" in project_install.args, project_install.args
    # torch's layer comes before pyproject.toml is copied, so a version bump does not reinstall torch either.
    torch_step = first(steps, "RUN", lambda step: CPU_INDEX in step.args)
    pyproject_copy = first(steps, "COPY", lambda step: "pyproject.toml" in copy_sources(step))
    assert index_of(steps, torch_step) < index_of(steps, pyproject_copy)


def test_the_dependency_list_the_build_extracts_is_pyprojects(steps: list[Instruction]) -> None:
    dep_step = first(steps, "RUN", lambda step: "pyproject.toml" in step.args and "pip install" in step.args)
    tokens = shlex.split(dep_step.args)
    code = tokens[tokens.index("-c") + 1]
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split("\n") == [*pyproject()["project"]["dependencies"], ""]  # type: ignore[index]


def test_runs_as_a_non_root_user_that_owns_the_data_dir(steps: list[Instruction]) -> None:
    users = [step for step in steps if step.keyword == "USER"]
    assert users, "no USER instruction: the server would run as root"
    user = users[-1].args.split(":")[0]
    assert user not in {"root", "0"}, user
    cmd = first(steps, "CMD")
    assert index_of(steps, users[-1]) < index_of(steps, cmd)
    creates = first(steps, "RUN", lambda step: re.search(rf"\b(useradd|adduser)\b.*\b{user}\b", step.args))
    assert re.search(rf"chown\b[^&;]*\b{user}\b[^&;]*/data\b", creates.args), creates.args
    # VOLUME freezes the directory: changes to /data after it would be lost, so the chown must come first.
    volume = first(steps, "VOLUME")
    assert index_of(steps, creates) < index_of(steps, volume)
    env = " ".join(step.args for step in steps if step.keyword == "ENV")
    assert "CONVSCOPE_DATA_DIR=/data" in env and "TORCH_HOME=/data/" in env


def test_healthcheck_probes_healthz(steps: list[Instruction]) -> None:
    check = first(steps, "HEALTHCHECK")
    assert "/healthz" in check.args and " CMD " in f" {check.args} "


def test_serves_on_port_8000_on_all_interfaces(steps: list[Instruction]) -> None:
    assert "8000" in first(steps, "EXPOSE").args.split()
    cmd = [step for step in steps if step.keyword == "CMD"][-1]
    argv = json.loads(cmd.args)  # exec form, so signals reach the server
    assert argv[:2] == ["convscope", "serve"]
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    assert argv[argv.index("--port") + 1] == "8000"


def dockerignore_patterns() -> list[str]:
    assert DOCKERIGNORE.is_file(), ".dockerignore is missing: the build context would carry .venv and .git"
    lines = [line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def excluded(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves `path` out of the context (last matching pattern wins; `!` re-includes).

    fnmatch's `*` also crosses `/`, so this errs towards "excluded": a test that passes here also passes
    with Docker's stricter matching.
    """
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = pattern.lstrip("!").strip("/")
        body = body.removeprefix("**/")
        if any(
            fnmatch.fnmatchcase(prefix, body) or fnmatch.fnmatchcase(prefix.split("/")[-1], body)
            for prefix in prefixes
        ):
            result = not negated
    return result


def test_dockerignore_drops_the_heavy_and_private_parts() -> None:
    patterns = dockerignore_patterns()
    for path in (
        ".venv/bin/python",
        ".git/config",
        "data/images.sqlite",
        "app/__pycache__/main.cpython-311.pyc",
        ".hypothesis/examples/x",
        ".mypy_cache/x",
    ):
        assert excluded(path, patterns), path


def test_everything_the_dockerfile_copies_exists_and_reaches_the_context(steps: list[Instruction]) -> None:
    patterns = dockerignore_patterns()
    sources = [src for step in steps if step.keyword == "COPY" for src in copy_sources(step)]
    assert set(NEEDED) <= {src.rstrip("/") for src in sources}, sources
    for src in sources:
        target = ROOT / src
        assert target.exists(), f"COPY {src}: not in the repository"
        files = [target] if target.is_file() else [p for p in target.rglob("*") if p.is_file()]
        files = [p for p in files if "__pycache__" not in p.parts]
        assert files, src
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            assert not excluded(relative, patterns), f"{relative} is copied but .dockerignore leaves it out"


def test_readme_says_how_to_build_and_run_it() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docker build -t convscope ." in readme
    run = next(line for line in readme.splitlines() if line.startswith("docker run "))
    # The image serves 0.0.0.0, so the documented run passes a token (or the reader is told about ALLOW_OPEN).
    assert "-e CONVSCOPE_ACCESS_TOKEN" in run and "-p 8000:8000" in run and ":/data" in run
