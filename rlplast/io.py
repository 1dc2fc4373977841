"""Crash-safe file output: a kill at any moment leaves the old or the new file, never a partial one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from rlplast.errors import UserError


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder, fsync and rename."""
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder, fsync and rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (best effort: not every platform can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def csv_rows_through(path: str | Path, last_step: int) -> str | None:
    """The text of the step-indexed CSV ``path`` cut after its rows of steps ``<= last_step``.

    The header is kept; a partial last line (a kill during an append) is dropped, as are empty
    lines. Returns ``None`` when the file is missing or has no complete line. Nothing is written.

    Raises:
        UserError: the header does not start with ``step`` or a row does not start with an integer
            step (a corrupt file), naming the file and the line.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    # Everything after the last newline is a partial line (or empty): drop it.
    complete = text.split("\n")[:-1]
    if not complete:
        return None
    header, rows = complete[0], complete[1:]
    if header.split(",", 1)[0] != "step":
        raise UserError(f"{path}: line 1 is not a header starting with 'step': {header[:60]!r}")
    kept = [header]
    for lineno, row in enumerate(rows, start=2):
        if not row:
            continue
        try:
            step = int(row.split(",", 1)[0])
        except ValueError:
            raise UserError(
                f"{path}: line {lineno} does not start with a step number: {row[:60]!r}; "
                "repair or delete that line"
            ) from None
        if step <= last_step:
            kept.append(row)
    return "\n".join(kept) + "\n"


def truncate_csv_rows(path: str | Path, last_step: int) -> None:
    """Atomically keep the header and the rows of steps ``<= last_step`` (see :func:`csv_rows_through`)."""
    text = csv_rows_through(path, last_step)
    if text is not None:
        atomic_write_text(path, text)


def atomic_write_json(path: str | Path, data: Any) -> None:
    """Atomically write ``data`` as indented JSON (NaN is written as null)."""
    atomic_write_text(path, json.dumps(_nan_to_none(data), indent=2, sort_keys=False) + "\n")


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj


def append_line(path: str | Path, line: str) -> None:
    """Append one line with a single ``write`` on an ``O_APPEND`` descriptor, then fsync."""
    data = (line.rstrip("\n") + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
