"""A quiet TensorFlow start-up on machines without a GPU.

The full `tensorflow` wheel carries the CUDA platform: on a machine without
an NVIDIA GPU its first device initialisation logs
`E... cuda_platform.cc] failed call to cuInit: ...` (an error-level line no
TF_CPP_MIN_LOG_LEVEL below 3 hides), and its import logs INFO lines before
TensorFlow's C++ logging reads TF_CPP_MIN_LOG_LEVEL. To a new user that reads
like a failure.

`install()` (called by `aps_tf.cli.run` for every binary) arranges that the
first `import tensorflow` of the process, and its device initialisation, run
with file descriptor 2 passed through a line filter that drops only:
  * the cuInit line, and only when the machine has no NVIDIA device node
    (/dev/nvidia0, ...): on a GPU machine a cuInit failure is a real error and
    is kept;
  * INFO lines (`I0000 ...`) and absl's "before InitializeLog" banner, when
    TF_CPP_MIN_LOG_LEVEL is 1 or more (what that setting asks for).
Every other line, warnings and errors included, is forwarded as it arrives.
Binaries that never import TensorFlow (aps-flops) pay nothing.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.abc
import importlib.util
import os
import re
import sys
import threading
from typing import Callable, Iterator

_CUINIT = re.compile(r"failed call to cuInit")
_INFO = re.compile(r"^I\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\] ")
_BANNER = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"


def gpu_device_nodes() -> list[str]:
  """NVIDIA device nodes of this machine (empty without a GPU)."""
  return sorted(glob.glob("/dev/nvidia[0-9]*"))


def min_log_level() -> int:
  try:
    return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
  except ValueError:
    return 0


def keep_line(line: str, *, gpu_present: bool, level: int) -> bool:
  """Whether a start-up stderr line is shown (see the module docstring)."""
  if _CUINIT.search(line):
    return gpu_present
  if level >= 1 and (_INFO.match(line) or line.rstrip("\n") == _BANNER):
    return False
  return True


@contextlib.contextmanager
def filtered_stderr(keep: Callable[[str], bool]) -> Iterator[None]:
  """Passes everything written to fd 2 inside the block through KEEP, line by line."""
  sys.stderr.flush()
  saved = os.dup(2)
  read_fd, write_fd = os.pipe()
  os.dup2(write_fd, 2)
  os.close(write_fd)

  def pump():
    with os.fdopen(read_fd, "rb") as pipe:
      for raw in pipe:
        if keep(raw.decode(errors="replace")):
          os.write(saved, raw)

  thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
  thread.start()
  try:
    yield
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)  # closes the pipe's last write end: the pump sees EOF
    thread.join()
    os.close(saved)


def _quiet() -> contextlib.AbstractContextManager:
  gpu, level = bool(gpu_device_nodes()), min_log_level()
  return filtered_stderr(lambda line: keep_line(line, gpu_present=gpu, level=level))


class _QuietLoader(importlib.abc.Loader):
  """Runs the real loader of `tensorflow`, then initialises its devices, filtered."""

  def __init__(self, loader):
    self._loader = loader

  def create_module(self, spec):
    return self._loader.create_module(spec)

  def exec_module(self, module):
    with _quiet():
      self._loader.exec_module(module)
      module.config.list_physical_devices()


class _Finder(importlib.abc.MetaPathFinder):
  """Intercepts the first `import tensorflow` (then removes itself)."""

  def find_spec(self, fullname, path, target=None):
    del path, target
    if fullname != "tensorflow":
      return None
    uninstall()
    spec = importlib.util.find_spec(fullname)
    if spec is not None and spec.loader is not None:
      spec.loader = _QuietLoader(spec.loader)
    return spec


_finder = _Finder()


def install() -> None:
  """Makes this process's TensorFlow start-up quiet (see the module docstring)."""
  if "tensorflow" in sys.modules:
    tf = sys.modules["tensorflow"]
    with _quiet():
      tf.config.list_physical_devices()
  elif _finder not in sys.meta_path:
    sys.meta_path.insert(0, _finder)


def uninstall() -> None:
  if _finder in sys.meta_path:
    sys.meta_path.remove(_finder)
