"""``report.html``: one self-contained page per run folder.

The page is built from the files in the run folder alone (``summary.json``, ``config.yaml``,
``.hydra/overrides.yaml``, ``tasks.log``, ``metrics.csv``, ``doctor.json``, the plots,
``cv_summary.json``/``cv_results.csv``, ``bundle/manifest.json``) and needs no network to read:
images are embedded as base64 ``data:`` URIs, the style sheet is inline, there are no scripts
and no web fonts. A file that is missing or cannot be read becomes a line in the page; writing
the report never fails the run.
"""

from __future__ import annotations

import base64
import csv
import datetime
import html
import json
import logging
import math
import shlex
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tasks._files import write_text_atomic

log = logging.getLogger(__name__)

#: The report's file name in the run folder.
REPORT_FILE = "report.html"
#: The sections of the page, in order: (anchor, heading).
SECTIONS = (
    ("what-ran", "What ran"),
    ("data-findings", "Data findings"),
    ("training-history", "Training history"),
    ("test-metrics", "Test metrics"),
    ("plots", "Plots"),
    ("cross-validation", "Cross-validation"),
    ("export", "Export"),
    ("files", "Files"),
)
#: Image files embedded in the page, by suffix: MIME type and how the file starts.
IMAGE_TYPES = {
    ".png": ("image/png", (b"\x89PNG\r\n\x1a\n",)),
    ".jpg": ("image/jpeg", (b"\xff\xd8\xff",)),
    ".jpeg": ("image/jpeg", (b"\xff\xd8\xff",)),
    ".svg": ("image/svg+xml", ()),
}
#: Images larger than this are listed instead of embedded (the page stays openable).
MAX_IMAGE_BYTES = 20 * 2**20
#: Images embedded at most; the others are listed by name.
MAX_IMAGES = 60
#: Epochs shown in the history table at most (evenly spaced, first, last and best kept).
MAX_HISTORY_ROWS = 15
#: Rows of ``cv_results.csv`` shown at most.
MAX_CV_ROWS = 50
#: Files listed in the Files section at most.
MAX_FILES = 200
#: Lines of ``samples.txt`` shown at most.
MAX_SAMPLE_LINES = 40
#: Order of the data doctor's severities, most serious first.
SEVERITIES = ("error", "warning", "info")


def write_report(output_dir: Path) -> Path:
    """Write ``report.html`` into the run folder ``output_dir`` and return its path.

    Reads only files in ``output_dir``. Never raises for the run's sake: a missing or
    unreadable file becomes a line in the page, a section that cannot be built says why, and
    a report that cannot be written is logged as a warning (the returned path then does not
    exist).

    Args:
        output_dir: The run folder (``summary.json`` and the plots are there).

    Returns:
        The path of ``report.html`` in ``output_dir``.
    """
    folder = Path(output_dir)
    path = folder / REPORT_FILE
    try:
        text = render_report(folder)
    except Exception as exc:  # the template itself failed: a plain page that says why
        log.warning("report.html: the page could not be rendered (%s)", _reason(exc))
        text = _fallback_page(folder, exc)
    try:
        write_text_atomic(path, text)
    except OSError as exc:
        log.warning("%s could not be written (%s); the run itself is unaffected", path, exc)
    return path


def render_report(output_dir: Path) -> str:
    """The HTML of the report of the run folder ``output_dir`` (see :func:`write_report`)."""
    import jinja2

    folder = Path(output_dir)
    summary, _ = _read_json(folder / "summary.json")  # the What ran section names a problem
    if not isinstance(summary, dict):
        summary = {}
    shown: set[str] = set()  # images shown outside the Plots section
    context = {
        "title": _title(folder, summary),
        "folder": str(folder),
        "written": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "sections": [
            {"id": anchor, "heading": heading, **_section(anchor, folder, summary, shown)}
            for anchor, heading in SECTIONS
        ],
    }
    environment = jinja2.Environment(autoescape=True)
    return environment.from_string(TEMPLATE).render(**context)


# --------------------------------------------------------------------------------------------
# reading files


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _read_json(path: Path) -> tuple[Any, str | None]:
    """``(data, None)``, ``(None, None)`` when the file is absent, or ``(None, problem)``."""
    if not path.is_file():
        return None, None
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, f"{path.name} could not be read ({_reason(exc)})"


