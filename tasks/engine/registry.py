"""Entry-point registry of tasks, datamodules and config packages (standard library only)."""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path

from tasks.errors import (
    DuplicateNameError,
    PluginConflictWarning,
    PluginLoadError,
    PluginVersionWarning,
    UnknownNameError,
    did_you_mean,
)

log = logging.getLogger(__name__)

BUILTIN_DISTRIBUTION = "lightning-tasks"
#: Set to "1" to ignore every entry point that does not come from lightning-tasks itself.
DISABLE_PLUGINS_ENV = "LIGHTNING_TASKS_DISABLE_PLUGIN_AUTOLOAD"

#: The "distribution" of a class named by import path (``task._name_=module:Class``).
IMPORT_PATH = "<import path>"

#: Module attribute by which a plugin declares the plugin API version it targets.
API_ATTRIBUTE = "LIGHTNING_TASKS_API"


GROUPS = {
    "task": "lightning_tasks.tasks",
    "datamodule": "lightning_tasks.datamodules",
    "config": "lightning_tasks.configs",
}


@dataclass(frozen=True)
class Entry:
    """One registered name: where it points and which distribution provides it."""

    kind: str
    name: str
    value: str
    distribution: str
    version: str

    @property
    def builtin(self) -> bool:
        return _normalize(self.distribution) == _normalize(BUILTIN_DISTRIBUTION)

    @property
    def origin(self) -> str:
        return "built-in" if self.builtin else f"{self.distribution} {self.version}"

    @property
    def module(self) -> str:
        return self.value.partition(":")[0].strip()

    def load(self) -> object:
        """Import the object behind the entry point, naming the plugin when that fails."""
        module_name, _, attr = self.value.partition(":")
        try:
            obj = importlib.import_module(module_name.strip())
            for part in filter(None, attr.strip().split(".")):
                obj = getattr(obj, part)
        except Exception as exc:  # a broken plugin must never take the library down with it
            if self.distribution == IMPORT_PATH:
                raise PluginLoadError(self._import_path_message(module_name.strip(), exc)) from exc
            raise PluginLoadError(
                f"{self.kind} {self.name!r} from distribution {self.distribution} "
                f"{self.version} (entry point {self.name} = {self.value!r}) failed to load: "
                f"{type(exc).__name__}: {exc}. Fix or uninstall that distribution, or set "
                f"{DISABLE_PLUGINS_ENV}=1 to run with built-ins only."
            ) from exc
        self._check_api_version(module_name.strip())
        return obj

    def _import_path_message(self, module: str, exc: Exception) -> str:
        """``task._name_=my_mod:MyTask`` that does not load: a path problem, not a plugin's."""
        where = f"{self.kind}._name_={self.name}"
        missing = isinstance(exc, ModuleNotFoundError) and exc.name and module.startswith(exc.name)
        if missing:
            return (
                f"{where}: module {module!r} cannot be imported from the current folder "
                f"({os.getcwd()}) or PYTHONPATH; run from the folder that holds it, or add that "
                "folder to PYTHONPATH"
            )
        if isinstance(exc, AttributeError):
            return f"{where}: module {module!r} has no {self.value.partition(':')[2]!r} ({exc})"
        return f"{where}: importing {module!r} failed: {type(exc).__name__}: {exc}"

    def _check_api_version(self, module_name: str) -> None:
        """Warn when the entry point's module, or the nearest package above it, declares
        ``LIGHTNING_TASKS_API`` other than ours (undeclared: nothing to check)."""
        from tasks import API_VERSION, __version__

        _, declared = declared_api(module_name)
        if declared is not None and declared != API_VERSION:
            warnings.warn(
                f"plugin {self.distribution} {self.version} ({self.kind} {self.name!r}) targets "
                f"lightning-tasks plugin API {declared}, but lightning-tasks {__version__} "
                f"provides API {API_VERSION}; it may misbehave. Upgrade the plugin or install "
                "a lightning-tasks release with that API.",
                PluginVersionWarning,
                stacklevel=3,
            )


def declared_api(module_name: str) -> tuple[str | None, object]:
    """``(module, value)`` of the ``LIGHTNING_TASKS_API`` that ``module_name`` (imported) or
    the nearest package above it declares; ``(None, None)`` when none does."""
    parts = module_name.split(".")
    for depth in range(len(parts), 0, -1):
        name = ".".join(parts[:depth])
        declared = getattr(sys.modules.get(name), API_ATTRIBUTE, None)
        if declared is not None:
            return name, declared
    return None, None


def _normalize(dist_name: str) -> str:
    return dist_name.lower().replace("_", "-").replace(".", "-")


def plugins_disabled() -> bool:
    return os.environ.get(DISABLE_PLUGINS_ENV, "").strip().lower() in {"1", "true", "yes"}


