"""The layering ARCHITECTURE.md promises, checked on the imports themselves: a back-edge fails here, not in review."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[1] / "app"


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports, at any depth of the file (function-level imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def modules(package: str) -> list[Path]:
    return sorted((APP / package).rglob("*.py")) if package else sorted(APP.glob("*.py"))


def offending(package: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{path.relative_to(APP.parent)} imports {name}"
        for path in modules(package)
        for name in sorted(imports_of(path))
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    ]


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        # The model is self-contained: it imports nothing else from the app.
        ("model", ("app.errors", "app.config", "app.inputs", "app.engine", "app.http", "app.training",
                   "app.metrics", "app.logs", "fastapi", "starlette")),
        # Inputs (decoding, preprocessing) are shared by training and serving: no engine, no web layer.
        ("inputs", ("app.engine", "app.http", "app.training", "fastapi", "starlette")),
        # The engine knows no HTTP.
        ("engine", ("app.http", "app.training", "fastapi", "starlette", "uvicorn")),
        ("training", ("app.engine", "app.http", "fastapi", "starlette", "uvicorn")),
    ],
)
def test_imports_point_down(package: str, forbidden: tuple[str, ...]) -> None:
    assert offending(package, forbidden) == []


def test_the_batcher_is_blind_to_payloads() -> None:
    assert not {n for n in imports_of(APP / "engine" / "batcher.py") if n.split(".")[0] in ("torch", "numpy")}


def test_the_http_layer_imports_no_model_runtime_at_module_level() -> None:
    """Only the engine factory (inside a function) reaches torch: a fake engine runs the app without it."""
    heavy = ("torch", "app.engine.engine", "app.engine.served", "app.engine.predictor", "app.engine.pipeline",
             "app.model.artifact", "app.model.classifier", "app.inputs.preprocess")
    top_level = []
    for path in modules("http"):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            top_level += [f"{path.name}: {n}" for n in names if any(n == h or n.startswith(h + ".") for h in heavy)]
    assert top_level == []


def test_nothing_below_imports_the_web_layer() -> None:
    users = [str(p.relative_to(APP)) for p in APP.rglob("*.py")
             if not p.is_relative_to(APP / "http") and any(n.startswith("app.http") for n in imports_of(p))]
    # The entry points that start the service: the command line, and the Ray Serve deployment (a replica runs the app)
    assert sorted(users) == ["cli.py", "ray_serve.py"]

