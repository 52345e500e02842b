"""What a task class declares about itself, checked: inherited options its overrides ignore,
constructor arguments that shadow a base task's, and what it needs of its datamodule.

:class:`~tasks.base.TaskCore` warns about shadowed arguments when a task class is created;
the runner refuses ignored options; the conformance kit (:mod:`tasks.testing`) runs all
three checks on a plugin's task.
"""

from __future__ import annotations

from typing import Any


def _method_calls(function: Any, name: str) -> list[Any] | None:
    """The calls ``<something>.NAME(...)`` in ``function``'s source (``ast.Call`` nodes), or
    None when its source cannot be read."""
    import ast
    import inspect
    import textwrap

    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError, SyntaxError):
        return None
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == name
    ]


def _calls_super(function: Any, name: str) -> bool:
    """Whether ``function``'s source calls ``super().NAME(...)`` (unknown source: True)."""
    import ast

    calls = _method_calls(function, name)
    if calls is None:
        return True
    return any(
        isinstance(call.func.value, ast.Call)
        and isinstance(call.func.value.func, ast.Name)
        and call.func.value.func.id == "super"
        for call in calls
    )


def ignored_options(cls: type) -> dict[str, tuple[str, type]]:
    """Constructor arguments of a base class that ``cls`` ignores because it replaces the
    hook that reads them: ``{argument: (hook, the base class)}``.

    A base declares what each hook reads in ``option_hooks``; an override that calls the
    base's hook through ``super()`` still reads them.
    """
    found: dict[str, tuple[str, type]] = {}
    for base in cls.__mro__[1:]:
        for hook, options in vars(base).get("option_hooks", {}).items():
            own = getattr(cls, hook)
            if own is vars(base).get(hook) or _calls_super(own, hook):
                continue
            for option in options:
                found.setdefault(option, (hook, base))
    return found


def declared_datamodule_reads(cls: type) -> set[str]:
    """Every attribute a task class (and its bases, mixins included) declares it reads from
    its datamodule: ``datamodule_needs`` and ``datamodule_optional``."""
    return {
        name
        for klass in cls.__mro__
        for attribute in ("datamodule_needs", "datamodule_optional")
        for name in vars(klass).get(attribute, ())
    }


def datamodule_value(task: Any, datamodule: Any, name: str, default: Any = None) -> Any:
    """``datamodule.NAME`` for ``task``, or ``default`` when there is no datamodule or it
    has no such attribute. Every read a built-in task makes beyond ``data_facts()`` goes
    through here, so the class's declarations stay the whole contract.

    Raises:
        TypeError: ``task``'s class declares ``NAME`` in neither ``datamodule_needs`` nor
            ``datamodule_optional`` (a programming error, found by any test that runs it).
    """
    if name not in declared_datamodule_reads(type(task)):
        raise TypeError(
            f"{type(task).__name__} reads datamodule.{name} without declaring it: add "
            f"{name!r} to its datamodule_needs (required) or datamodule_optional"
        )
    return default if datamodule is None else getattr(datamodule, name, default)


def missing_datamodule_needs(task: Any, datamodule: Any) -> list[str]:
    """The attributes of ``type(task).datamodule_needs`` that ``datamodule`` lacks."""
    return [
        name
        for name in getattr(type(task), "datamodule_needs", ())
        if not hasattr(datamodule, name)
    ]


def _forwarded_to_super(init: Any) -> set[str]:
    """Arguments ``init`` passes on by name to a base ``__init__`` (``name=name``)."""
    import ast

    return {
        keyword.arg
        for call in _method_calls(init, "__init__") or ()
        for keyword in call.keywords
        if keyword.arg and isinstance(keyword.value, ast.Name) and keyword.value.id == keyword.arg
    }


def shadowed_arguments(cls: type) -> dict[str, type]:
    """Constructor arguments of ``cls`` that a base task class already takes but that
    ``cls`` does not pass on to it: ``{name: the base class that takes it}``.

    One ``hparams`` value then drives two things (a focal loss's ``gamma`` would also be the
    scheduler's decay factor). Listing a name in the class attribute ``shared_arguments``
    says it is meant to be the same setting.
    """
    import inspect

    from tasks.base import TaskCore

    init = cls.__dict__.get("__init__")
    if init is None:
        return {}

    def named(function: Any) -> set[str]:
        return {
            p.name
            for p in inspect.signature(function).parameters.values()
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name != "self"
        }

    own = named(init) - _forwarded_to_super(init) - set(getattr(cls, "shared_arguments", ()))
    found: dict[str, type] = {}
    for base in cls.__mro__[1:]:
        base_init = base.__dict__.get("__init__")
        if base_init is None or not issubclass(base, TaskCore):  # a task class
            continue
        for name in own & named(base_init):
            found.setdefault(name, base)
    return found


def warn_shadowed_arguments(cls: type) -> None:
    """An :class:`~tasks.errors.ArgumentShadowWarning` per :func:`shadowed_arguments` name."""
    import warnings

    from tasks.base import TaskCore
    from tasks.errors import ArgumentShadowWarning

    for name, base in shadowed_arguments(cls).items():
        owner = "BaseTask" if base is TaskCore else base.__qualname__  # the public name
        warnings.warn(
            f"{cls.__qualname__}.__init__ takes {name!r}, which {owner} already "
            f"takes for its own purpose: both read hparams.{name}, so one setting drives "
            f"both. Rename yours (e.g. '{cls.__name__.lower()}_{name}'), pass it on with "
            f"super().__init__({name}={name}, ...), or list it in shared_arguments if it "
            "is the same setting",
            ArgumentShadowWarning,
            stacklevel=3,
        )
