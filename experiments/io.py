"""Files are written atomically: to a temporary file in the same directory, then renamed, so a
reader (or a run killed at any moment) sees the old file or the new one, never a torn one."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator


@contextlib.contextmanager
def open_atomically(path: os.PathLike | str, mode: str = "w") -> Iterator[IO[Any]]:
    """Opens a temporary file that replaces ``path`` when the block ends without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_text_atomically(path: os.PathLike | str, text: str) -> None:
    with open_atomically(path) as f:
        f.write(text)


def write_json_atomically(path: os.PathLike | str, value: Any) -> None:
    write_text_atomically(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def write_jsonl_atomically(path: os.PathLike | str, records: list[dict]) -> None:
    write_text_atomically(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
