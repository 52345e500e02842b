"""Files a datamodule needs: found on disk, or downloaded from mirrors and checksummed."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from tasks.errors import DataError

#: Seconds to wait for a mirror to answer before trying the next one.
TIMEOUT_S = 30


def md5sum(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _open_url(url: str) -> BinaryIO:
    """The response to ``url``, read as a file (the seam tests replace to fake a mirror)."""
    return urllib.request.urlopen(url, timeout=TIMEOUT_S)


def _fetch_one(url: str, target: Path, md5: str | None) -> None:
    """Download ``url`` to ``target`` through a temporary file of its own in the same
    folder (parallel jobs downloading the same file never share one), flushed to disk and
    then renamed: ``target`` is either whole and verified, or not there at all."""
    fd, partial = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            with _open_url(url) as response:
                shutil.copyfileobj(response, fh, 1 << 20)
            fh.flush()
            os.fsync(fh.fileno())
        if md5 is not None:
            got = md5sum(Path(partial))
            if got != md5:
                raise DataError(f"{url}: checksum mismatch (md5 {got}, expected {md5})")
        os.chmod(partial, 0o644)  # mkstemp makes it private; a download is not
        os.replace(partial, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)


def fetch(
    filename: str,
    folder: Path,
    mirrors: Sequence[str],
    md5: str | None,
    search: Sequence[Path] = (),
    download: bool = True,
    what: str = "the dataset",
) -> Path:
    """Path of ``filename``: from ``folder`` or a ``search`` folder, else downloaded.

    Files already on disk are used as they are (repackaged copies, e.g. Debian's, have
    other checksums; the caller validates their content). Downloads try each mirror in
    turn and keep a file only when its MD5 matches.

    Raises:
        DataError: the file is nowhere on disk and no mirror delivered it; the message
            says where to put it.
    """
    for place in (folder, *search):
        candidate = Path(place) / filename
        if candidate.is_file():
            return candidate
    target = Path(folder) / filename
    failures: list[str] = []
    if download:
        target.parent.mkdir(parents=True, exist_ok=True)
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + filename
            try:
                _fetch_one(url, target, md5)
                return target
            except (urllib.error.URLError, OSError, DataError) as exc:
                failures.append(f"{url}: {getattr(exc, 'reason', exc)}")
    looked = ", ".join(str(Path(p)) for p in (folder, *search))
    tried = f" Download failed: {'; '.join(failures)}." if failures else ""
    off = "" if download else " (datamodule.download=false)"
    raise DataError(
        f"{what}: {filename} is not on disk{off}.{tried} Put the file in {Path(folder)} "
        f"(looked in: {looked}), or run where the network is reachable."
    )
