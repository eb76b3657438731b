"""Run a module as ``python -m`` does, with some of livecam's timing constants shortened first.

    python tests/shortened.py '{"livecam.sse.KEEPALIVE_INTERVAL": 2.0}' gunicorn ARGS...

A test that checks what happens after one of livecam's fixed waits (a keepalive every 15 s,
a request not whole after 10 s) runs its server this way, so that it waits seconds rather
than the production value; the code under test is the same. Each value is set as soon as its
module has executed, before any other module imports it (``from .sse import
KEEPALIVE_INTERVAL`` sees the new value), in the gunicorn master and so in every worker it
forks. A name that is not a number already defined by its module stops the start.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import json
import os
import runpy
import sys
from types import ModuleType
from typing import Any


class _SetAfterExec(importlib.abc.Loader):
    """A module's own loader, then the new values of some of its constants."""

    def __init__(self, loader: importlib.abc.Loader, values: dict[str, float]) -> None:
        self._loader = loader
        self._values = values

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        for name, value in self._values.items():
            current = getattr(module, name, None)
            if isinstance(current, bool) or not isinstance(current, int | float):
                raise SystemExit(f"shortened.py: {module.__name__}.{name} is not a number livecam defines")
            setattr(module, name, value)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)  # source and code for tracebacks


class _Finder(importlib.abc.MetaPathFinder):
    """Finds the modules named in the overrides as usual, loading them with _SetAfterExec."""

    def __init__(self, overrides: dict[str, float]) -> None:
        self._modules: dict[str, dict[str, float]] = {}
        for dotted, value in overrides.items():
            module, _, name = dotted.rpartition(".")
            self._modules.setdefault(module, {})[name] = value

    def find_spec(
        self, fullname: str, path: Any, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        values = self._modules.get(fullname)
        if values is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _SetAfterExec(spec.loader, values)
        return spec


def main() -> None:
    overrides, module, *args = sys.argv[1:]
    sys.argv = [module, *args]
    sys.path[0] = os.getcwd()  # as python -m has it, rather than this file's directory
    sys.meta_path.insert(0, _Finder(json.loads(overrides)))
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
