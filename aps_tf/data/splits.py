"""Index arithmetic for the search splits and per-worker shards.

Everything is a contiguous half-open range [lo, hi) of a source split whose
order is fixed (tfds shuffles records once, deterministically, when it
prepares a dataset; the embedded dataset is permuted with a fixed seed), so
the ranges are disjoint and identical on every host and every run.
"""

import math

from aps_tf.data import config


def reward_count(n_train: int, reward_fraction: float) -> int:
  """Examples of the training set that are held out for the reward."""
  n_reward = math.floor(n_train * reward_fraction + 0.5)
  if not 0 < n_reward < n_train:
    raise ValueError(f'reward_fraction={reward_fraction} leaves an empty split '
                     f'of a {n_train}-example training set.')
  return n_reward


def split_range(split: str, n_train: int, n_test: int,
                reward_fraction: float) -> tuple[str, int, int]:
  """(source split, lo, hi): 'train' is the head, 'reward' the tail."""
  config.check_split(split)
  if split == 'test':
    return 'test', 0, n_test
  k = n_train - reward_count(n_train, reward_fraction)
  return 'train', *{'train': (0, k), 'reward': (k, n_train),
                    'full_train': (0, n_train)}[split]


def shard_range(lo: int, hi: int, index: int, count: int) -> tuple[int, int]:
  """Part `index` of `count` near-equal, disjoint parts of [lo, hi)."""
  if not 0 <= index < count:
    raise ValueError(f'Shard index {index} out of range for {count} shards.')
  n = hi - lo
  return lo + index * n // count, lo + (index + 1) * n // count


def split_sizes(n_train: int, n_test: int,
                reward_fraction: float) -> dict[str, int]:
  sizes = {}
  for split in config.SPLITS:
    _, lo, hi = split_range(split, n_train, n_test, reward_fraction)
    sizes[split] = hi - lo
  return sizes
