"""Extensions in the user's own package: config groups on Hydra's search path, claims and code found through
Python entry points, checked by the same pre-flight as the built-in ones (see ``docs/extending.md``).

A plugin is a module named by an entry point of the group ``ptforget.plugins`` (in the user's ``pyproject.toml``:
``[project.entry-points."ptforget.plugins"] mine = "mypkg.ptforget_plugin"``) or listed in the environment variable
``PTFORGET_PLUGINS`` (comma-separated module names, for a package that is on ``PYTHONPATH`` but not installed).
Importing it registers its claims (``@register`` / ``@claim``); its ``SEARCHPATH`` (a string or a list of
``pkg://package.conf`` / ``file:///abs/conf`` entries) holds its config groups (``objective/mine.yaml``, ...).

``install(argv)`` loads the plugins and puts their search path, with the command line's ``hydra.searchpath=[...]``
and ``--config-dir DIR``, on the search path of every config Hydra composes in this process: the pre-flight's, the
app's and the check's own (it composes each run's config inside the app). So a user's group option is composed,
validated (a typo in one of its keys is one ``ptforget: error:`` line) and trained exactly like a built-in one.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

from ptforget.errors import ConfigError

ENTRY_POINT_GROUP = "ptforget.plugins"
ENV_VAR = "PTFORGET_PLUGINS"
PROVIDER = "ptforget-plugin"

_loaded: dict[str, ModuleType | Any] = {}
_paths: list[str] = []


def load() -> dict[str, Any]:
    """Import every plugin (entry points of ``ptforget.plugins`` and ``PTFORGET_PLUGINS``) once per process; returns
    name -> loaded object. A plugin that fails to import is a ConfigError naming it."""
    found: list[tuple[str, Any]] = [(ep.name, ep) for ep in entry_points(group=ENTRY_POINT_GROUP)]
    found += [(name.strip(), None) for name in os.environ.get(ENV_VAR, "").split(",") if name.strip()]
    if any((f"{n}={ep.value}" if ep is not None else n) not in _loaded for n, ep in found):
        from ptforget.check.registry import load_builtin

        load_builtin()  # first: a plugin that registers a built-in claim's id fails in its own import, named
    for name, ep in found:
        key = f"{name}={ep.value}" if ep is not None else name
        if key in _loaded:
            continue
        where = f"entry point {name} = {ep.value} (group {ENTRY_POINT_GROUP})" if ep is not None else \
            f"{ENV_VAR} module {name}"
        try:
            obj = ep.load() if ep is not None else importlib.import_module(name)
        except (Exception, SystemExit) as err:  # sys.exit() on import must not end the command with status 0
            raise ConfigError("plugin", where, f"an importable module ({type(err).__name__}: "
                              f"{' '.join(str(err).split())})") from None
        paths = _searchpath_of(obj, where)
        _loaded[key] = obj
        for path in paths:
            add_path(path)
    return dict(_loaded)


def _searchpath_of(obj: Any, where: str = "plugin") -> list[str]:
    """A plugin's ``SEARCHPATH`` as search-path entries (ConfigError naming the plugin when it is not a path or a
    list of paths)."""
    paths = getattr(obj, "SEARCHPATH", None)
    if paths is None:
        return []
    paths = [paths] if isinstance(paths, str | os.PathLike) else paths
    if not isinstance(paths, list | tuple) or not all(isinstance(p, str | os.PathLike) and str(p) for p in paths):
        raise ConfigError("plugin", where, f"a SEARCHPATH that is a path or a list of paths, not {paths!r:.80}")
    return [as_search_path(p) for p in paths]


def as_search_path(path: str | os.PathLike) -> str:
    """A search-path entry as Hydra takes it: ``pkg://`` and ``file://`` kept, a plain folder made ``file://``
    (absolute)."""
    text = str(path)
    if text.startswith(("pkg://", "file://")):
        return text
    return "file://" + str(Path(text).expanduser().resolve())


def add_path(path: str) -> None:
    """Put ``path`` on the search path of every config composed from now on in this process."""
    path = as_search_path(path)
    if path not in _paths:
        _paths.append(path)
    _register()


def search_paths() -> list[str]:
    return list(_paths)


def command_line_paths(argv: Sequence[str]) -> list[str]:
    """The search path a command line adds: ``--config-dir DIR`` / ``-cd DIR`` and ``hydra.searchpath=[...]``."""
    out: list[str] = []
    args = list(argv)
    for i, a in enumerate(args):
        if a in ("--config-dir", "-cd") and i + 1 < len(args):
            out.append(as_search_path(args[i + 1]))
        elif a.startswith("--config-dir="):
            out.append(as_search_path(a.split("=", 1)[1]))
        elif a.lstrip("+").startswith("hydra.searchpath="):
            value = a.split("=", 1)[1].strip()
            if value.startswith("[") and value.endswith("]"):
                value = value[1:-1]
            out += [as_search_path(v.strip().strip("'\"")) for v in value.split(",") if v.strip()]
    return out


def install(argv: Sequence[str] = ()) -> None:
    """Load the plugins and register their search path and the command line's (see the module docstring)."""
    load()
    for path in command_line_paths(argv):
        add_path(path)


_registered = False


def _register() -> None:
    """Register (once) the Hydra SearchPathPlugin that appends ``_paths`` to every config search path."""
    global _registered
    if _registered:
        return
    from hydra.core.plugins import Plugins
    from hydra.plugins.search_path_plugin import SearchPathPlugin

    class PtforgetSearchPath(SearchPathPlugin):
        """The search path of ptforget's plugins and of the command line (``ptforget.plugins``)."""

        def manipulate_search_path(self, search_path: Any) -> None:
            have = {p.path for p in search_path.get_path()}
            for path in _paths:
                if path.split("://", 1)[-1] not in have and path not in have:
                    search_path.append(provider=PROVIDER, path=path)

    PtforgetSearchPath.__module__ = __name__
    Plugins.instance().register(PtforgetSearchPath)
    _registered = True
