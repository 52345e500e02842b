"""Generate docs/api.md, the API reference for plugin authors, from the docstrings.

Usage (from the checkout root)::

    python tools/api_reference.py          # write docs/api.md
    python tools/api_reference.py --check  # exit 1 when docs/api.md is stale or a rule breaks

The page covers what a plugin or a subclass uses: the names of ``tasks.__all__``, every
:class:`~tasks.base.BaseTask` hook (signature, docstring and what calls it), the built-in
tasks with all their constructor arguments, :class:`~datamodules.base.BaseDataModule` and its
hooks, the datamodules of ``datamodules.__all__``, the conformance kit ``tasks.testing`` and
the errors. Docstrings are the one source: a hook's docstring says what calls it in a
Google-style ``Called by:`` section. ``PENDING`` holds that text for modules that cannot take
it yet; an entry is used only while the real docstring lacks a ``Called by:`` section, and
:func:`problems` asks for its removal once the docstring has one.

Standard library only (plus importing the library itself); tests/test_api_docs.py checks that
the checked-in page equals :func:`render` and that :func:`problems` finds nothing.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import inspect
import re
import sys
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "api.md"
REGENERATE = "python tools/api_reference.py"

#: BaseTask methods a task overrides, in the order a batch meets them.
TASK_HOOKS = (
    "configure_model",
    "configure_loss",
    "configure_metrics",
    "forward",
    "augmentable",
    "augment_batch",
    "step_outputs",
    "model_step",
    "penalty",
    "metric_inputs",
    "record_test_outputs",
    "baseline_output",
    "predict_outputs",
    "log_epoch_extras",
    "summary_notes",
    "save_artifacts",
)
#: Task hooks through which data and its units flow: a built-in task that overrides one
#: documents its override (what it receives, in which units, what it returns).
DATA_FLOW_HOOKS = (
    "forward",
    "step_outputs",
    "model_step",
    "metric_inputs",
    "record_test_outputs",
    "baseline_output",
    "predict_outputs",
    "predict_step",
)
#: Lightning hooks the built-in tasks override (listed per task, without their text).
LIGHTNING_HOOKS = (
    "on_fit_start",
    "on_train_epoch_start",
    "training_step",
    "on_validation_epoch_start",
    "validation_step",
    "on_validation_epoch_end",
    "on_test_epoch_start",
    "test_step",
    "on_test_epoch_end",
)
#: BaseDataModule methods a datamodule overrides.
DATAMODULE_HOOKS = (
    "setup_fit",
    "setup_predict",
    "data_facts",
    "predictions_frame",
    "collate",
    "state_dict",
    "load_state_dict",
    "setup",
    # cross-validation (mode=cv)
    "cv_rows",
    "use_test_for_predict",
    "fold_predictions",
    # bundles, ONNX and serving
    "input_signature",
    "example_inputs",
    "predict_inputs",
    "input_encoder",
)
#: BaseDataModule methods a datamodule calls (or tasks.cv calls on it).
DATAMODULE_HELPERS = ("check_predict_ready", "use_fold", "split_rows", "fold_periods")
#: "Bring your own data" hooks of the built-in datamodule families.
OWN_DATA_HOOKS = ("load_frame", "load_splits", "load_arrays")

# Docstrings for modules that others were editing when this page was introduced: the text to
# put into the source (then delete the entry here; tests/test_api_docs.py says when).
PENDING: dict[str, str] = {}

_ROLE = re.compile(r":(?:meth|func|class|attr|mod|data|exc|obj):`(~?)([^`]+)`")
_SECTION = re.compile(r"^(Args|Returns|Raises|Called by):\s*$")
_ARG = re.compile(r"^(\*{0,2}\w+)(?: \([^)]*\))?:(?:\s+(.*))?$")
_ATTRIBUTE = re.compile(r"^\s*(?:self\.)?([A-Za-z]\w*)\s*(?::[^=]+)?=")


# -- reading the code --------------------------------------------------------------------------
def load(path: str) -> Any:
    """The object at ``module:qualname`` (or a module)."""
    module, _, qualname = path.partition(":")
    obj: Any = importlib.import_module(module)
    for part in filter(None, qualname.split(".")):
        obj = getattr(obj, part)
    return obj


def qualified(owner: Any, name: str | None = None) -> str:
    """``module.Qualname[.name]`` of a class or function (and a member)."""
    base = f"{owner.__module__}.{owner.__qualname__}"
    return f"{base}.{name}" if name else base


def defining_class(cls: type, name: str) -> type:
    """The class of ``cls``'s MRO whose own namespace holds ``name``."""
    return next(k for k in cls.__mro__ if name in vars(k))