def _entry_points(group: str) -> Iterable[metadata.EntryPoint]:
    """The installed entry points of one group (the seam tests replace)."""
    return metadata.entry_points(group=group)


def _raw_entries(kind: str) -> list[Entry]:
    entries = []
    for ep in _entry_points(GROUPS[kind]):
        dist = ep.dist
        name = dist.metadata["Name"] if dist is not None else "<unknown distribution>"
        version = dist.version if dist is not None else "?"
        entries.append(Entry(kind, ep.name, ep.value, name, version))
    return entries


class _Claims:
    """Who claims which name: a built-in keeps its name (a plugin's claim on it is dropped
    with a :class:`PluginConflictWarning`); a name two plugins claim is withheld, kept in
    ``clashes`` with the message that names every claimant. ``label`` identifies a claim,
    so the same claim seen twice (one distribution found on two paths) is not a clash."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.found: dict[str, object] = {}
        self.clashes: dict[str, str] = {}
        self._owner: dict[str, tuple[str, bool]] = {}

    def add(self, name: str, item: object, label: str, builtin: bool) -> None:
        if name in self.clashes:
            self.clashes[name] += f" and by {label}"
            return
        owner = self._owner.get(name)
        if owner is None or owner[0] == label:
            self.found[name] = item
            self._owner[name] = (label, builtin)
        elif owner[1]:
            warnings.warn(
                f"{self.kind} name {name!r} of {label} is ignored: {owner[0]} already "
                "registers it. Built-in names cannot be replaced; the plugin should pick "
                "another name.",
                PluginConflictWarning,
                stacklevel=4,
            )
        else:
            del self.found[name]
            self.clashes[name] = (
                f"{self.kind} name {name!r} is registered twice: by {owner[0]} and by {label}. "
                f"Uninstall one of them, or set {DISABLE_PLUGINS_ENV}=1 to use built-ins only."
            )


@cache
def _table(kind: str) -> tuple[dict[str, Entry], dict[str, str]]:
    """Usable entries of one kind by name, and names withheld because two plugins claim them
    (see :class:`_Claims`)."""
    if kind not in GROUPS:
        raise ValueError(f"unknown registry kind {kind!r}; expected one of {sorted(GROUPS)}")
    claims = _Claims(kind)
    disabled = plugins_disabled()
    for entry in sorted(_raw_entries(kind), key=lambda e: (not e.builtin, e.name)):
        if disabled and not entry.builtin:
            log.debug(
                "%s set: skipping %s %r from %s",
                DISABLE_PLUGINS_ENV,
                kind,
                entry.name,
                entry.distribution,
            )
            continue
        claims.add(entry.name, entry, _describe_entry(entry), entry.builtin)
    return claims.found, claims.clashes  # type: ignore[return-value]


def _describe_entry(entry: Entry) -> str:
    return f"{entry.distribution} {entry.version} ({entry.value})"


def entries(kind: str) -> dict[str, Entry]:
    """All usable entries of one kind by name; plugins skipped when disabled."""
    return _table(kind)[0]


def conflicts(kind: str) -> dict[str, str]:
    """Names of one kind that two plugins claim, with the message that names both."""
    if kind == "preset":
        return _preset_table()[1]
    return _table(kind)[1]


def clear_cache() -> None:
    """Forget what was read from package metadata (after installing or removing a plugin)."""
    _table.cache_clear()
    _preset_table.cache_clear()


def unknown_name_message(kind: str, name: str, available: list[str]) -> str:
    hint = did_you_mean(name, available, n=3)
    listing = ", ".join(sorted(available)) or "(none installed)"
    return f"unknown {kind} {name!r}.{hint} Available {kind}s: {listing}."


def get(kind: str, name: str) -> Entry:
    """The entry registered under ``name``; an unknown name lists close matches and all names."""
    table, clashes = _table(kind)
    if name in clashes:
        raise DuplicateNameError(clashes[name])
    if name not in table:
        raise UnknownNameError(unknown_name_message(kind, name, list(table)))
    return table[name]


def load(kind: str, name: str) -> object:
    """Import and return the class registered as ``name`` (a registry name).

    A dotted import path (``package.module:Class`` or ``package.module.Class``) is
    accepted too, so a user's own subclass can be named from config.
    """
    if name in entries(kind) or name in conflicts(kind) or ("." not in name and ":" not in name):
        return get(kind, name).load()
    module, sep, attr = name.partition(":")
    if not sep:
        module, _, attr = name.rpartition(".")
    return Entry(kind, name, f"{module}:{attr}", IMPORT_PATH, "-").load()


def load_all(kind: str) -> tuple[dict[str, object], dict[str, PluginLoadError]]:
    """Import every entry of a kind; broken plugins are reported and skipped, not fatal."""
    loaded, failed = {}, {}
    for name, entry in entries(kind).items():
        try:
            loaded[name] = entry.load()
        except PluginLoadError as exc:
            warnings.warn(str(exc), stacklevel=2)
            failed[name] = exc
    return loaded, failed


#: Packages that ``pyproject.toml``'s ``package-dir`` maps from another folder of the source
#: tree (relative to the folder that holds the ``tasks`` package). A wheel or an editable
#: install knows the mapping; a source checkout on ``sys.path`` does not (``python -m tasks``
#: from the checkout root imports ``tasks`` from the checkout, where ``tasks/conf`` does not
#: exist), so the lookup falls back to these folders.
SOURCE_PACKAGE_DIRS = {"tasks.conf": "conf"}


def _source_package_dir(module: str) -> Path | None:
    """The folder of a ``package-dir``-mapped package in the source checkout this file is in."""
    relative = SOURCE_PACKAGE_DIRS.get(module)
    if relative is None:
        return None
    candidate = Path(__file__).resolve().parents[2] / relative  # tasks/engine/ -> checkout
    return candidate if (candidate / "__init__.py").is_file() else None


def package_dir(module: str) -> Path | None:
    """Folder of a package, found without importing it when the layout allows.

    ``plugin.conf`` is looked up as the folder ``conf`` inside the top-level
    package ``plugin``, which asks the import system to locate ``plugin`` but not
    to run its ``__init__``. Packages mapped elsewhere (editable installs with
    ``package-dir``) fall back to a real lookup, which imports the parents, and
    the library's own mapped packages to their folder in a source checkout.
    """
    found = _find_package_dir(module)
    return found if found is not None else _source_package_dir(module)


def _find_package_dir(module: str) -> Path | None:
    top, _, rest = module.partition(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location, *rest.split(".")) if rest else Path(location)
            if candidate.is_dir():
                return candidate
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@dataclass(frozen=True)
class Preset:
    """A task preset: ``conf/task/<name>.yaml`` in a registered config package."""

    name: str
    path: Path
    source: Entry

    @property
    def task(self) -> str:
        """The task the preset binds (``task._name_``), read from the file without YAML or
        Hydra: the first ``_name_:`` indented under the top-level ``task:`` key."""
        in_task = False
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                text = line.split("#", 1)[0].rstrip()
                if not text:
                    continue
                if not line[0].isspace():
                    in_task = text == "task:"
                elif in_task and text.strip().startswith("_name_:"):
                    return text.split(":", 1)[1].strip().strip("'\"")
        return ""

    @property
    def description(self) -> str:
        """The first comment line of the preset that is not a Hydra directive."""
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                text = line.strip()
                if not text.startswith("#"):
                    break
                text = text.lstrip("#").strip()
                if text and not text.startswith("@"):
                    return text
        return ""


@cache
def _preset_table() -> tuple[dict[str, Preset], dict[str, str]]:
    claims = _Claims("preset")
    for entry in entries("config").values():
        root = package_dir(entry.module)
        if root is None:
            warnings.warn(
                f"config package {entry.module!r} registered by {entry.distribution} "
                f"{entry.version} (entry point {entry.name}) cannot be found; its presets "
                "are skipped. Reinstall that distribution.",
                stacklevel=3,
            )
            continue
        found = sorted((root / "task").glob("*.yaml"))
        if not found and not entry.builtin:
            warnings.warn(empty_config_message(entry, root), stacklevel=3)
        for path in found:
            label = f"{entry.distribution} {entry.version} ({path})"
            claims.add(path.stem, Preset(path.stem, path, entry), label, entry.builtin)
    return claims.found, claims.clashes  # type: ignore[return-value]


def empty_config_message(entry: Entry, root: Path) -> str:
    return (
        f"config package {entry.module!r} of {entry.distribution} {entry.version} has no "
        f"presets (no task/*.yaml in {root}): its YAML files were probably left out of the "
        "installed package (package-data in the plugin's pyproject.toml)"
    )


def _empty_config_packages() -> list[str]:
    """Plugins whose registered config package ships no presets."""
    empty = []
    for entry in entries("config").values():
        root = package_dir(entry.module)
        if root is not None and not entry.builtin and not any((root / "task").glob("*.yaml")):
            empty.append(f"{entry.distribution} {entry.version} ({entry.module})")
    return empty


def presets() -> dict[str, Preset]:
    """Every usable task preset of every registered config package, by name.

    A built-in preset name stays built-in; a name two plugins ship is withheld
    (see :func:`conflicts`).
    """
    return _preset_table()[0]


def get_preset(name: str) -> Preset:
    table, clashes = _preset_table()
    if name in clashes:
        raise DuplicateNameError(clashes[name])
    if name not in table:
        message = unknown_name_message("preset", name, list(table))
        empty = _empty_config_packages()
        if empty:
            message += (
                f" Note: {', '.join(empty)} registers presets but ships none (task/*.yaml "
                "missing from the installed package)."
            )
        raise UnknownNameError(message)
    return table[name]
