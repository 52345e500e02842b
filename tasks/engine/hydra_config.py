"""Hydra glue: registered config packages on the search path, CLI override normalisation."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tasks.engine import registry as _registry

PRIMARY_CONFIG_MODULE = "tasks.conf"
#: Groups that sit in the primary defaults list, so ``+group=x`` and ``group=x`` mean the same.
DEFAULT_GROUPS = (
    "task",
    "experiment",
    "debug",
    "trainer",
    "precision",
    "compile",
    "sweep",
    "launcher",
    "logger",
    "callbacks",
)
#: Sections whose keys are constructor arguments: any key may be set without ``+``, and the
#: runner checks it against the class's signature (with a better message than Hydra's).
ARGUMENT_SECTIONS = ("task", "datamodule", "trainer")


def primary_config_dir() -> str:
    """The folder of the library's own configs (``tasks.conf``), wherever ``tasks`` comes from:
    a wheel, an editable install or a source checkout (see ``_registry.SOURCE_PACKAGE_DIRS``)."""
    from tasks.errors import ConfigError

    root = _registry.package_dir(PRIMARY_CONFIG_MODULE)
    if root is None or not (root / "config.yaml").is_file():
        raise ConfigError(
            f"the library's configs ({PRIMARY_CONFIG_MODULE}) are missing from this "
            "installation of lightning-tasks; reinstall it (pip install --force-reinstall "
            "lightning-tasks)"
        )
    return str(root)


def config_search_paths() -> list[tuple[str, str]]:
    """``(provider, file://folder)`` for every registered config package that exists.

    Folders, not ``pkg://`` modules: Hydra would import a plugin's package (running its
    ``__init__``) to read ``pkg://`` configs, so one plugin that fails at import would
    break every run; a folder is read as files and only the chosen task is imported.
    """
    paths = []
    for entry in _registry.entries("config").values():
        root = _registry.package_dir(entry.module)
        if root is not None:
            paths.append((f"lightning-tasks:{entry.distribution}", f"file://{root}"))
    return paths


#: Folders this process claimed with ``${unique_dir:...}``, by the path asked for.
_CLAIMED: dict[str, str] = {}


def claim_new_dir(path: str, remember: bool = True) -> str:
    """``path``, or ``path_2``, ``path_3``, ...: the first that does not exist yet, created
    here (``mkdir`` is atomic), so runs started in the same second never share a folder.
    With ``remember`` (Hydra resolves its run folder more than once per run), asking again
    in the same process returns the same folder."""
    import os

    if remember and path in _CLAIMED:
        return _CLAIMED[path]
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    candidate, number = path, 1
    while True:
        try:
            os.mkdir(candidate)
            break
        except FileExistsError:
            number += 1
            candidate = f"{path}_{number}"
    if remember:
        _CLAIMED[path] = candidate
    return candidate


def register_resolvers() -> None:
    """``${direction:${monitor_mode}}``: ``maximize`` for ``max``, else ``minimize`` (sweepers
    optimise the preset's monitored score in its own direction); ``${unique_dir:PATH}``: see
    :func:`claim_new_dir`. Idempotent."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("direction"):
        OmegaConf.register_new_resolver(
            "direction", lambda mode: "maximize" if str(mode) == "max" else "minimize"
        )
    if not OmegaConf.has_resolver("unique_dir"):
        OmegaConf.register_new_resolver("unique_dir", claim_new_dir)


def register_search_path_plugin() -> None:
    """Put every registered config package on Hydra's search path (idempotent); register
    the config resolvers."""
    register_resolvers()
    from hydra.core.plugins import Plugins
    from hydra.plugins.search_path_plugin import SearchPathPlugin

    class LightningTasksSearchPath(SearchPathPlugin):
        def manipulate_search_path(self, search_path) -> None:  # type: ignore[no-untyped-def]
            present = {element.path for element in search_path.get_path()}
            for provider, path in config_search_paths():
                if path not in present:
                    search_path.append(provider=provider, path=path)

    plugins = Plugins.instance()
    if not any(
        cls.__name__ == LightningTasksSearchPath.__name__
        for cls in plugins.discover(SearchPathPlugin)
    ):
        plugins.register(LightningTasksSearchPath)


def normalize_overrides(overrides: Sequence[str]) -> list[str]:
    """Accept ``+task=x`` and ``task=x`` alike, let ``task.*``/``datamodule.*`` keys be set
    whether or not the preset lists them, and check preset names before Hydra does.

    Raises:
        UnknownNameError: a ``task=NAME`` names no installed preset (lists close matches).
    """
    out = []
    known = functools.cache(_known_keys)  # read once for all the overrides, if at all
    for item in overrides:
        key, sep, value = item.partition("=")
        bare = key.lstrip("+")
        if sep and not key.startswith(("+", "~")):
            _check_known_key(bare, known)
        if sep and bare.split(".")[0] in ARGUMENT_SECTIONS and "." in bare:
            item = f"++{bare}={value}"
        elif sep and bare in DEFAULT_GROUPS:
            item = f"{bare}={value}"
            if bare == "task":
                for name in _sweep_choices(value):
                    _registry.get_preset(name)
        out.append(item)
    return out


def config_groups() -> set[str]:
    """Config groups (sub-folders) of every registered config package, plugins' included."""
    groups: set[str] = set()
    for _, url in config_search_paths():
        root = Path(url.removeprefix("file://"))
        groups |= {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_")}
    return groups


def _known_keys() -> tuple[dict[str, Any], set[str]]:
    """The primary config's settings (``sample`` with its own keys), without Hydra's, and the
    config groups of every registered config package."""
    from omegaconf import OmegaConf

    config = OmegaConf.to_container(OmegaConf.load(f"{primary_config_dir()}/config.yaml"))
    assert isinstance(config, dict)
    config.pop("defaults", None)
    config.pop("hydra", None)
    return config, config_groups()


def _check_known_key(
    key: str, known_keys: Callable[[], tuple[dict[str, Any], set[str]]] = _known_keys
) -> None:
    """A misspelt setting gets the closest real one (Hydra's own advice, ``+KEY=...``, would
    add the misspelt key and fail later with a TypeError).

    Raises:
        ConfigError: ``key`` is no setting of the config.
    """
    from tasks.errors import ConfigError, did_you_mean

    head, _, rest = key.partition(".")
    if head in ("hydra", *DEFAULT_GROUPS, *ARGUMENT_SECTIONS) or head.startswith("hydra"):
        return
    if "/" in head:  # a group path: Hydra's to check
        return
    known, groups = known_keys()
    if head in groups:  # a group of ours or of a plugin's configs
        return
    if head not in known:
        hint = did_you_mean(head, [*known, *DEFAULT_GROUPS, *ARGUMENT_SECTIONS])
        raise ConfigError(
            f"{key} is not a setting.{hint} Settings: {', '.join(sorted(known))}; groups: "
            f"{', '.join(DEFAULT_GROUPS)} (add a new key on purpose with +{key}=...)"
        )
    section = known[head]
    if rest and isinstance(section, dict) and rest.split(".")[0] not in section:
        name = rest.split(".")[0]
        hint = did_you_mean(name, list(section), render=lambda c: f"{head}.{c}")
        raise ConfigError(
            f"{head}.{name} is not a setting.{hint} {head}.* settings: {', '.join(section)}"
        )


def _sweep_choices(value: str) -> list[str]:
    """Preset names in ``a`` or a multirun list ``a,b``; sweep functions are left to Hydra."""
    if any(ch in value for ch in "()[]{}$*"):
        return []
    return [v.strip() for v in value.split(",") if v.strip()]