def member(cls: type, name: str) -> Any:
    """The function ``name`` as ``cls`` resolves it (unwrapped from staticmethod etc.)."""
    value = vars(defining_class(cls, name))[name]
    return getattr(value, "__func__", value)


def own_doc(obj: Any, key: str) -> str:
    """The docstring written on ``obj`` itself (never one inherited from Lightning), or the
    ``PENDING`` text for ``key`` while the docstring lacks a ``Called by:`` section."""
    doc = inspect.cleandoc(obj.__doc__ or "") if isinstance(obj.__doc__, str) else ""
    pending = PENDING.get(key)
    if pending is not None and not has_section(doc, "Called by"):
        return inspect.cleandoc(pending)
    return doc


def has_section(doc: str, name: str) -> bool:
    return any(line.strip() == f"{name}:" for line in doc.splitlines())


def sections(doc: str) -> dict[str, list[str]]:
    """Google-style sections of a cleaned docstring: ``""`` (the text before the first) and
    ``Args``, ``Returns``, ``Raises``, ``Called by`` (dedented bodies)."""
    out: dict[str, list[str]] = {"": []}
    current = ""
    for line in doc.splitlines():
        match = _SECTION.match(line)
        if match:
            current = match.group(1)
            out[current] = []
        elif current and line and not line.startswith(" "):
            current = ""  # text after a section, back at the left margin
            out[""].append(line)
        else:
            out[current].append(line)
    for name, lines in out.items():
        if name:  # dedent, not cleandoc: continuation lines keep their extra indent
            out[name] = textwrap.dedent("\n".join(lines)).strip("\n").splitlines()
    return out


def documented_args(doc: str, section: str = "Args") -> dict[str, str]:
    """``{name: description}`` of a docstring's ``Args:`` (or ``Raises:``) section."""
    args: dict[str, str] = {}
    name = None
    for line in sections(doc).get(section, []):
        match = _ARG.match(line) if not line.startswith(" ") else None
        if match:
            name = match.group(1)
            args[name] = match.group(2) or ""
        elif name is not None:
            args[name] = f"{args[name]} {line.strip()}".strip()
    return args


def parameters(function: Callable[..., Any]) -> list[str]:
    """Parameter names as an ``Args:`` section lists them (``*inputs``, ``**kwargs``)."""
    stars = {inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**"}
    return [
        stars.get(p.kind, "") + p.name
        for p in inspect.signature(function).parameters.values()
        if p.name not in ("self", "cls")
    ]


def attribute_comments(source_of: Any) -> dict[str, str]:
    """``#:`` comments above assignments (class attributes, ``self.x`` in methods, module
    constants) in the source of a class or module: ``{name: comment}``."""
    comments: dict[str, str] = {}
    block: list[str] = []
    depth = None
    for line in inspect.getsource(source_of).splitlines():
        stripped = line.strip()
        if stripped.startswith("#:"):
            block.append(stripped[2:].strip())
            depth = len(line) - len(stripped)
            continue
        match = _ATTRIBUTE.match(line)
        if block and match and len(line) - len(line.lstrip()) == depth:
            comments.setdefault(match.group(1), " ".join(block))
        block = []
    return comments


def annotation(value: Any) -> str:
    if isinstance(value, str):
        return value
    return inspect.formatannotation(value)


def format_parameter(p: inspect.Parameter) -> str:
    prefix = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "")
    text = prefix + p.name
    if p.annotation is not p.empty:
        text += f": {annotation(p.annotation)}"
    if p.default is not p.empty:
        text += f" = {p.default!r}"
    return text


