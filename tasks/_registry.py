"""Entry-point registry of tasks, datamodules and config packages (standard library only)."""

from __future__ import annotations

import importlib.util
import logging
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path

from tasks.errors import DuplicateNameError, PluginLoadError, UnknownNameError, did_you_mean

log = logging.getLogger(__name__)

BUILTIN_DISTRIBUTION = "lightning-tasks"
#: Set to "1" to ignore every entry point that does not come from lightning-tasks itself.
DISABLE_PLUGINS_ENV = "LIGHTNING_TASKS_DISABLE_PLUGIN_AUTOLOAD"

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
            raise PluginLoadError(
                f"{self.kind} {self.name!r} from distribution {self.distribution} "
                f"{self.version} (entry point {self.name} = {self.value!r}) failed to load: "
                f"{type(exc).__name__}: {exc}. Fix or uninstall that distribution, or set "
                f"{DISABLE_PLUGINS_ENV}=1 to run with built-ins only."
            ) from exc
        return obj


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


@cache
def entries(kind: str) -> dict[str, Entry]:
    """All entries of one kind by name, built-ins first; plugins skipped when disabled.

    Raises:
        DuplicateNameError: two distributions register the same name.
    """
    if kind not in GROUPS:
        raise ValueError(f"unknown registry kind {kind!r}; expected one of {sorted(GROUPS)}")
    found: dict[str, Entry] = {}
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
        other = found.get(entry.name)
        if other is not None and other != entry:
            raise DuplicateNameError(
                f"{kind} name {entry.name!r} is registered twice: by {other.distribution} "
                f"{other.version} ({other.value}) and by {entry.distribution} {entry.version} "
                f"({entry.value}). Uninstall one of them, or set {DISABLE_PLUGINS_ENV}=1 "
                "to use built-ins only."
            )
        found[entry.name] = entry
    return found


def clear_cache() -> None:
    """Forget what was read from package metadata (after installing or removing a plugin)."""
    entries.cache_clear()
    presets.cache_clear()


def unknown_name_message(kind: str, name: str, available: list[str]) -> str:
    hint = did_you_mean(name, available, n=3)
    listing = ", ".join(sorted(available)) or "(none installed)"
    return f"unknown {kind} {name!r}.{hint} Available {kind}s: {listing}."


def get(kind: str, name: str) -> Entry:
    """The entry registered under ``name``; an unknown name lists close matches and all names."""
    table = entries(kind)
    if name not in table:
        raise UnknownNameError(unknown_name_message(kind, name, list(table)))
    return table[name]


def load(kind: str, name: str) -> object:
    """Import and return the class registered as ``name`` (a registry name).

    A dotted import path (``package.module:Class`` or ``package.module.Class``) is
    accepted too, so a user's own subclass can be named from config.
    """
    if name in entries(kind) or ("." not in name and ":" not in name):
        return get(kind, name).load()
    module, sep, attr = name.partition(":")
    if not sep:
        module, _, attr = name.rpartition(".")
    return Entry(kind, name, f"{module}:{attr}", "<import path>", "-").load()


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


def package_dir(module: str) -> Path | None:
    """Folder of a package, found without importing it when the layout allows.

    ``plugin.conf`` is looked up as the folder ``conf`` inside the top-level
    package ``plugin``, which asks the import system to locate ``plugin`` but not
    to run its ``__init__``. Packages mapped elsewhere (editable installs with
    ``package-dir``) fall back to a real lookup, which imports the parents.
    """
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
def presets() -> dict[str, Preset]:
    """Every task preset of every registered config package, by name.

    Raises:
        DuplicateNameError: two config packages ship a preset of the same name.
    """
    found: dict[str, Preset] = {}
    for entry in entries("config").values():
        root = package_dir(entry.module)
        if root is None:
            warnings.warn(
                f"config package {entry.module!r} registered by {entry.distribution} "
                f"{entry.version} (entry point {entry.name}) cannot be found; its presets "
                "are skipped. Reinstall that distribution.",
                stacklevel=2,
            )
            continue
        for path in sorted((root / "task").glob("*.yaml")):
            other = found.get(path.stem)
            if other is not None and other.path != path:
                raise DuplicateNameError(
                    f"preset name {path.stem!r} is shipped twice: by {other.source.distribution} "
                    f"({other.path}) and by {entry.distribution} ({path}). Uninstall one of "
                    f"them, or set {DISABLE_PLUGINS_ENV}=1 to use built-ins only."
                )
            found[path.stem] = Preset(path.stem, path, entry)
    return found


def get_preset(name: str) -> Preset:
    table = presets()
    if name not in table:
        raise UnknownNameError(unknown_name_message("preset", name, list(table)))
    return table[name]
