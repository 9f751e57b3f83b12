"""tf.distribute strategy from `config.strategy`, and which task writes files.

'default' (one device), 'mirrored' (all local GPUs), 'multi_worker' (hosts,
from TF_CONFIG), 'tpu' (`config.tpu` address). Under multi-worker runs every
worker executes the same program; only the chief writes outputs, the others
write their share of collective checkpoints to a scratch directory.
Shared by the search and the retraining binaries.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket

import tensorflow as tf

from aps_tf import errors
from aps_tf import schema

STRATEGIES = schema.STRATEGIES


def make_strategy(cfg) -> tf.distribute.Strategy:
  """Builds the strategy named by `cfg.strategy` (TPU: the caller forces static shapes)."""
  name = cfg.strategy
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  if name == "multi_worker":
    if not os.environ.get("TF_CONFIG"):
      raise errors.ConfigError("strategy: 'multi_worker' needs the TF_CONFIG environment variable")
    return tf.distribute.MultiWorkerMirroredStrategy()
  if name == "tpu":
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=cfg.tpu or "")
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  raise errors.ConfigError(f"unknown strategy {name!r}; expected one of {STRATEGIES}")


def task(strategy: tf.distribute.Strategy) -> tuple[str | None, int]:
  """(task type, task id) of this process; (None, 0) outside multi-worker runs."""
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return None, 0
  resolver = strategy.cluster_resolver
  return resolver.task_type, int(resolver.task_id or 0)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """True on the task that writes the workdir."""
  task_type, task_id = task(strategy)
  if task_type in (None, "chief"):
    return True
  if task_type == "worker" and task_id == 0:
    return "chief" not in strategy.cluster_resolver.cluster_spec().as_dict()
  return False


def task_tag(strategy: tf.distribute.Strategy) -> str:
  task_type, task_id = task(strategy)
  return "chief" if task_type is None else f"{task_type}-{task_id}"


def write_dir(directory: str, strategy: tf.distribute.Strategy) -> str:
  """`directory` on the chief, a per-worker scratch directory elsewhere."""
  if is_chief(strategy):
    return directory
  return os.path.join(directory, f".worker-{task_tag(strategy)}")


class PeerLostError(errors.UserError, RuntimeError):
  """Another worker of a multi-worker run stopped; this one stops too."""


# What a collective op raises when a peer died or its connection broke.
_PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                tf.errors.AbortedError, tf.errors.CancelledError)


@contextlib.contextmanager
def peer_failures(strategy: tf.distribute.Strategy):
  """Turns a lost peer of a MultiWorkerMirroredStrategy run into a one-line
  user error (TF's health check aborts the collectives within seconds)."""
  try:
    yield
  except _PEER_ERRORS as e:
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
      raise
    what = " ".join(str(e).split())
    what = what.split("}}", 1)[-1].strip()[:160]
    raise PeerLostError(
        f"task {task_tag(strategy)} lost a peer worker ({type(e).__name__}: {what}); the last "
        "checkpoint is kept: restart every worker with the same command to resume") from None


def local_tf_configs(num_workers: int) -> list[str]:
  """TF_CONFIG values for `num_workers` workers on this host (free ports).

  For trying multi-worker runs (and testing them) on one machine.
  """
  socks = [socket.socket() for _ in range(num_workers)]
  for s in socks:
    s.bind(("127.0.0.1", 0))
  cluster = {"worker": [f"127.0.0.1:{s.getsockname()[1]}" for s in socks]}
  for s in socks:
    s.close()
  return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
          for i in range(num_workers)]