def signature(function: Callable[..., Any], name: str, width: int = 88) -> str:
    """``def name(self, ...) -> ret`` on one line, or one parameter per line."""
    sig = inspect.signature(function)
    params = [format_parameter(p) for p in sig.parameters.values()]
    result = ""
    if sig.return_annotation is not sig.empty:
        result = f" -> {annotation(sig.return_annotation)}"
    line = f"def {name}({', '.join(params)}){result}"
    if len(line) <= width:
        return line
    body = "".join(f"    {p},\n" for p in params)
    return f"def {name}(\n{body}){result}"


def constructor(cls: type, stop: type) -> str:
    """Every constructor argument of ``cls``, following ``**kwargs`` down the ``__init__``
    chain to ``stop`` (inclusive), grouped by the class that takes it."""
    lines = [f"{cls.__name__}("]
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None:
            continue
        params = [p for p in inspect.signature(init).parameters.values() if p.name != "self"]
        named = [p for p in params if p.kind != p.VAR_KEYWORD]
        if klass is not cls and named:
            lines.append(f"    # from {klass.__name__}")
        lines += [f"    {format_parameter(p)}," for p in named]
        if klass is stop or not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    lines.append(")")
    return "\n".join(lines)


def builtin_entry_points(group: str) -> list[tuple[str, str]]:
    """``(name, module:Class)`` that this repository's pyproject.toml registers in ``group``,
    by name (read from the checkout, so a stale installed metadata cannot change the page)."""
    entries: list[tuple[str, str]] = []
    inside = False
    for line in (ROOT / "pyproject.toml").read_text(encoding="utf-8").splitlines():
        if line.startswith("["):
            inside = line.strip() == f'[project.entry-points."{group}"]'
            continue
        match = re.match(r'^\s*([\w.-]+)\s*=\s*"([^"]+)"', line) if inside else None
        if match:
            entries.append((match.group(1), match.group(2)))
    return sorted(entries)


# -- rendering ---------------------------------------------------------------------------------
def inline(text: str) -> str:
    """Sphinx roles and double backticks as Markdown code."""

    def role(match: re.Match[str]) -> str:
        target = match.group(2)
        return f"`{target.rsplit('.', 1)[-1] if match.group(1) else target}`"

    return _ROLE.sub(role, text).replace("``", "`")


def prose(lines: Iterable[str]) -> list[str]:
    """Docstring text as Markdown: a paragraph ending in ``::`` opens a code block."""
    out: list[str] = []
    code = False

    def close() -> None:
        while out and not out[-1]:
            out.pop()
        out.extend(["```", ""])

    for line in lines:
        if code:
            if line and not line.startswith(" "):
                close()
                code = False
            else:
                if line.strip() or out[-1] != "```python":
                    out.append(line[4:] if line.strip() else "")
                continue
        if line.rstrip().endswith("::"):
            out += [inline(line.rstrip()[:-1]), "", "```python"]
            code = True
            continue
        out.append(inline(line))
    if code:
        close()
    return out


def render_doc(doc: str) -> list[str]:
    """A Google-style docstring as Markdown: text, then Args as a list, then the rest."""
    parts = sections(doc)
    out = prose(parts[""])
    while out and not out[-1]:
        out.pop()
    args = documented_args(doc)
    if args:
        out += ["", "**Args**", ""]
        out += [f"- `{name}`: {inline(text)}" for name, text in args.items()]
    raises = documented_args(doc, "Raises")
    if raises:
        out += ["", "**Raises**", ""]
        out += [f"- `{name}`: {inline(text)}" for name, text in raises.items()]
    for name in ("Returns", "Called by"):
        body = parts.get(name)
        if body:
            text = " ".join(line.strip() for line in body)
            out += ["", f"**{name}:** {inline(text)}"]
    return out


def anchor(title: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"[^\w\- ]", "", title.strip().lower())
    return text.replace(" ", "-")