def _read_text(path: Path) -> tuple[str | None, str | None]:
    """``(text, None)``, ``(None, None)`` when the file is absent, or ``(None, problem)``."""
    if not path.is_file():
        return None, None
    try:
        return path.read_text(encoding="utf-8"), None
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"{path.name} could not be read ({_reason(exc)})"


def _run_files(folder: Path) -> list[Path]:
    """Every file the run wrote (hidden folders such as ``.hydra/`` left out), sorted."""
    files = []
    for path in sorted(folder.rglob("*")):
        parts = path.relative_to(folder).parts
        if any(p.startswith(".") for p in parts) or not path.is_file():
            continue
        files.append(path)
    return files


def _number(value: Any) -> str:
    if value is None:
        return "undefined"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{number:.4g}" if math.isfinite(number) else str(number)


def _exact(value: Any) -> str:
    """A number as it is stored (``repr`` round-trips a float), for ``data-value``."""
    if value is None:
        return "null"
    return repr(float(value)) if isinstance(value, (int, float)) else str(value)


def _duration(seconds: Any) -> str | None:
    try:
        seconds = float(seconds)
    except (TypeError, ValueError):
        return None
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _size(nbytes: int) -> str:
    size = float(nbytes)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def _image(folder: Path, path: Path) -> dict[str, Any]:
    """``{"name", "uri"}`` of an embeddable image, or ``{"name", "problem"}``."""
    name = path.relative_to(folder).as_posix()
    mime, magic = IMAGE_TYPES[path.suffix.lower()]
    try:
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            return {"name": name, "problem": f"too large to embed ({_size(size)}): open the file"}
        data = path.read_bytes()
    except OSError as exc:
        return {"name": name, "problem": f"could not be read ({_reason(exc)})"}
    if not data:
        return {"name": name, "problem": "the file is empty"}
    if magic and not data.startswith(magic):
        return {"name": name, "problem": f"not a {path.suffix.lstrip('.').upper()} image"}
    if mime == "image/svg+xml":
        try:
            head = data[:4096].decode("utf-8")
        except UnicodeDecodeError:
            return {"name": name, "problem": "not an SVG image (not UTF-8 text)"}
        if "<svg" not in head:
            return {"name": name, "problem": "not an SVG image (no <svg> element)"}
    elif not _decodes(data):
        return {"name": name, "problem": "the image is damaged (it does not decode)"}
    uri = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    return {"name": name, "uri": uri}


def _decodes(data: bytes) -> bool:
    """Whether a PNG/JPEG decodes (Pillow comes with matplotlib; without it, assume so)."""
    try:
        import io

        from PIL import Image
    except ImportError:
        return True
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Exception:  # Pillow raises many kinds of error for a damaged file
        return False
    return True


def _table(columns: list[str], rows: Iterable[Iterable[Any]]) -> dict[str, Any]:
    return {"columns": columns, "rows": [[_cell(v) for v in row] for row in rows]}


