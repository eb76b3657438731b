"""The module map in docs/design.md is the truth: every module in it, and imports only down the list.

The map is the table under "## Module map": one row per line, a layer named on its first row, the
modules of a row in backquotes (paths under ``livecam/``). Its rule: "Imports run down this
list, never up, and never in a circle". A module may import those of its own row or of any
later row; every import counts, at the top of a file or inside a function, since either runs.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import ROOT

PACKAGE = "livecam"
MAP_PAGE = "docs/design.md"
HOW = f"imports must run down the module map ({MAP_PAGE}, ## Module map): move a row, or the import"


@dataclass(frozen=True)
class Import:
    """One import of a package module by another, as written."""

    module: str  # the importing file, relative to the package: "views/camera.py"
    target: str  # the imported file, the same way
    line: int
    source: str  # the statement as written, for the message


def read_map(page: str) -> dict[str, int]:
    """The module map's rows: each module's file (relative to the package) and its row number."""
    section = page.partition("\n## Module map\n")[2].split("\n## ", 1)[0]
    assert section, f"{MAP_PAGE} has no '## Module map' section"
    rows: dict[str, int] = {}
    number = 0
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 3 or cells[1] in ("module", "---"):
            if rows and not line.startswith("|"):
                break  # the end of the table
            continue
        number += 1
        for name in re.findall(r"`([^`]+\.py)`", cells[1]):
            assert name not in rows, f"{MAP_PAGE} module map: {name} is listed twice"
            rows[name] = number
    assert rows, f"{MAP_PAGE}'s '## Module map' section has no module table"
    return rows


def _file_of(package: Path, dotted: str) -> str | None:
    """The file of a module of the package ("livecam.views.camera" -> "views/camera.py")."""
    parts = dotted.split(".")[1:]
    for candidate in ("/".join(parts) + ".py", "/".join([*parts, "__init__.py"])):
        if candidate.lstrip("/") and (package / candidate.lstrip("/")).is_file():
            return candidate.lstrip("/")
    return None


def imports_of(package: Path, path: Path) -> list[Import]:
    """Every import of one of the package's modules by the file at ``path``, relative or not."""
    relative = path.relative_to(package).as_posix()
    here = [package.name, *path.relative_to(package).parent.parts]  # the file's package
    text = path.read_text(encoding="utf-8")
    found = []
    for node in ast.walk(ast.parse(text, relative)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(here[: len(here) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            # "from . import state" imports a module; "from .config import FULL" a name of one.
            for alias in node.names:
                submodule = f"{module}.{alias.name}"
                names.append(submodule if _file_of(package, submodule) else module)
        for name in dict.fromkeys(names):
            if name.split(".")[0] != package.name:
                continue
            target = _file_of(package, name)
            assert target is not None, f"{PACKAGE}/{relative}:{node.lineno} imports {name}: no such module"
            if target != relative:
                statement = ast.get_source_segment(text, node) or name
                found.append(Import(relative, target, node.lineno, " ".join(statement.split())))
    return found


def _exempt(path: Path) -> bool:
    """A sub-package's ``__init__.py`` holding only a docstring is a marker, not a module."""
    if path.name != "__init__.py" or path.parent.name == PACKAGE:
        return False
    body = ast.parse(path.read_text(encoding="utf-8")).body
    return all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The import circles among the modules, as paths from a module back to it (one per back edge)."""
    found: list[list[str]] = []
    done: set[str] = set()
    path: list[str] = []  # the modules being visited, each importing the next

    def visit(module: str) -> None:
        path.append(module)
        for target in sorted(edges.get(module, ())):
            if target in path:
                found.append([*path[path.index(target) :], target])
            elif target not in done:
                visit(target)
        path.pop()
        done.add(module)

    for start in sorted(edges):
        if start not in done:
            visit(start)
    return found


def problems(package: Path, page: str) -> list[str]:
    """Every way the package and its module map disagree, one message each."""
    rows = read_map(page)
    files = sorted(
        p.relative_to(package).as_posix()
        for p in package.rglob("*.py")
        if "__pycache__" not in p.parts and not _exempt(p)
    )
    found = []
    for name in files:
        if name not in rows:
            found.append(
                f"{PACKAGE}/{name} is missing from the module map ({MAP_PAGE}): add it on a row "
                "below every module that imports it and above every module it imports"
            )
    for name in rows:
        if name not in files:
            found.append(f"the module map names {name}, but {PACKAGE}/{name} does not exist")
    edges: dict[str, set[str]] = {}
    for name in files:
        for imp in imports_of(package, package / name):
            edges.setdefault(imp.module, set()).add(imp.target)
            if imp.module in rows and imp.target in rows and rows[imp.target] < rows[imp.module]:
                found.append(
                    f"{PACKAGE}/{imp.module}:{imp.line} `{imp.source}` imports {imp.target}, listed above "
                    f"{imp.module} (row {rows[imp.target]} < row {rows[imp.module]}): {HOW}"
                )
    for circle in _cycles(edges):
        found.append(f"import circle: {' -> '.join(circle)}: {HOW}")
    return found


def test_the_package_follows_its_module_map() -> None:
    found = problems(ROOT / PACKAGE, (ROOT / MAP_PAGE).read_text(encoding="utf-8"))
    assert not found, "\n".join(found)


def test_the_map_is_read_as_the_page_writes_it() -> None:
    rows = read_map((ROOT / MAP_PAGE).read_text(encoding="utf-8"))
    assert rows["__init__.py"] == 1  # the app factory heads the list
    assert rows["views/camera.py"] == rows["views/dashboard.py"]  # one row, two modules
    assert rows["config.py"] < rows["redaction.py"]
    assert len(rows) >= 30


MAP = """\
# pkg

## Module map

Imports run down this list:

| layer | module | what |
| --- | --- | --- |
| top | `__init__.py` | the app |
| | `views/page.py`, `low.py` | a view; a helper |
| bottom | `leaf.py` | the end |

## Next
"""


def make_package(root: Path, files: dict[str, str]) -> Path:
    """A package named like livecam, made of the given files, in a temporary directory."""
    package = root / PACKAGE
    for name, text in files.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    (package / "views" / "__init__.py").write_text('"""Views."""\n')
    return package


GOOD = {
    "__init__.py": "from . import low\nfrom .views import page\n",
    "views/page.py": "from ..low import x\nfrom .. import leaf\n",
    "low.py": "import livecam.leaf\nx = 1\n",
    "leaf.py": "import os\n",
}


def test_a_package_that_follows_its_map_passes(tmp_path: Path) -> None:
    assert problems(make_package(tmp_path, GOOD), MAP) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"leaf.py": "def later():\n    from .views.page import y\n"},
            "livecam/leaf.py:2 `from .views.page import y` imports views/page.py, listed above leaf.py "
            "(row 2 < row 3): imports must run down",
        ),
        ({"wire.py": "x = 1\n"}, "livecam/wire.py is missing from the module map"),
        ({"views/extra.py": ""}, "livecam/views/extra.py is missing"),
        ({"low.py": "from .views import page\n"}, "import circle: low.py -> views/page.py -> low.py"),
    ],
)
def test_a_package_that_breaks_its_map_is_named(tmp_path: Path, change: dict[str, str], message: str) -> None:
    found = problems(make_package(tmp_path, {**GOOD, **change}), MAP)
    assert any(message in problem for problem in found), found


def test_a_module_the_map_names_must_exist(tmp_path: Path) -> None:
    found = problems(make_package(tmp_path, GOOD), MAP.replace("`leaf.py`", "`leaf.py`, `gone.py`"))
    assert "the module map names gone.py, but livecam/gone.py does not exist" in found