@dataclass
class Page:
    """The page being written and what it covers (for :func:`problems`)."""

    lines: list[str] = field(default_factory=list)
    #: ``(name, docstring)`` of everything the page documents
    documented: list[tuple[str, str]] = field(default_factory=list)
    #: ``(name, docstring, parameter names)`` of the hooks: each needs ``Called by:``
    hooks: list[tuple[str, str, list[str]]] = field(default_factory=list)
    #: ``(name, class docstring, constructor parameters)``: each is listed under ``Args:``
    constructors: list[tuple[str, str, list[str]]] = field(default_factory=list)

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def heading(self, level: int, title: str) -> None:
        self.add(f"{'#' * level} {title}", "")

    def code(self, text: str) -> None:
        self.add("```python", text, "```", "")

    def doc(self, name: str, doc: str) -> None:
        self.documented.append((name, doc))
        self.add(*render_doc(doc), "")

    def method(self, cls: type, name: str, label: str, hook: bool, level: int = 4) -> None:
        function = member(cls, name)
        owner = defining_class(cls, name)
        doc = own_doc(function, qualified(owner, name))
        self.heading(level, f"{label}.{name}")
        self.code(signature(function, name))
        if hook:
            self.hooks.append((f"{label}.{name}", doc, parameters(function)))
        self.doc(f"{label}.{name}", doc)

    def function(self, function: Callable[..., Any], label: str, level: int = 3) -> None:
        self.heading(level, label)
        self.code(signature(function, function.__name__))
        self.doc(label, own_doc(function, qualified(function)))

    def attributes(self, source: Any, names: Iterable[str], owner: Any = None) -> None:
        comments = attribute_comments(source)
        rows = []
        for name in names:
            value = getattr(owner, name, None) if owner is not None else None
            shown = f"`{name} = {value!r}`" if owner is not None else f"`{name}`"
            comment = comments.get(name, "")  # a missing ``#:`` comment is a problem()
            rows.append(f"- {shown}: {inline(comment)}")
            self.documented.append((name, comment))
        self.add(*rows, "")


def summary(obj: Any) -> str:
    doc = inspect.cleandoc(obj.__doc__ or "") if isinstance(obj.__doc__, str) else ""
    return inline(doc.split("\n\n")[0].replace("\n", " "))


def _tasks_package(page: Page) -> None:
    import tasks
    from tasks import errors
    from tasks.base import BaseTask

    page.heading(2, "The `tasks` package")
    page.add(
        "`tasks.__all__`: import these from `tasks` (they load on first use, so importing "
        "`tasks` stays cheap).",
        "",
        "| name | defined in | what |",
        "| --- | --- | --- |",
    )
    for name in tasks.__all__:
        value = getattr(tasks, name)
        if not (inspect.isclass(value) or inspect.isfunction(value)):
            continue
        if value is BaseTask:
            section = "Task hooks: `tasks.BaseTask`"
        elif value.__module__ == errors.__name__:
            section = "Errors and warnings: `tasks.errors`"
        elif inspect.isclass(value):
            section = qualified(value)
        else:
            section = f"tasks.{name}"
        page.documented.append((f"tasks.{name}", own_doc(value, qualified(value))))
        page.add(f"| [`{name}`](#{anchor(section)}) | `{value.__module__}` | {summary(value)} |")
    page.add("")
    comments = attribute_comments(tasks)
    page.add(
        f"- `API_VERSION = {tasks.API_VERSION!r}`: {inline(comments.get('API_VERSION', ''))}",
        "- `__version__`: the release of lightning-tasks, a string such as `'0.1.0'`.",
        "",
    )
    page.documented.append(("tasks.API_VERSION", comments.get("API_VERSION", "")))
    for name in tasks.__all__:
        value = getattr(tasks, name)
        if inspect.isfunction(value):
            page.function(value, f"tasks.{name}")