def _keys_table(rows: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """A two-column table of labels and values, without a header row."""
    return {"columns": [], "rows": [[_cell(k), _cell(v)] for k, v in rows], "kind": "keys"}


def _cell(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return {
        "text": _number(value) if numeric else ("" if value is None else str(value)),
        "numeric": numeric,
    }


# --------------------------------------------------------------------------------------------
# sections


def _section(anchor: str, folder: Path, summary: dict[str, Any], shown: set[str]) -> dict:
    """One section's content; a section that fails says why in one line."""
    builders: dict[str, Callable[[], dict[str, Any]]] = {
        "what-ran": lambda: _what_ran(folder, summary),
        "data-findings": lambda: _data_findings(folder, summary),
        "training-history": lambda: _training_history(folder, summary, shown),
        "test-metrics": lambda: _test_metrics(summary),
        "plots": lambda: _plots(folder, shown),
        "cross-validation": lambda: _cross_validation(folder),
        "export": lambda: _export(folder),
        "files": lambda: _files(folder),
    }
    content = {"lines": [], "problems": [], "tables": [], "images": [], "details": []}
    try:
        content.update(builders[anchor]())
    except Exception as exc:  # a report never fails the run
        content["problems"] = [f"This section could not be built ({_reason(exc)})."]
    return content


def _title(folder: Path, summary: dict[str, Any]) -> str:
    name = summary.get("preset") or summary.get("task") or folder.name
    return f"Run report: {name}"


def _command(folder: Path) -> tuple[str | None, str | None]:
    """The ``python -m tasks`` command line from Hydra's ``.hydra/overrides.yaml``."""
    text, problem = _read_text(folder / ".hydra" / "overrides.yaml")
    if text is None:
        return None, problem
    import yaml

    try:
        overrides = yaml.safe_load(text) or []
    except yaml.YAMLError as exc:
        return None, f".hydra/overrides.yaml could not be read ({_reason(exc)})"
    if not isinstance(overrides, list):
        return None, ".hydra/overrides.yaml holds no list of overrides"
    return shlex.join(["python", "-m", "tasks", *(str(o) for o in overrides)]), None


def _device(folder: Path, summary: dict[str, Any], config: dict[str, Any]) -> str | None:
    """What the run computed on: the summary's ``device``, the runner's ``device:`` line in
    ``tasks.log``, or else the trainer settings of ``config.yaml``."""
    if summary.get("device"):
        return str(summary["device"]).removeprefix("device: ")
    text, _ = _read_text(folder / "tasks.log")
    for line in (text or "").splitlines():
        _, sep, message = line.partition("[tasks.engine.runner][INFO] - device: ")
        if sep:
            return message.strip()
    trainer = config.get("trainer") if isinstance(config, dict) else None
    if isinstance(trainer, dict):
        parts = [
            f"{k} {trainer[k]}" for k in ("accelerator", "devices", "precision") if k in trainer
        ]
        if parts:
            return ", ".join(parts) + " (as configured; the device used is not recorded)"
    return None


def _what_ran(folder: Path, summary: dict[str, Any]) -> dict[str, Any]:
    problems, rows = [], []
    data, summary_problem = _read_json(folder / "summary.json")
    if data is not None and not isinstance(data, dict):
        summary_problem = "summary.json could not be read (it holds no JSON object)"
    if summary_problem:
        problems.append(summary_problem)
    elif not summary:
        problems.append("No summary.json in the run folder: the run did not get far enough.")
    config_text, config_problem = _read_text(folder / "config.yaml")
    config: dict[str, Any] = {}
    if config_problem:
        problems.append(config_problem)
    elif config_text is not None:
        import yaml

        try:
            loaded = yaml.safe_load(config_text)
            config = loaded if isinstance(loaded, dict) else {}
        except yaml.YAMLError as exc:
            problems.append(f"config.yaml could not be read ({_reason(exc)})")
    command, command_problem = _command(folder)
    if command_problem:
        problems.append(command_problem)

    def add(label: str, value: Any) -> None:
        if value not in (None, "", [], {}):
            rows.append((label, value))

    add("preset", summary.get("preset") or config.get("preset"))
    task = summary.get("task")
    if task and summary.get("task_class"):
        task = f"{task} ({summary['task_class']})"
    add("task", task)
    add("datamodule", summary.get("datamodule"))
    add("mode", summary.get("mode") or config.get("mode"))
    status = summary.get("status")
    if status == "running":
        status = "running (the run did not finish: summary.json is the one written at its start)"
    if summary.get("signal"):
        status = f"{status} ({summary['signal']})"
    add("status", status)
    add(
        "command",
        command
        or "not recorded (a run from Python, tasks.api.run: config.yaml below has its settings)",
    )
    add("checkpoint", summary.get("checkpoint"))
    add("seed", summary.get("seed", config.get("seed")))
    if summary.get("epochs") is not None:
        epochs = f"{summary['epochs']}"
        if summary.get("max_epochs"):
            epochs += f" of {summary['max_epochs']}"
        if summary.get("stopped_early"):
            epochs += " (stopped early)"
        add("epochs", epochs)
    best = summary.get("best_score") or {}
    if summary.get("best_epoch") is not None:
        text = f"{summary['best_epoch']}"
        if isinstance(best, dict) and best.get("monitor"):
            text += f" ({best['monitor']} {_number(best.get('value'))})"
        add("best epoch", text)
    add("optimizer steps", summary.get("global_step"))
    add("device", _device(folder, summary, config))
    add("wall time", _duration(summary.get("wall_time_s")))
    predictions = summary.get("predictions")
    if isinstance(predictions, dict):
        add("predictions", f"{predictions.get('path')} ({predictions.get('rows')} rows)")
    versions = summary.get("versions")
    if isinstance(versions, dict):
        add("versions", ", ".join(f"{k} {v}" for k, v in versions.items()))
    add("run folder", summary.get("output_dir") or str(folder))
    details = []
    if config_text:
        details.append({"summary": "config.yaml (the resolved configuration)", "text": config_text})
    return {
        "problems": problems,
        "tables": [_keys_table(rows)],
        "details": details,
    }


def _data_findings(folder: Path, summary: dict[str, Any]) -> dict[str, Any]:
    doctor, problem = _read_json(folder / "doctor.json")
    warnings = [str(w) for w in summary.get("data_warnings") or []]
    warning_table = _table(["warning while reading the data"], [[w] for w in warnings])
    if problem:
        tables = [warning_table] if warnings else []
        return {"problems": [problem], "tables": tables}
    if doctor is None:
        lines = ["The data doctor did not run (no doctor.json in the run folder)."]
        if warnings:
            lines.append(
                f"The datamodule raised {len(warnings)} warning(s) while reading the data:"
            )
            return {"lines": lines, "tables": [warning_table]}
        lines.append("The datamodule raised no warnings while reading the data.")
        return {"lines": lines}
    findings = doctor.get("findings") if isinstance(doctor, dict) else None
    if not isinstance(findings, list):
        return {"problems": ["doctor.json has no list of findings"]}
    problems, rows = [], []
    for number, finding in enumerate(findings, 1):
        if not isinstance(finding, dict) or not finding.get("what"):
            problems.append(f"doctor.json: finding {number} is not a finding (no 'what')")
            continue
        severity = str(finding.get("severity") or "info").lower()
        rows.append((severity, str(finding["what"]), finding.get("option")))
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    rows.sort(key=lambda r: rank.get(r[0], len(SEVERITIES)))
    if not rows:
        return {"problems": problems, "lines": ["The data doctor found nothing to report."]}
    counts = {s: sum(r[0] == s for r in rows) for s in dict.fromkeys(r[0] for r in rows)}
    line = "The data doctor found " + ", ".join(f"{n} {s}" for s, n in counts.items()) + "."
    table = _table(
        ["severity", "finding", "option to change it"],
        [
            [{"text": s, "badge": s if s in SEVERITIES else "info"}, what, option]
            for s, what, option in rows
        ],
    )
    return {"problems": problems, "lines": [line], "tables": [table]}


def _metrics_csv(folder: Path) -> Path | None:
    if (folder / "metrics.csv").is_file():
        return folder / "metrics.csv"
    return next((p for p in _run_files(folder) if p.name == "metrics.csv"), None)


def _history_rows(epochs: list[int], best: int | None) -> list[int]:
    if len(epochs) <= MAX_HISTORY_ROWS:
        return epochs
    step = (len(epochs) - 1) / (MAX_HISTORY_ROWS - 2)
    kept = {epochs[round(i * step)] for i in range(MAX_HISTORY_ROWS - 1)} | {epochs[-1]}
    if best in epochs:
        kept.add(best)
    return sorted(kept)


def _training_history(folder: Path, summary: dict[str, Any], shown: set[str]) -> dict:
    from tasks._plots import read_epoch_metrics

    content: dict[str, Any] = {"problems": [], "lines": [], "images": [], "tables": []}
    if (folder / "history.png").is_file():
        content["images"].append(_image(folder, folder / "history.png"))
        shown.add("history.png")
    path = _metrics_csv(folder)
    if path is None:
        content["lines"].append("No metrics.csv in the run folder (no CSV logger): no history.")
        return content
    try:
        history = read_epoch_metrics(path)
    except (OSError, UnicodeDecodeError, ValueError, csv.Error) as exc:
        name = path.relative_to(folder).as_posix()
        content["problems"].append(f"{name} could not be read ({_reason(exc)})")
        return content
    keys = sorted(
        (k for k in history if k.startswith(("train/", "val/"))),
        key=lambda k: (k.split("/", 1)[1] != "loss", k.split("/", 1)[1], k),
    )
    epochs = sorted({e for k in keys for e in history[k]})
    if not epochs:
        content["lines"].append("metrics.csv has no training epochs (this run did not train).")
        return content
    best = summary.get("best_epoch")
    best = best - 1 if isinstance(best, int) else None  # best_epoch counts from 1
    chosen = _history_rows(epochs, best)
    if len(chosen) < len(epochs):
        content["lines"].append(
            f"{len(chosen)} of {len(epochs)} epochs shown (evenly spaced, with the best); "
            "metrics.csv has them all."
        )
    rows = []
    for epoch in chosen:
        row = [{"text": str(epoch + 1), "numeric": True, "best": epoch == best}]
        row += [history[k].get(epoch) if epoch in history[k] else "" for k in keys]
        rows.append(row)
    content["tables"].append(_table(["epoch", *keys], rows) | {"best_marked": best in chosen})
    return content


def _metric_groups(summary: dict[str, Any]) -> dict[str, Any]:
    """Every ``prefix/name`` scalar of the summary's metric sections (test, baseline, peers)."""
    flat: dict[str, Any] = {}
    for section in ("metrics", "baseline", "peer", "peers", "peer_metrics"):
        values = summary.get(section)
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            if "/" in str(key) and (value is None or isinstance(value, (int, float))):
                flat[str(key)] = value
    return flat


def _test_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    flat = _metric_groups(summary)
    tests = {k.split("/", 1)[1]: (k, v) for k, v in flat.items() if k.startswith("test/")}
    content: dict[str, Any] = {"lines": [], "tables": [], "problems": []}
    if not tests:
        mode = summary.get("mode")
        why = f" (mode={mode} does not test)" if mode in ("predict", "generate") else ""
        content["lines"].append(f"No test metrics in summary.json{why}.")
    else:
        baseline_label = str(summary.get("baseline_name") or "baseline")
        columns = {"test": "model"}
        cells: dict[tuple[str, str], tuple[str, Any]] = {
            (name, "test"): kv for name, kv in tests.items()
        }
        extra_rows: list[str] = []
        for key, value in flat.items():
            prefix, name = key.split("/", 1)
            if prefix == "test":
                continue
            row, label = name, prefix
            if name not in tests:  # baseline/naive_mae beside test/mae
                match = max((t for t in tests if name.endswith(f"_{t}")), key=len, default=None)
                if match is not None:
                    row, label = match, f"{prefix}: {name[: -len(match) - 1]}"
                elif name not in extra_rows:
                    extra_rows.append(name)
            column = f"{prefix}/{label}"
            columns.setdefault(column, baseline_label if label == "baseline" else label)
            cells[(row, column)] = (key, value)
        rows = []
        for name in [*sorted(tests), *extra_rows]:
            row: list[Any] = [name]
            for column in columns:
                if (name, column) in cells:
                    key, value = cells[(name, column)]
                    row.append(
                        {
                            "text": _number(value),
                            "numeric": True,
                            "key": key,
                            "value": _exact(value),
                        }
                    )
                else:
                    row.append({"text": "-", "numeric": True})
            rows.append(row)
        content["tables"].append(_table(["metric", *columns.values()], rows))
    content["after"] = []
    best = summary.get("best_score")
    if isinstance(best, dict) and best.get("monitor"):
        content["after"].append(
            f"Best validation score: {best['monitor']} {_number(best.get('value'))} "
            "(the checkpoint tested)."
        )
    undefined = summary.get("undefined_metrics") or []
    if undefined:
        content["after"].append(
            "Undefined on this data (NaN or infinite, written as null): "
            + ", ".join(str(u) for u in undefined)
            + "."
        )
    notes = [str(n) for n in summary.get("notes") or []]
    if notes:
        content["notes"] = notes
    return content


def _plots(folder: Path, shown: set[str]) -> dict[str, Any]:
    paths = [p for p in _run_files(folder) if p.suffix.lower() in IMAGE_TYPES]
    others = [p for p in paths if p.relative_to(folder).as_posix() not in shown]
    lines = []
    if shown:
        lines.append(f"{', '.join(sorted(shown))} is shown under Training history.")
    if not others:
        return {
            "lines": ["The run wrote no other plots.", *lines]
            if paths
            else ["The run wrote no plots (no PNG or SVG files in the run folder)."]
        }
    images = [_image(folder, p) for p in others[:MAX_IMAGES]]
    if len(others) > MAX_IMAGES:
        rest = ", ".join(p.relative_to(folder).as_posix() for p in others[MAX_IMAGES:])
        lines.append(f"{len(others) - MAX_IMAGES} more images not embedded: {rest}")
    return {"images": images, "lines": lines}


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        out = []
        for key, item in value.items():
            out += _flatten(item, f"{prefix}.{key}" if prefix else str(key))
        return out
    if isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
        return [(prefix, ", ".join(_number(v) if isinstance(v, float) else str(v) for v in value))]
    if isinstance(value, list):
        return [(prefix, f"{len(value)} entries")]
    return [(prefix, value)]


def _stats_table(data: dict[str, Any]) -> dict[str, Any] | None:
    """``{metric: {mean: .., std: ..}}`` as one row per metric, when every value is like it."""
    if not data or not all(isinstance(v, dict) for v in data.values()):
        return None
    stats = list(dict.fromkeys(s for v in data.values() for s in v))
    if not all(not isinstance(x, (dict, list)) for v in data.values() for x in v.values()):
        return None
    return _table(["", *stats], [[k, *(v.get(s) for s in stats)] for k, v in data.items()])


def _cross_validation(folder: Path) -> dict[str, Any]:
    cv_summary, problem = _read_json(folder / "cv_summary.json")
    content: dict[str, Any] = {"problems": [problem] if problem else [], "tables": [], "lines": []}
    if isinstance(cv_summary, dict):
        nested = {k: v for k, v in cv_summary.items() if isinstance(v, dict)}
        table = _stats_table(nested)
        if table is not None:
            content["tables"].append(table)
            flat = [(k, v) for k, v in cv_summary.items() if k not in nested]
        else:
            flat = _flatten(cv_summary)
        if flat:
            content["tables"].insert(0, _keys_table(flat))
    elif cv_summary is not None:
        content["problems"].append("cv_summary.json holds no JSON object")
    results = folder / "cv_results.csv"
    if results.is_file():
        try:
            with open(results, newline="", encoding="utf-8") as fh:
                rows = list(csv.reader(fh))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            content["problems"].append(f"cv_results.csv could not be read ({_reason(exc)})")
            rows = []
        if rows:
            header, body = rows[0], rows[1:]
            if len(body) > MAX_CV_ROWS:
                content["lines"].append(f"The first {MAX_CV_ROWS} of {len(body)} folds shown.")
            content["tables"].append(
                _table(header, ([_csv_value(v) for v in r] for r in body[:MAX_CV_ROWS]))
            )
    if cv_summary is None and not results.is_file() and not problem:
        content["lines"].append("Cross-validation: not run (no cv_summary.json or cv_results.csv).")
    return content


def _csv_value(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _export(folder: Path) -> dict[str, Any]:
    manifests = (
        sorted((folder / "bundle").rglob("manifest.json")) if (folder / "bundle").is_dir() else []
    )
    if not manifests:
        return {"lines": ["Export: not run (no bundle/manifest.json in the run folder)."]}
    content: dict[str, Any] = {"problems": [], "tables": [], "lines": []}
    for path in manifests:
        manifest, problem = _read_json(path)
        name = path.parent.relative_to(folder).as_posix()
        if problem or not isinstance(manifest, dict):
            content["problems"].append(f"{name}/{problem or 'manifest.json holds no JSON object'}")
            continue
        rows: list[tuple[str, Any]] = [("bundle", str(path.parent))]
        for key in ("bundle_format", "created", "task", "datamodule", "preset", "input_kind"):
            if manifest.get(key) not in (None, ""):
                rows.append((key.replace("_", " "), manifest[key]))
        versions = manifest.get("versions")
        if isinstance(versions, dict):
            rows.append(("versions", ", ".join(f"{k} {v}" for k, v in versions.items())))
        tolerance = manifest.get("tolerance")
        if isinstance(tolerance, dict):
            rows.append(
                ("tolerance", f"{tolerance.get('atol')} + {tolerance.get('rtol')} x |expected|")
            )
        files = manifest.get("files")
        if isinstance(files, dict):
            rows.append(("files", ", ".join(files)))
        onnx = manifest.get("onnx")
        if not isinstance(onnx, dict):
            rows.append(("ONNX", "no graph (exported without --onnx)"))
        else:
            rows.append(("ONNX exporter", onnx.get("exporter")))
            if onnx.get("seconds") is not None:
                rows.append(("ONNX export time", _duration(onnx["seconds"])))
        content["tables"].append(_keys_table(rows))
        parity = onnx.get("parity") if isinstance(onnx, dict) else None
        if isinstance(parity, dict):
            checks = {k: v for k, v in parity.items() if isinstance(v, dict)}
            rows_checked = parity.get("rows")
            caption = "ONNX parity with torch" + (
                f" on {rows_checked} rows" if rows_checked is not None else ""
            )
            content["tables"].append(
                {"caption": f"{caption} (the export gate passed):"}
                | _table(
                    ["check", "max abs diff", "max rel diff", "rows that agree"],
                    [
                        [
                            check.replace("_", " "),
                            figures.get("max_abs_diff"),
                            figures.get("max_rel_diff"),
                            {"text": f"{100 * figures['agreement']:.2f} %", "numeric": True}
                            if isinstance(figures.get("agreement"), (int, float))
                            else figures.get("agreement"),
                        ]
                        for check, figures in checks.items()
                    ],
                )
            )
    return content


def _files(folder: Path) -> dict[str, Any]:
    files = [p for p in _run_files(folder) if p.name != REPORT_FILE]
    if not files:
        return {"lines": ["The run folder holds no files."]}
    rows = []
    for path in files[:MAX_FILES]:
        try:
            size = _size(path.stat().st_size)
        except OSError:
            size = "?"
        rows.append([path.relative_to(folder).as_posix(), {"text": size, "numeric": True}])
    content: dict[str, Any] = {
        "tables": [_table(["file", "size"], rows)],
        "lines": [],
        "problems": [],
        "details": [],
    }
    if len(files) > MAX_FILES:
        content["lines"].append(f"The first {MAX_FILES} of {len(files)} files listed.")
    samples, problem = _read_text(folder / "samples.txt")
    if problem:
        content["problems"].append(problem)
    elif samples:
        lines = samples.splitlines()
        text = "\n".join(lines[:MAX_SAMPLE_LINES])
        if len(lines) > MAX_SAMPLE_LINES:
            text += f"\n... ({len(lines) - MAX_SAMPLE_LINES} more lines in samples.txt)"
        content["details"].append({"summary": "samples.txt", "text": text, "open": True})
    return content


def _fallback_page(folder: Path, exc: BaseException) -> str:
    """A minimal page when the template fails (every section heading, and why)."""
    reason = html.escape(_reason(exc))
    sections = "".join(
        f'<h2 id="{a}">{html.escape(h)}</h2><p>Not shown: the report could not be rendered.</p>'
        for a, h in SECTIONS
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Run report: {html.escape(folder.name)}</title></head><body>"
        f"<h1>Run report: {html.escape(folder.name)}</h1><p>{reason}</p>{sections}</body></html>"
    )


TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
:root { color-scheme: light; --ink: #1d2330; --muted: #5b6475; --line: #dde1e8;
        --soft: #f5f7fa; --accent: #2f5fb3; }
* { box-sizing: border-box; }
body { margin: 0; background: #fff; color: var(--ink);
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
             sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 28px 32px 64px; }
header { border-bottom: 2px solid var(--ink); margin-bottom: 8px; padding-bottom: 10px; }
h1 { font-size: 26px; margin: 0 0 4px; }
.sub { color: var(--muted); font-size: 13px; }
nav { margin: 10px 0 0; font-size: 13px; }
nav a { color: var(--accent); text-decoration: none; margin-right: 14px; }
section { margin-top: 30px; }
h2 { font-size: 19px; margin: 0 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
p { margin: 6px 0; }
.problem { color: #8a4b00; background: #fff6e5; border-left: 3px solid #e09b2d;
           padding: 4px 10px; }
.scroll { overflow-x: auto; margin: 8px 0 14px; }
table { border-collapse: collapse; font-size: 13.5px; }
th, td { border: 1px solid var(--line); padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: var(--soft); font-weight: 600; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.keys td:first-child { font-weight: 600; background: var(--soft); white-space: nowrap; }
table.keys td.num { text-align: left; }
table.keys td { word-break: break-word; }
code, pre { font: 12.5px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
pre { background: var(--soft); border: 1px solid var(--line); padding: 10px; overflow-x: auto;
      max-height: 480px; }
tr.best td { background: #eaf5ea; }
.badge { display: inline-block; padding: 0 8px; border-radius: 10px; font-size: 12px;
         font-weight: 600; }
.badge.error { background: #fde2e1; color: #9b1c1c; }
.badge.warning { background: #fff1d6; color: #8a4b00; }
.badge.info { background: #e3edfb; color: #1f4b8f; }
figure { display: inline-block; vertical-align: top; max-width: 100%; margin: 8px 18px 8px 0; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { font-size: 13px; color: var(--muted); margin-top: 4px; font-family: ui-monospace,
             SFMono-Regular, Menlo, Consolas, monospace; }
ul.notes { margin: 6px 0; padding-left: 20px; }
details { margin: 10px 0; }
summary { cursor: pointer; color: var(--accent); }
</style>
</head>
<body>
<main>
<header>
<h1>{{ title }}</h1>
<div class="sub">Run folder <code>{{ folder }}</code> &middot; report written {{ written }}</div>
<nav>{% for s in sections %}<a href="#{{ s.id }}">{{ s.heading }}</a>{% endfor %}</nav>
</header>
{% for s in sections %}
<section id="{{ s.id }}" data-section="{{ s.id }}">
<h2>{{ s.heading }}</h2>
{% for p in s.problems %}<p class="problem">{{ p }}</p>
{% endfor %}
{% for line in s.lines %}<p>{{ line }}</p>
{% endfor %}
{% if s.images %}<div class="figures">
{% for img in s.images %}<figure>
{% if img.uri %}<img src="{{ img.uri }}" alt="{{ img.name }}">
{% else %}<p class="problem">{{ img.name }}: {{ img.problem }}</p>{% endif %}
<figcaption>{{ img.name }}</figcaption></figure>
{% endfor %}</div>{% endif %}
{% for t in s.tables %}{% if t.caption %}<p>{{ t.caption }}</p>{% endif %}
<div class="scroll"><table class="{{ t.kind or 'grid' }}">
{% if t.columns %}<tr>{% for c in t.columns %}<th>{{ c }}</th>{% endfor %}</tr>{% endif %}
{% for row in t.rows %}<tr{% if row[0].best %} class="best"{% endif %}>
{%- for cell in row %}<td{% if cell.numeric %} class="num"{% endif %}
{%- if cell.key %} data-metric="{{ cell.key }}" data-value="{{ cell.value }}"{% endif %}>
{%- if cell.badge %}<span class="badge {{ cell.badge }}">{{ cell.text }}</span>
{%- else %}{{ cell.text }}{% endif %}</td>{% endfor %}</tr>
{% endfor %}</table></div>
{% if t.best_marked %}<p class="sub">The highlighted row is the best epoch (the checkpoint
tested).</p>{% endif %}
{% endfor %}
{% for line in s.after %}<p>{{ line }}</p>
{% endfor %}
{% if s.notes %}<ul class="notes">{% for n in s.notes %}<li>{{ n }}</li>{% endfor %}</ul>{% endif %}
{% for d in s.details %}<details{% if d.open %} open{% endif %}><summary>{{ d.summary }}</summary>
<pre>{{ d.text }}</pre></details>
{% endfor %}
</section>
{% endfor %}
</main>
</body>
</html>
"""
