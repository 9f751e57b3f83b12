"""The search's input: one builder of distributed datasets, seeded per split.

Every dataset the search reads goes through `distributed`: the infinite,
per-epoch reshuffled input of the search iterations (`search_input`), one
epoch of a split for re-scoring and probes (`epoch_input`), each split over
the strategy's input pipelines. `split_batch` splits a host batch over the
replicas (tests and benchmarks).
"""

from __future__ import annotations

from absl import logging
import numpy as np
import tensorflow as tf

from aps_tf import data
from aps_tf import seeds


def distributed(strategy: tf.distribute.Strategy, data_cfg, split: str, global_batch: int, *,
                training: bool, seed: int, skip: int = 0, take: int | None = None):
  """A repeated dataset of `split`, distributed over `strategy`'s input pipelines.

  Args:
    strategy: the search's strategy.
    data_cfg: the config's `data` section.
    split: 'train', 'reward', 'full_train' or 'test'.
    global_batch: the batch over all replicas.
    training: shuffle per epoch and augment.
    seed: the shuffle and augmentation seed.
    skip: search iterations already consumed; each pipeline drops its
      replicas' batches of those iterations before decoding them.
    take: stop after this many global batches (None: infinite).

  Returns:
    A `tf.distribute.DistributedDataset`.
  """
  def fn(ctx):
    per_pipeline = ctx.num_replicas_in_sync // ctx.num_input_pipelines
    ds = data.build_dataset(data_cfg, split, global_batch, training=training, seed=seed,
                            input_context=ctx, repeat=True, skip_batches=skip * per_pipeline)
    return ds if take is None else ds.take(take)

  return strategy.distribute_datasets_from_function(fn)


def search_input(task, split: str, skip: int = 0):
  """The search's infinite input for `split` ('train' or 'reward'), reshuffled per epoch.

  Args:
    task: the `SearchTask` (its strategy, config and batch).
    split: 'train' or 'reward'.
    skip: search iterations already consumed (a resume without the iterator
      in the checkpoint).

  Returns:
    A distributed dataset.
  """
  cfg = task.cfg
  augment = split == "train" or bool(cfg.search.reward.augment)
  seed = seeds.integer(cfg.seed, seeds.DATA, 0 if split == "train" else 1)
  return distributed(task.strategy, cfg.data, split, task.global_batch, training=augment,
                     seed=seed, skip=skip)


def epoch_input(task, split: str, epoch: int, augment: bool | None = None):
  """Epoch `epoch` of `split`, distributed (re-scoring, probes, tests).

  Args:
    task: the `SearchTask`.
    split: a data split.
    epoch: selects the shuffle seed.
    augment: the training pipeline (shuffled per epoch, augmented); default
      True for 'train', `search.reward.augment` for 'reward'.

  Returns:
    A distributed dataset of `task.steps_per_epoch` batches.
  """
  cfg = task.cfg
  if augment is None:
    augment = split == "train" or (split == "reward" and bool(cfg.search.reward.augment))
  seed = seeds.integer(cfg.seed, seeds.DATA, epoch, 0 if split == "train" else 1)
  return distributed(task.strategy, cfg.data, split, task.global_batch, training=bool(augment),
                     seed=seed, take=task.steps_per_epoch)


def split_batch(strategy: tf.distribute.Strategy, global_batch: int, images, labels):
  """Splits a host batch over the replicas (tests and benchmarks).

  Args:
    strategy: the strategy whose replicas get the parts.
    global_batch: the batch size over all replicas.
    images: `[global_batch, H, W, C]`.
    labels: `[global_batch]`.

  Returns:
    (images, labels): tensors on one replica, per-replica values otherwise.
  """
  replicas = strategy.num_replicas_in_sync
  if replicas == 1:
    return (tf.convert_to_tensor(images), tf.convert_to_tensor(labels))
  per = global_batch // replicas

  def part(x):
    return strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.convert_to_tensor(x[ctx.replica_id_in_sync_group * per:
                                           (ctx.replica_id_in_sync_group + 1) * per]))

  return (part(np.asarray(images)), part(np.asarray(labels)))


def checkpointed_iterators(task):
  """The (train, reward) iterators added to the task's checkpoint, or None.

  On one replica the iterators join the checkpoint before a restore: their
  state holds the shuffle buffer and, once filled, the in-memory cache.
  `search.checkpoint_input=False` keeps them out (a resume then rebuilds the
  input and skips the consumed batches: the same result).

  Args:
    task: the `SearchTask`.

  Returns:
    The iterators, or None where they cannot or should not be saved.
  """
  if task.num_replicas != 1 or not task.cfg.search.checkpoint_input:
    return None
  its = (iter(search_input(task, "train")), iter(search_input(task, "reward")))
  if not all(isinstance(it, tf.data.Iterator) for it in its):
    return None
  task.checkpoint.train_iterator, task.checkpoint.reward_iterator = its
  return its


def resumed_iterators(task):
  """(train, reward) iterators rebuilt at the task's step, skipping the consumed batches.

  Args:
    task: the `SearchTask` (restored).

  Returns:
    The two iterators.
  """
  step = int(task.step.numpy())
  if step:
    logging.warning("the input iterators are not in the checkpoint (%d replicas, "
                    "search.checkpoint_input=%s): resuming the input at step %d by "
                    "dropping the consumed batches before decoding", task.num_replicas,
                    task.cfg.search.checkpoint_input, step)
  return (iter(search_input(task, "train", skip=step)),
          iter(search_input(task, "reward", skip=max(0, step - task.warmup_steps))))


class SearchInputs:
  """The `SearchTask`'s input methods (its datasets and resumable iterators).

  A mixin: the task's `__init__` sets `_iterators = None`.
  """

  def prepare_input(self) -> None:
    """Before a restore: on one replica the iterators join the checkpoint (`checkpointed_iterators`)."""
    if self._iterators is None:
      self._iterators = checkpointed_iterators(self)

  def iterators(self):
    """The input iterators, rebuilt at the step when they are not checkpointed.

    Returns:
      (train, reward) iterators.
    """
    if self._iterators is None:
      self._iterators = resumed_iterators(self)
    return self._iterators

  # -- data (aps_tf.search.inputs) -------------------------------------------
  def dataset(self, split: str, epoch: int, augment: bool | None = None):
    """Epoch `epoch` of `split`, distributed (see `epoch_input`).

    Args:
      split: a data split.
      epoch: selects the shuffle seed.
      augment: the training pipeline; default per split.

    Returns:
      A distributed dataset.
    """
    return epoch_input(self, split, epoch, augment)

  def input_dataset(self, split: str, skip: int = 0):
    """The infinite search input of `split` (see `search_input`).

    Args:
      split: 'train' or 'reward'.
      skip: search iterations already consumed.

    Returns:
      A distributed dataset.
    """
    return search_input(self, split, skip)