def _base_task(page: Page) -> None:
    from tasks import fused
    from tasks.base import BaseTask, TaskCore

    page.heading(2, "Task hooks: `tasks.BaseTask`")
    page.code(constructor(BaseTask, BaseTask))
    page.doc("tasks.BaseTask", own_doc(BaseTask, qualified(BaseTask)))
    page.constructors.append(
        ("tasks.BaseTask", own_doc(BaseTask, qualified(BaseTask)), parameters(BaseTask.__init__))
    )
    page.add("Class attributes:", "")
    page.attributes(TaskCore, ("main_metric", "shared_arguments"), TaskCore)
    page.add(
        "The hooks below are what a task overrides, in the order a batch meets them. Each "
        "says what calls it, when and with what: the network output reaches "
        "`metric_inputs`, `record_test_outputs`, `baseline_output` and `predict_outputs` "
        "*raw* (logits, standardised values), and each of them converts it itself. "
        "Lightning's own hooks work as usual (the built-in tasks reset test accumulators "
        "in `on_test_epoch_start` and gather them in `on_test_epoch_end`); overriding one "
        "of these makes training take one optimizer step per Lightning step "
        "(`steps_per_execution`, docs/scaling.md): "
        + ", ".join(f"`{name}`" for name in fused.BATCH_HOOKS)
        + ".",
        "",
    )
    for name in TASK_HOOKS:
        page.method(BaseTask, name, "BaseTask", hook=True, level=3)


def _builtin_tasks(page: Page) -> None:
    from tasks import fused
    from tasks.base import BaseTask

    entries = builtin_entry_points("lightning_tasks.tasks")
    page.heading(2, "Built-in tasks")
    page.add(
        "Registered by this distribution (`task._name_=NAME`); subclass them as in "
        "[Subclassing](subclassing.md). What their batches hold and which units each hook "
        "sees: [Data flow of the built-in tasks](plugins.md#data-flow-of-the-built-in-tasks).",
        "",
        "| name | class | main metric | what |",
        "| --- | --- | --- | --- |",
    )
    classes = [(name, load(value)) for name, value in entries]
    for name, cls in classes:
        page.add(f"| `{name}` | `{qualified(cls)}` | `{cls.main_metric}` | {summary(cls)} |")
    page.add("")
    for name, cls in classes:
        page.heading(3, qualified(cls))
        page.add(f"Registered as `{name}`; `main_metric = {cls.main_metric!r}`.", "")
        page.code(constructor(cls, BaseTask))
        doc = own_doc(cls, qualified(cls))
        page.doc(qualified(cls), doc)
        page.constructors.append((qualified(cls), doc, parameters(vars(cls)["__init__"])))
        overridden = [
            hook
            for hook in (*TASK_HOOKS, "predict_step")
            if member(cls, hook) is not member(BaseTask, hook)
        ]
        rows = []
        for hook in overridden:
            owner = defining_class(cls, hook)
            hook_doc = own_doc(member(cls, hook), qualified(owner, hook))
            if hook in DATA_FLOW_HOOKS:
                page.documented.append((f"{qualified(owner, hook)} (override)", hook_doc))
            text = inline(" ".join(hook_doc.split("\n\n")[0].split()))
            where = "" if owner is cls else f" (from `{owner.__name__}`)"
            rows.append(f"- `{hook}`{where}" + (f": {text}" if text else ""))
        page.add("Overrides:", "", *rows, "")
        lightning = [h for h in LIGHTNING_HOOKS if getattr(cls, h) is not getattr(BaseTask, h)]
        if lightning:
            single = [h for h in lightning if h in fused.BATCH_HOOKS]
            page.add(
                "Lightning hooks it overrides: "
                + ", ".join(f"`{h}`" for h in lightning)
                + (
                    f" (`{'`, `'.join(single)}`: training takes one optimizer step per "
                    "Lightning step)."
                    if single
                    else "."
                ),
                "",
            )


