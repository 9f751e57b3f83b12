"""The search's settings from its config: checked config, batching, learning rate, parts.

`resolve_config` checks a config once and applies the settings a strategy
forces; `batching` and `search_lr` derive the step counts and the supernet's
learning-rate schedule; `build_parts` makes the objects `SearchTask` is built
from (its `from_config` factory).
"""

from __future__ import annotations

import keras
import ml_collections
import tensorflow as tf

from aps_tf import config_check
from aps_tf import data
from aps_tf import errors
from aps_tf import models
from aps_tf import precision
from aps_tf.policy import Policy
from aps_tf.search import reward as reward_lib

ConfigError = errors.ConfigError
# The config sections a search reads (the rest may differ on resume).
SECTIONS = ("data", "model", "search")
_RESOLVED: list[ml_collections.ConfigDict] = []  # by identity: checked in this process


def resolve_config(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Checks a search config once and completes it; applies forced settings.

  Args:
    cfg: a search config (from a config file, or a saved `config.json`).

  Returns:
    A new ConfigDict over the defaults of configs/base.py (TPU: static
    shapes forced; `search.reward.target_fraction` turned into the absolute
    `search.reward.target`, that fraction of the widest architecture's cost).
    Resolving a resolved config returns it unchanged, so a process checks
    each config once.

  Raises:
    ConfigError: a field is unknown, of the wrong kind or out of range.
  """
  if any(c is cfg for c in _RESOLVED):
    return cfg
  config_check.check(cfg)  # every section: a typo in train.* should not wait for the search
  cfg = config_check.with_defaults(cfg)
  if cfg.strategy == "tpu":
    cfg.search.static_shapes = True
  r = cfg.search.reward
  if r.target_fraction is not None:
    r.target = float(r.target_fraction) * widest_cost(cfg)
  _RESOLVED.append(cfg)
  return cfg


def widest_cost(cfg: ml_collections.ConfigDict) -> float:
  """The cost (`search.reward.kind`) of the widest architecture (a user's own model).

  Args:
    cfg: a complete config.

  Returns:
    FLOPs, parameters or milliseconds, as the reward counts them.
  """
  info = data.dataset_info(cfg.data)
  t = models.topology_from_config(cfg.model, info.image_shape, info.num_classes)
  return float(reward_lib.make_cost_model(t, cfg.search.reward).cost(t.space.largest()))


def search_lr(s, steps_per_epoch: int, total_steps: int):
  """The supernet optimiser's learning rate (a float or a Keras schedule)."""
  if s.lr_schedule == "cosine":
    return keras.optimizers.schedules.CosineDecay(
        s.lr, max(1, total_steps), alpha=float(s.lr_min) / s.lr if s.lr else 0.0)
  boundaries = [int(e) * steps_per_epoch for e in s.lr_decay_epochs]
  values = [s.lr * s.lr_decay**k for k in range(len(boundaries) + 1)]
  return (keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
          if boundaries else s.lr)


def batching(cfg, info: data.DatasetInfo, num_replicas: int) -> tuple[int, int]:
  """(global batch, steps per epoch) of a search, checked against the replicas and data."""
  s = cfg.search
  global_batch = int(s.batch_size)
  if global_batch % num_replicas:
    raise ConfigError(f"search.batch_size={global_batch} is not divisible by "
                      f"{num_replicas} replicas")
  steps_per_epoch = int(s.steps_per_epoch or info.split_sizes["train"] // global_batch)
  if steps_per_epoch < 1:
    raise ConfigError(f"search.batch_size={global_batch} exceeds the train split "
                      f"({info.split_sizes['train']} examples)")
  return global_batch, steps_per_epoch


def build_parts(cfg: ml_collections.ConfigDict, strategy: tf.distribute.Strategy,
                info: data.DatasetInfo) -> tuple:
  """The objects a `SearchTask` is built from, made under the strategy's scope.

  Args:
    cfg: the resolved config.
    strategy: the run's strategy.
    info: the dataset's shapes and split sizes.

  Returns:
    (supernet, policy, cost model, supernet optimiser, policy optimiser).

  Raises:
    ConfigError: a batch that does not fit, or an unreachable budget.
  """
  s = cfg.search
  topology = models.topology_from_config(cfg.model, info.image_shape, info.num_classes)
  cost_model = reward_lib.make_cost_model(topology, s.reward)
  reward_lib.check_budget(cost_model, s.reward.target)
  _, steps_per_epoch = batching(cfg, info, strategy.num_replicas_in_sync)
  total_steps = int(s.epochs) * steps_per_epoch
  # The supernet's kernel initialisers are unseeded; seed Keras so a run's
  # initial weights are a function of cfg.seed.
  keras.utils.set_random_seed(int(cfg.seed))
  mixed = cfg.mixed_precision
  with strategy.scope():
    with precision.policy_scope(mixed):  # the policy stays float32
      net = models.supernet_from_config(cfg, topology)
    c = s.controller
    policy = Policy(topology.space.num_candidates, hidden=c.hidden, num_layers=c.layers,
                    cost_fn=cost_model.tf_cost, target=s.reward.target, seed=cfg.seed,
                    kind=c.kind)
    lr = search_lr(s, steps_per_epoch, total_steps)
    net_opt = precision.wrap_optimizer(
        keras.optimizers.SGD(learning_rate=lr, momentum=s.momentum), mixed)
    net_opt.build(net.trainable_variables)
    ctrl_opt = keras.optimizers.Adam(learning_rate=c.lr, beta_1=c.beta_1, beta_2=c.beta_2)
    ctrl_opt.build(policy.trainable_variables)
  return net, policy, cost_model, net_opt, ctrl_opt
