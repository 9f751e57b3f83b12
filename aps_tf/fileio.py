"""Atomic file writes: a reader (or a resumed run) never sees half a file.

Every file a run leaves for people or later runs (config.json, arch.json,
metrics.json, model.keras, models.config) is written to a temporary file
beside its destination and renamed over it in one step.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "") -> Iterator[str]:
  """Yields a temporary path beside `path`; it replaces `path` if the block succeeds."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}-", suffix=suffix,
                             dir=directory)
  os.close(fd)
  try:
    yield tmp
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_text(path: str, text: str) -> None:
  with atomic_path(path) as tmp:
    with open(tmp, "w") as f:
      f.write(text)


def write_json(path: str, obj: Any, **dump_kwargs) -> None:
  dump_kwargs.setdefault("indent", 2)
  write_text(path, json.dumps(obj, **dump_kwargs) + "\n")