def _datamodules(page: Page) -> None:
    import datamodules
    from datamodules.base import BaseDataModule
    from datamodules.tabular import TabularDataModule

    page.heading(2, "Datamodules: `datamodules`")
    page.add("`datamodules.__all__`:", "", "| name | what |", "| --- | --- |")
    for name in datamodules.__all__:
        value = getattr(datamodules, name)
        page.add(f"| `{name}` | {summary(value)} |")
    page.add("")

    page.heading(3, "datamodules.BaseDataModule")
    page.code(constructor(BaseDataModule, BaseDataModule))
    doc = own_doc(BaseDataModule, qualified(BaseDataModule))
    page.doc("datamodules.BaseDataModule", doc)
    page.constructors.append(
        ("datamodules.BaseDataModule", doc, parameters(BaseDataModule.__init__))
    )
    page.add("Attributes:", "")
    page.attributes(BaseDataModule, ("not_hyperparameters", "fitted_state", "steps_per_execution"))
    page.add(
        "The hooks a datamodule overrides; the loaders (`train_dataloader`, ...) are "
        "Lightning's, and a datamodule that overrides `train_dataloader` or "
        "`val_dataloader` trains one optimizer step per Lightning step.",
        "",
    )
    for name in DATAMODULE_HOOKS:
        page.method(BaseDataModule, name, "BaseDataModule", hook=True)
    page.add(
        "Helpers: `check_predict_ready` for `setup_predict`; `use_fold` (called by "
        "`tasks.cv`), `split_rows` and `fold_periods` for a `setup_fit` that supports "
        "cross-validation:",
        "",
    )
    for name in DATAMODULE_HELPERS:
        page.method(BaseDataModule, name, "BaseDataModule", hook=False)

    for name in datamodules.__all__:
        value = getattr(datamodules, name)
        if value is BaseDataModule:
            continue
        if inspect.isclass(value):
            page.heading(3, f"datamodules.{name}")
            stop = BaseDataModule if issubclass(value, BaseDataModule) else value
            page.code(constructor(value, stop))
            doc = own_doc(value, qualified(value))
            page.doc(f"datamodules.{name}", doc)
            page.constructors.append((f"datamodules.{name}", doc, parameters(value.__init__)))
            if value is TabularDataModule:
                page.method(TabularDataModule, "load_frame", "TabularDataModule", hook=True)
        else:
            page.function(value, f"datamodules.{name}")

    page.heading(3, "Built-in datamodules")
    page.add(
        "Registered by this distribution (`datamodule._name_=NAME`). A subclass that "
        "overrides the family's own-data hook (and sets no file) feeds its own data "
        "through the same checks, preprocessing and splits.",
        "",
        "| name | class | own-data hook | what |",
        "| --- | --- | --- | --- |",
    )
    for name, value in builtin_entry_points("lightning_tasks.datamodules"):
        cls = load(value)
        hooks = [hook for hook in OWN_DATA_HOOKS if hasattr(cls, hook)]
        for hook in hooks:  # documented where the family declares it
            family = next(k for k in reversed(cls.__mro__) if hook in vars(k))
            page.documented.append((qualified(family, hook), own_doc(vars(family)[hook], "")))
        shown = ", ".join(f"`{h}()`" for h in hooks) or "-"
        page.add(f"| `{name}` | `{qualified(cls)}` | {shown} | {summary(cls)} |")
    page.add("")


def _testing(page: Page) -> None:
    from tasks import testing

    page.heading(2, "Conformance kit: `tasks.testing`")
    page.add(*prose(inspect.cleandoc(testing.__doc__ or "").splitlines()), "")
    page.documented.append(("tasks.testing", testing.__doc__ or ""))
    for name in testing.__all__:
        page.function(getattr(testing, name), f"tasks.testing.{name}")


def _errors(page: Page) -> None:
    import tasks
    from tasks import errors

    page.heading(2, "Errors and warnings: `tasks.errors`")
    page.add(
        "A `UserError` ends a CLI run with its one-line message and exit code 2. "
        "Names exported from `tasks` are marked *(tasks)*.",
        "",
    )
    classes = [
        value
        for value in vars(errors).values()
        if inspect.isclass(value) and value.__module__ == errors.__name__
    ]
    classes.sort(key=lambda c: inspect.getsourcelines(c)[1])
    for cls in classes:
        bases = ", ".join(b.__name__ for b in cls.__bases__)
        exported = " *(tasks)*" if cls.__name__ in tasks.__all__ else ""
        doc = own_doc(cls, qualified(cls))
        page.documented.append((qualified(cls), doc))
        text = inline(" ".join(doc.split()))
        page.add(f"- `{cls.__name__}({bases})`{exported}: {text}")
    page.add("")


