"""The house rules of ARCHITECTURE.md, read from the package's own imports."""

from __future__ import annotations

import ast
from pathlib import Path

import celery_resumable

PACKAGE = Path(celery_resumable.__file__).parent

# Floors, from the bottom: a module imports only from its own floor or below.
FLOORS: list[set[str]] = [
    {"config", "errors", "signals", "_types"},
    {"codec", "store"},
    {"worker"},
    {"run"},
    {"task", "steps", "tx", "keyset", "delivery"},
    {"contrib"},
    {"__init__", "testing", "pytest_plugin", "demo", "cli"},
]
MAX_LINES = 400


def room(module: str) -> str:
    """The room of a dotted module name: its folder, or its file at the top."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def floor(module: str) -> int:
    name = room(module)
    for index, names in enumerate(FLOORS):
        if name in names:
            return index
    raise AssertionError(f"{module} has no floor in ARCHITECTURE.md")


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def imports(path: Path, *, top_level_only: bool = False) -> list[tuple[int, str]]:
    """The package modules ``path`` imports at run time (not for type checking only)."""
    tree = ast.parse(path.read_text())
    found: list[tuple[int, str]] = []

    def visit(children: list[ast.AST], nested: bool) -> None:
        for child in children:
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                visit(list(child.orelse), nested)
                continue
            inner = nested or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                if child.module.startswith("celery_resumable") and not (top_level_only and inner):
                    found.extend((child.lineno, t) for t in targets(child.module, child.names))
            elif isinstance(child, ast.Import) and not (top_level_only and inner):
                found.extend(
                    (child.lineno, alias.name)
                    for alias in child.names
                    if alias.name.startswith("celery_resumable")
                )
            visit(list(ast.iter_child_nodes(child)), inner)

    visit(list(tree.body), False)
    return found


def targets(module: str, names: list[ast.alias]) -> list[str]:
    """What ``from module import names`` imports: the submodules it names, else ``module``."""
    folder = PACKAGE.parent.joinpath(*module.split("."))
    submodules = [
        f"{module}.{alias.name}"
        for alias in names
        if (folder / f"{alias.name}.py").exists() or (folder / alias.name).is_dir()
    ]
    return submodules if len(submodules) == len(names) else [module, *submodules]


def sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts)


def test_no_module_is_over_400_lines() -> None:
    long = {
        module_name(p): n for p in sources() if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_calls_go_down_only() -> None:
    upward = []
    for path in sources():
        here = module_name(path)
        for line, target in imports(path):
            if floor(target) > floor(here):
                upward.append(f"{here}:{line} imports {target}")
    assert upward == []


def test_django_lives_under_contrib_only() -> None:
    outside = []
    for path in sources():
        here = module_name(path)
        if here.startswith("celery_resumable.contrib"):
            continue
        text = path.read_text()
        if "import django" in text or "from django" in text:
            outside.append(here)
        outside += [f"{here}:{line}" for line, t in imports(path) if ".contrib" in t]
    assert outside == []


def test_no_import_circle_between_modules() -> None:
    graph = {
        module_name(p): {t for _, t in imports(p, top_level_only=True) if t != module_name(p)}
        for p in sources()
    }
    circles = []
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for target in graph.get(node, ()):
                if target == start:
                    circles.append(" -> ".join([*path, target]))
                elif target not in seen:
                    seen.add(target)
                    stack.append((target, [*path, target]))
    assert circles == []
