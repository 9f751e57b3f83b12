"""One workdir, one run: the rule every binary applies before writing.

A workdir records the resolved config of its run in `config.json`. A rerun
(which resumes) must bring the same config, except for the fields in
`MUTABLE_FIELDS` (bookkeeping that does not change the result: checkpoint
and log intervals, data locations, the distribution strategy, how the
search's result is picked) and the sections the binary does not read (a
retraining run does not depend on `search.*`). Anything else means the
workdir holds another run, and the binary refuses it with the differing
fields named, before it writes anything.
"""

from __future__ import annotations

import errno
import os
import tempfile
import uuid
from typing import Any, Iterable

import tensorflow as tf

from aps_tf import config_check
from aps_tf import errors
from aps_tf import fileio

CONFIG_FILE = "config.json"
# Fields a rerun may change without invalidating the run in the workdir.
MUTABLE_FIELDS = (
    "search.checkpoint_every_steps", "search.keep_checkpoints", "search.log_every_steps",
    "search.analysis_every_steps", "search.rescore", "search.rescore_batches", "search.top_n",
    "search.beam_width", "search.pick", "search.steps_per_loop",
    "train.checkpoint_every_steps", "train.keep_checkpoints", "train.log_every_steps",
    "train.steps_per_loop",
    "data.data_dir", "data.manual_dir", "data.download", "tpu", "strategy", "config_name",
)


class WorkdirMismatchError(errors.WorkdirError, errors.ConfigError):
  """The workdir holds a run of a different config."""


def _mutable(key: str, sections: tuple[str, ...]) -> bool:
  if key in MUTABLE_FIELDS:
    return True
  return "." in key and key.split(".", 1)[0] not in sections


def differences(old: dict, new: dict, sections: Iterable[str]) -> list[tuple[str, Any, Any]]:
  """(field, saved, now) for every field that differs and is not mutable."""
  sections = tuple(sections)
  a, b = config_check.flatten(old), config_check.flatten(new)
  missing = "<missing>"
  return [(k, a.get(k, missing), b.get(k, missing)) for k in sorted(set(a) | set(b))
          if a.get(k, missing) != b.get(k, missing) and not _mutable(k, sections)]


def check_config(config: dict, workdir: str, sections: Iterable[str], *,
                 write: bool = False) -> None:
  """Refuses a workdir whose config.json differs from `config` (a JSON dict).

  With `write`, saves `config` as WORKDIR/config.json (atomically) afterwards.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if fileio.exists(path):
    try:
      old = fileio.read_json(path)
    except (OSError, ValueError) as e:
      raise WorkdirMismatchError(f"{path}: cannot read the saved config ({e}); use a fresh "
                                 "--workdir") from e
    diff = differences(config_check.with_defaults(old).to_dict(), config, sections)
    if diff:
      details = "; ".join(f"{k}: saved={a!r} now={b!r}" for k, a, b in diff[:10])
      raise WorkdirMismatchError(
          f"workdir {workdir} holds a run of a different config (differing fields: {details}). "
          "Use a fresh --workdir, or rerun with the saved config.")
  if write:
    fileio.write_json(path, config, sort_keys=True)


def ensure_writable(path: str) -> None:
  """Fails (WorkdirError) unless files can be created in `path` or, if it does
  not exist yet, in its nearest existing parent; leaves nothing behind.

  Any filesystem: a local path is probed with a temporary file (the error
  names the cause: read-only, not writable, full, over quota); a URL
  (gs://, ram://) with a hidden probe file written and removed through
  tf.io.gfile.
  """
  if not fileio.is_local(path):
    _ensure_writable_url(path)
    return
  probe = os.path.abspath(path)
  while not os.path.exists(probe):
    parent = os.path.dirname(probe)
    if parent == probe:
      break
    probe = parent
  if not os.path.isdir(probe):
    raise errors.WorkdirError(f"{path}: {probe} is not a directory")
  try:
    with tempfile.TemporaryFile(dir=probe):
      pass
  except OSError as e:
    what = {errno.EROFS: "is on a read-only file system", errno.EACCES: "is not writable",
            errno.EPERM: "is not writable", errno.ENOSPC: "has no space left",
            errno.EDQUOT: "is over its disk quota"}.get(e.errno, f"cannot be written ({e})")
    raise errors.WorkdirError(f"{path}: {probe} {what}") from e


def _ensure_writable_url(path: str) -> None:
  probe = str(path).rstrip("/")
  try:
    while not fileio.exists(probe):
      parent = fileio.dirname(probe)
      if parent.rstrip("/") == probe or parent.endswith("://"):
        break
      probe = parent
    if fileio.exists(probe) and not fileio.isdir(probe):
      raise errors.WorkdirError(f"{path}: {probe} is not a directory")
    target = probe if fileio.exists(probe) else str(path).rstrip("/")
    name = f"{target}/.aps-write-probe-{uuid.uuid4().hex[:12]}"
    with tf.io.gfile.GFile(name, "w") as f:
      f.write("")
    tf.io.gfile.remove(name)
  except tf.errors.OpError as e:
    raise errors.WorkdirError(f"{path}: cannot be written ({e.message})") from e