def build() -> Page:
    """The page and what it documents."""
    page = Page()
    page.add(
        "# API reference",
        "",
        "<!-- Generated from the docstrings by tools/api_reference.py: do not edit. -->",
        "",
        f"Generated from the docstrings by `tools/api_reference.py`; after changing a "
        f"docstring or a signature, run `{REGENERATE}` (`tests/test_api_docs.py` fails while "
        "this page is stale). It covers what a plugin or a subclass uses "
        "([Writing a plugin](plugins.md), [Subclassing](subclassing.md)); names that start "
        "with `_` are private. Everything here follows the version contract, "
        "`tasks.API_VERSION`.",
        "",
    )
    parts = [
        ("The `tasks` package", _tasks_package),
        ("Task hooks: `tasks.BaseTask`", _base_task),
        ("Built-in tasks", _builtin_tasks),
        ("Datamodules: `datamodules`", _datamodules),
        ("Conformance kit: `tasks.testing`", _testing),
        ("Errors and warnings: `tasks.errors`", _errors),
    ]
    page.add(*(f"- [{title}](#{anchor(title)})" for title, _ in parts), "")
    for _, part in parts:
        part(page)
    while page.lines and not page.lines[-1]:
        page.lines.pop()
    return page


def render() -> str:
    """The text of docs/api.md."""
    return "\n".join(build().lines) + "\n"


# -- the documentation rules -------------------------------------------------------------------
def problems(page: Page | None = None) -> list[str]:
    """What breaks the rules: an undocumented name; a hook without ``Called by:`` or with an
    argument missing from ``Args:``; a constructor argument missing from its class's
    ``Args:``; a ``PENDING`` entry that is stale or no longer needed."""
    page = page or build()
    found = [f"{name}: no docstring" for name, doc in dict(page.documented).items() if not doc]

    def undocumented(doc: str, params: list[str]) -> list[str]:
        args = documented_args(doc)
        return [p for p in params if p not in args and p.lstrip("*") not in args]

    for name, doc, params in page.hooks:
        if not doc.strip():
            continue
        if not has_section(doc, "Called by"):
            found.append(f"{name}: the docstring has no 'Called by:' section")
        missing = undocumented(doc, params)
        if missing:
            found.append(f"{name}: arguments {missing} are not documented under 'Args:'")
    for name, doc, params in page.constructors:
        missing = undocumented(doc, params)
        if missing:
            found.append(f"{name}: constructor arguments {missing} are missing from 'Args:'")
    for key in PENDING:
        owner, _, name = key.rpartition(".")
        module, _, cls = owner.rpartition(".")
        try:
            obj = vars(load(f"{module}:{cls}"))[name]
        except (ImportError, AttributeError, KeyError):
            found.append(f"PENDING[{key!r}] names nothing: delete it in tools/api_reference.py")
            continue
        obj = getattr(obj, "__func__", obj)
        if has_section(inspect.cleandoc(obj.__doc__ or ""), "Called by"):
            found.append(
                f"{key} now documents 'Called by:' itself: delete its PENDING entry in "
                "tools/api_reference.py"
            )
    return found


def stale_message(current: str, expected: str) -> str:
    diff = difflib.unified_diff(
        current.splitlines(), expected.splitlines(), "docs/api.md", "generated", lineterm="", n=1
    )
    shown = "\n".join(list(diff)[:40])
    return f"docs/api.md is stale: regenerate it with `{REGENERATE}`\n{shown}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="check docs/api.md, write nothing")
    args = parser.parse_args(argv)
    page = build()
    text = "\n".join(page.lines) + "\n"
    found = problems(page)
    for problem in found:
        print(f"error: {problem}", file=sys.stderr)
    if args.check:
        current = PAGE.read_text(encoding="utf-8") if PAGE.is_file() else ""
        if current != text:
            print(stale_message(current, text), file=sys.stderr)
            return 1
        return 1 if found else 0
    tmp = PAGE.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8", newline="\n")
    tmp.replace(PAGE)
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
