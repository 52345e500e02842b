"""Files the library writes: valid JSON (no NaN or infinity) and atomic replacement, so a
crash or a full disk leaves the previous good file rather than a truncated one."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float (in dicts, lists, tuples) replaced by None:
    JSON has no such numbers, and ``json.dumps`` would write invalid ``NaN``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def not_finite(values: dict[str, Any]) -> list[str]:
    """Keys whose value is a NaN or infinite float."""
    return sorted(k for k, v in values.items() if isinstance(v, float) and not math.isfinite(v))


def to_json(data: Any, **options: Any) -> str:
    """Strict JSON text: non-finite floats become null; other objects their ``str``."""
    return json.dumps(finite(data), allow_nan=False, default=str, **options)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to a temporary file beside ``path``, flush it to disk, then
    rename it over ``path``: readers see the old file or the new one, never half of one."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, flush it to disk, then rename it
    over ``path`` (same folder, so the rename is atomic): the old file or the new one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes the file private; results are for sharing
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def save_figure(fig: Any, path: Path, **options: Any) -> Path:
    """``fig.savefig`` rendered in memory, then written atomically (format from the suffix)."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format=Path(path).suffix.lstrip(".") or "png", **options)
    write_bytes_atomic(Path(path), buffer.getvalue())
    return Path(path)


def write_csv(frame: Any, path: Path, **options: Any) -> Path:
    """A pandas frame as CSV, written atomically."""
    write_text_atomic(Path(path), frame.to_csv(**options))
    return Path(path)


def write_json(path: Path, data: Any) -> None:
    """``data`` as indented strict JSON (see :func:`to_json`), written atomically."""
    write_text_atomic(path, to_json(data, indent=2) + "\n")


#: What a run of this library leaves in its folder (Hydra's own ``.hydra/`` and the job log
#: are written before a run starts, so they do not count).
RUN_MARKERS = ("summary.json", "config.yaml", "checkpoints")


def previous_run(folder: str | Path) -> str | None:
    """The first file of an earlier run found in ``folder``, or None for a fresh folder."""
    for marker in RUN_MARKERS:
        if (Path(folder) / marker).exists():
            return marker
    return None


def other_rank() -> bool:
    """Whether this process is a second or later rank of a distributed launch (whose rank 0
    writes the run folder)."""
    return any(os.environ.get(key, "0") not in ("", "0") for key in ("RANK", "LOCAL_RANK"))


def refuse_previous_run(folder: str | Path, option: str, mode: str, ckpt_path: str | None) -> None:
    """Never write into the folder of an earlier run (finished or failed) unless the user
    resumes training into it (``mode=train`` with ``ckpt_path``).

    Raises:
        ConfigError: ``folder`` holds an earlier run.
    """
    from tasks.errors import ConfigError

    marker = previous_run(folder)
    if marker is None or (mode == "train" and ckpt_path):
        return
    raise ConfigError(
        f"{option}={folder} already holds a run ({marker} is there) and would be overwritten: "
        f"choose a new folder (or drop {option} for a fresh dated one), or resume that run "
        f"into it with ckpt_path={Path(folder) / 'checkpoints' / 'last.ckpt'}"
    )


def ensure_folder(folder: str | Path, option: str) -> Path:
    """Create ``folder`` (and its parents) for a run's files, or say in one line why not.

    Raises:
        ConfigError: the folder cannot be created or written (a file in the way, no
            permission, a read-only or virtual file system such as /proc).
    """
    from tasks.errors import ConfigError

    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        blocker = next((p for p in [path, *path.parents] if p.is_file()), None)
        if blocker is not None:
            reason = f"{blocker} is a file"
        raise ConfigError(
            f"{option}={folder} cannot hold the run's files ({reason}); choose a folder you can "
            "write to"
        ) from None
    return path
