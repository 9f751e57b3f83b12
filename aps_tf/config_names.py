"""Configs by name: `--config=quick` runs the shipped configs/quick.py.

The paper configs live in the `aps_tf.configs` package (the repository's
configs/ folder), installed with aps-tf. A
binary's `--config` takes a file path as usual (`--config=configs/quick.py`,
`--config=/my/cfg.py`); a bare name of a shipped config (`--config=quick`,
`--config=cifar10_resnet20_50`) that is not also a file in the working
directory is replaced by the installed file's path before the flags are
parsed, so the same command works from a checkout and from `pip install`.
`names()` lists the shipped configs (`configs/base.py` holds only defaults).
"""

from __future__ import annotations

import importlib
import os
import pathlib
import re
from typing import Sequence

from aps_tf import errors

PACKAGE = "aps_tf.configs"
_NOT_CONFIGS = ("__init__", "base")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class UnknownConfigError(errors.UserError, ValueError):
  """A --config that is neither a file nor a shipped config name."""


def _root() -> pathlib.Path:
  # The package's search path, not its __init__'s folder: in a source checkout
  # aps_tf/configs/__init__.py points the package at the top-level configs/.
  return pathlib.Path(list(importlib.import_module(PACKAGE).__path__)[0])


def names() -> list[str]:
  """The shipped config names."""
  return sorted(f.name[:-3] for f in _root().iterdir()
                if f.name.endswith(".py") and f.name[:-3] not in _NOT_CONFIGS)


def path_of(name: str) -> str:
  """The file of shipped config NAME; UnknownConfigError listing the names."""
  if name not in names():
    raise UnknownConfigError(f"--config={name}: no such file, and not a shipped config name; "
                     f"expected a config file path or one of {names()}")
  return str(_root() / f"{name}.py")


def resolve_argv(argv: Sequence[str], flag: str = "config") -> list[str]:
  """ARGV with `--FLAG=NAME[:args]` of a shipped config replaced by its path."""
  out = []
  prefix = f"--{flag}="
  for arg in argv:
    if arg.startswith(prefix):
      value = arg[len(prefix):]
      name, sep, rest = value.partition(":")
      if _NAME.fullmatch(name) and not os.path.exists(name):
        arg = prefix + path_of(name) + sep + rest
    out.append(arg)
  return out
