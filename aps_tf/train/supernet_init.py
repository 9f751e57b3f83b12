"""Start retraining from the supernet's candidate weights (cfg.train.init='supernet').

A search workdir has the layout of every run (docs/internals.md):
`config.json` (the resolved config) and `ckpt/`, a `tf.train.CheckpointManager`
directory of a `tf.train.Checkpoint` whose `net` is the supernet (beside the
controller, optimisers, iterators, ...). Only `net` is restored
(expect_partial). `load_supernet` rebuilds the Supernet from the config and
restores its weights; `init_from_supernet` copies the candidate weights of an
architecture into the dense child (`Supernet.child_weights` +
`dense.load_child_weights`); retraining runs it as its CheckpointManager's
`init_fn`. All paths go through tf.io.gfile (any filesystem).
"""

from __future__ import annotations

import json
import os

import keras
import ml_collections
import tensorflow as tf

from aps_tf import config_check
from aps_tf import data
from aps_tf import errors
from aps_tf import fileio
from aps_tf import models
from aps_tf.models import dense
from aps_tf.models import supernet as supernet_lib


# The search workdir's layout: its CheckpointManager directory and the
# Checkpoint's key of the supernet.
CHECKPOINT_DIR = "ckpt"
SUPERNET_KEY = "net"


class SupernetInitError(errors.UserError, ValueError):
  """The supernet workdir cannot initialise this architecture; says why."""


def load_config(path: str) -> ml_collections.ConfigDict:
  """A search workdir's config.json, with the defaults of configs/base.py merged.

  Args:
    path: WORKDIR/config.json.

  Returns:
    The config.

  Raises:
    SupernetInitError: the file is unreadable or not JSON.
  """
  try:
    return config_check.with_defaults(json.loads(fileio.read_text(path)))
  except OSError as e:
    raise SupernetInitError(f"{path}: cannot read config: {e.strerror or e}") from e
  except json.JSONDecodeError as e:
    raise SupernetInitError(f"{path}: not valid JSON: {e.msg}") from e


def build_supernet(cfg, init_weights: bool = True) -> supernet_lib.Supernet:
  """The Supernet of a (search) config, built (variables created).

  Args:
    cfg: the search's config.
    init_weights: start from the user's weights where the config says so
      (`model.init_from`); False when a checkpoint is restored over them.

  Returns:
    The supernet (`models.supernet_from_config`).
  """
  info = data.dataset_info(cfg.data)
  topology = models.topology_from_config(cfg.model, info.image_shape, info.num_classes)
  return models.supernet_from_config(cfg, topology, init_weights=init_weights)


def load_supernet(workdir: str, checkpoint: str | None = None) -> supernet_lib.Supernet:
  """Restores the supernet of a search workdir from its latest checkpoint.

  The supernet is rebuilt from WORKDIR/config.json; the latest checkpoint of
  WORKDIR/ckpt is read with expect_partial (a search checkpoint also holds
  the policy, optimisers, ...), and every supernet variable must be restored.

  Args:
    workdir: the search workdir.
    checkpoint: a checkpoint path instead of the latest.

  Returns:
    The restored supernet.

  Raises:
    SupernetInitError: no workdir, checkpoint or config, or a mismatch.
  """
  if not tf.io.gfile.isdir(workdir):
    raise SupernetInitError(f"supernet workdir {workdir!r} does not exist")
  cfg = load_config(os.path.join(workdir, "config.json"))
  net = build_supernet(cfg, init_weights=False)
  path = checkpoint
  if path is None:
    ckpt_dir = os.path.join(workdir, CHECKPOINT_DIR)
    path = tf.train.latest_checkpoint(ckpt_dir)
    if path is None:
      raise SupernetInitError(f"no checkpoint in {ckpt_dir}")
  status = tf.train.Checkpoint(**{SUPERNET_KEY: net}).restore(path).expect_partial()
  try:
    status.assert_existing_objects_matched()
  except AssertionError as e:
    names = _entries(path)
    if names is not None and SUPERNET_KEY not in names:
      raise SupernetInitError(f"{path} holds no supernet (no {SUPERNET_KEY!r} entry; found "
                              f"{sorted(names)})") from e
    raise SupernetInitError(f"{path} does not hold this supernet's weights "
                            f"(config {workdir}/config.json): {e}") from e
  return net


def _entries(path: str) -> set[str] | None:
  """The top-level names of a checkpoint, or None where TF cannot list them
  (its reader takes a prefix like ram://.../ckpt-1 for a directory)."""
  try:
    return {n.split("/", 1)[0] for n, _ in tf.train.list_variables(path)}
  except ValueError:
    return None


def arch_indices(arch: dict, net: supernet_lib.Supernet) -> list[int]:
  """Decision indices of `arch` in the supernet's search space.

  Args:
    arch: an architecture file's contents.
    net: the supernet.

  Returns:
    One candidate index per decision.

  Raises:
    SupernetInitError: the widths are not a candidate architecture of it.
  """
  t = net.topology
  if arch["model"] != t.model or list(arch["input_shape"]) != list(t.input_shape) or (
      arch["num_classes"] != t.num_classes):
    raise SupernetInitError(
        f"architecture ({arch['model']}, input {arch['input_shape']}, {arch['num_classes']} "
        f"classes) is not from this supernet ({t.model}, input {list(t.input_shape)}, "
        f"{t.num_classes} classes)")
  indices = t.space.decisions_for_widths(arch["widths"])
  if indices is None:
    raise SupernetInitError(
        f"widths {arch['widths']} are not an architecture of the supernet's search space "
        f"(decisions {[list(d.candidates) for d in t.space.decisions]})")
  return indices


def init_from_supernet(model: keras.Model, arch: dict, workdir: str) -> dict:
  """Copies the supernet candidate weights of `arch` into `model`.

  Args:
    model: the dense child.
    arch: its architecture file's contents.
    workdir: the search workdir holding the supernet.

  Returns:
    A summary (checkpoint, layers set).
  """
  net = load_supernet(workdir)
  indices = arch_indices(arch, net)
  weights = net.child_weights(indices)
  done = set(dense.load_child_weights(model, weights))
  missing = [l.name for l in model.layers if l.weights and l.name not in done]
  if missing:
    raise SupernetInitError(f"supernet gave no weights for layers {missing}")
  return {"supernet_workdir": workdir, "decisions": indices, "layers": len(done)}
