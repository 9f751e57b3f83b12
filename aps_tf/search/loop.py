"""The search loop (docs/method.md#the-search-loop): an Orbit-style trainer around the supernet.

`Searcher` owns the supernet, the controller, their optimisers, the EMA
baseline and the step counter, all created under the strategy's scope, and
three traced functions, each traced once for every architecture (the
architecture is a tensor argument; `train_traces`/`reward_traces` count):

  * `supernet_step(archs[R, D], batch)`: supernet step. Replica r trains
    `archs[r]` (all rows equal unless `search.per_replica_archs`); SGD with
    momentum, piecewise-constant lr (x`lr_decay` at `lr_decay_epochs`) or
    cosine to `lr_min` (`lr_schedule`),
    L2 weight decay on the meta-weights (APS kernels) only.
  * `reward_step(arch[D], batch)`: supernet forward (no weight gradients)
    with BN on the reward batch's statistics, moving averages untouched
    (`search.reward.bn="batch"`), or in inference mode ("moving"),
    reward-split accuracy all-reduced over replicas,
    R = acc * (F/T)^(alpha|beta), REINFORCE update
    loss = -log pi(a) (R - b) - lambda_ent H(pi) with the controller's coupled
    L2 (`weight_decay * w` added to the gradient before Adam), then
    b <- d b + (1 - d) R. The baseline starts at the first reward (so the
    first advantage is 0).
  * `phi_step()`: one transition step on P/Q (`aps_tf.transition`; transitional
    only, every `search.phi_every` search iterations).

Per iteration after warm-up: controller step on a reward batch, supernet step
on a train batch with a fresh sample, Phi step. During warm-up the
architecture is uniform per decision and P/Q and the controller are frozen.

`Searcher` is an `aps_tf.runner.Task`: `train_step(iterators)` is one whole
search iteration in graph code (warm-up or search chosen in-graph by the
step), and the Runner runs `search.steps_per_loop` of them in one traced
loop, so one trace serves every architecture and every phase.

Randomness is a function of the step: architecture draws use stateless
sampling keyed on (seed, stream, step) (`aps_tf.seeds`). The input iterators
(one infinite, per-epoch reshuffled pipeline per split) are part of the
checkpoint on one replica; on several replicas TF's distributed iterators
cannot be saved, so a resumed run rebuilds them and skips the batches
already consumed. Either way a resumed run continues exactly where the
checkpoint was taken.
"""

from __future__ import annotations

import math
from typing import Any

from absl import logging
import keras
import ml_collections
import numpy as np
import tensorflow as tf

from aps_tf import config_check
from aps_tf import data
from aps_tf import errors
from aps_tf import layers as aps_layers
from aps_tf import models
from aps_tf import precision
from aps_tf import runner
from aps_tf import seeds
from aps_tf import transition
from aps_tf.controller import Controller
from aps_tf.models import supernet as supernet_lib
from aps_tf.search import reward as reward_lib
from aps_tf.train import optim
from aps_tf import distribute as strategy_lib

# Means since the last record; the reward ones only over search iterations.
TRAIN_METRICS = ("loss", "accuracy", "cost")
REWARD_METRICS = ("reward_accuracy", "reward", "advantage", "entropy", "log_prob",
                  "ctrl_loss")


ConfigError = errors.ConfigError
# The config sections a search reads (the rest may differ on resume).
SECTIONS = ("data", "model", "search")


def resolve_config(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Checks the search config and applies forced settings (TPU: static shapes)."""
  config_check.check(cfg)  # every section: a typo in train.* should not wait for the search
  cfg = ml_collections.ConfigDict(cfg.to_dict())
  if cfg.strategy == "tpu":
    cfg.search.static_shapes = True
  return cfg


def _search_lr(s, steps_per_epoch: int, total_steps: int):
  """The supernet optimiser's learning rate (a float or a Keras schedule)."""
  if s.get("lr_schedule", "piecewise") == "cosine":
    return keras.optimizers.schedules.CosineDecay(
        s.lr, max(1, total_steps), alpha=float(s.get("lr_min", 0.0)) / s.lr if s.lr else 0.0)
  boundaries = [int(e) * steps_per_epoch for e in s.lr_decay_epochs]
  values = [s.lr * s.lr_decay**k for k in range(len(boundaries) + 1)]
  return (keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
          if boundaries else s.lr)


def _aps_units(net: supernet_lib.Supernet):
  """(APS layer, in-slot or None, out-slot or None) for every searched layer."""
  out = []
  for block, unit in zip(net.topology.blocks, net.units):
    for _, part in unit.items():
      if isinstance(part, supernet_lib._ConvBN):  # pylint: disable=protected-access
        out.append((part.conv, None if part.depthwise or part.in_slot < 0 else part.in_slot,
                    part.out_slot))
      elif isinstance(part, supernet_lib._PairShortcut):  # pylint: disable=protected-access
        continue  # plain convs, not searched layers
      else:  # APSDense
        slot = block.in_slot if block.conv is None else block.conv.slot
        out.append((part, slot, None))
  return out


class Searcher(runner.Task):
  """Supernet + controller search under a tf.distribute strategy."""

  finite = ("loss", "ctrl_loss")

  def __init__(self, cfg: ml_collections.ConfigDict, strategy: tf.distribute.Strategy | None = None,
               info: data.DatasetInfo | None = None):
    """`info` overrides `data.dataset_info(cfg.data)` (benchmarks on synthetic data)."""
    self.cfg = cfg = resolve_config(cfg)
    s = cfg.search
    self.strategy = strategy or strategy_lib.make_strategy(cfg)
    self.num_replicas = self.strategy.num_replicas_in_sync
    self.info = info or data.dataset_info(cfg.data)
    self.topology = models.topology_from_config(cfg.model, self.info.image_shape,
                                                self.info.num_classes)
    self.space = self.topology.space
    self.cost_model = reward_lib.make_cost_model(self.topology, s.reward)
    reward_lib.check_budget(self.cost_model, s.reward.target)
    self.global_batch = int(s.batch_size)
    if self.global_batch % self.num_replicas:
      raise ConfigError(f"search.batch_size={self.global_batch} is not divisible by "
                       f"{self.num_replicas} replicas")
    self.steps_per_epoch = int(s.steps_per_epoch or
                               self.info.split_sizes["train"] // self.global_batch)
    if self.steps_per_epoch < 1:
      raise ConfigError(f"search.batch_size={self.global_batch} exceeds the train split "
                       f"({self.info.split_sizes['train']} examples)")
    self.total_steps = int(s.epochs) * self.steps_per_epoch
    self.warmup_steps = int(s.warmup_epochs) * self.steps_per_epoch
    self.train_traces = 0
    self.reward_traces = 0

    # The supernet's kernel initialisers are unseeded; seed Keras so a run's
    # initial weights are a function of cfg.seed.
    keras.utils.set_random_seed(int(cfg.seed))
    mixed = cfg.get("mixed_precision", "")
    with self.strategy.scope():
      with precision.policy_scope(mixed):  # the controller stays float32
        self.net = supernet_lib.Supernet(
            self.topology, sharing_mode=s.sharing,
            noise_std=s.noise_std if s.sharing == "transitional" else 0.0,
            static_shapes=s.static_shapes, bn_momentum=cfg.model.bn_momentum, seed=cfg.seed,
            shortcut=cfg.model.get("supernet_shortcut", "aps"),
            meta_init=cfg.model.get("meta_init", "he_normal"))
        self.net(tf.zeros((1,) + tuple(self.info.image_shape)),
                 tf.constant(self.space.largest(), tf.int32), training=False)
      c = s.controller
      self.controller = Controller(self.space.num_candidates, hidden=c.hidden,
                                   num_layers=c.layers, cost_fn=self.cost_model.tf_cost,
                                   target=s.reward.target, seed=cfg.seed,
                                   kind=c.get("kind", "per_decision"))
      lr = _search_lr(s, self.steps_per_epoch, self.total_steps)
      self.net_opt = precision.wrap_optimizer(
          keras.optimizers.SGD(learning_rate=lr, momentum=s.momentum), mixed)
      self.net_opt.build(self.net.trainable_variables)
      self.ctrl_opt = keras.optimizers.Adam(learning_rate=c.lr, beta_1=c.beta_1,
                                            beta_2=c.beta_2)
      self.ctrl_opt.build(self.controller.trainable_variables)
      first = tf.VariableAggregation.ONLY_FIRST_REPLICA
      self.step = tf.Variable(0, dtype=tf.int64, trainable=False, aggregation=first,
                              name="step")
      self.ctrl_steps = tf.Variable(0, dtype=tf.int64, trainable=False, aggregation=first,
                                    name="ctrl_steps")
      self.baseline = tf.Variable(0.0, trainable=False, aggregation=first, name="baseline")
      self.phi_opt = transition.PhiOptimizer.from_config(self.net.aps_layers, s)
    self._bn_layers = [l for l in self.net._flatten_layers()  # pylint: disable=protected-access
                       if isinstance(l, aps_layers.PerCandidateBatchNorm)]
    self._bn_vars = [v for l in self._bn_layers for v in (l.moving_mean, l.moving_variance)]
    # BN statistics sync on read: each replica updates its own copy inside the
    # step; the step then averages the copies (the synchronised update).
    self._sync_bn = not isinstance(self.strategy, type(tf.distribute.get_strategy()))
    decay_ids = {id(l.kernel) for l in self.net.aps_layers + self.net.pair_shortcuts()}
    self._decay_mask = [id(v) in decay_ids for v in self.net.trainable_variables]
    self._aps_units = _aps_units(self.net)
    # XLA compiles the compute (forward and gradients); updates stay outside.
    jit = bool(s.get("jit_compile", False))
    self._loss_and_grads = (tf.function(self._loss_and_grads_impl, jit_compile=True) if jit
                            else self._loss_and_grads_impl)
    self._reward_forward = (tf.function(self.reward_logits, jit_compile=True) if jit
                            else self.reward_logits)
    self.supernet_step = tf.function(self._train_step)
    self.reward_step = tf.function(self._reward_step)
    self.phi_step = tf.function(self._phi_step)
    self._probe_grads = tf.function(self._probe_grads_impl)
    self._train_archs_fn = tf.function(self._train_archs_graph)
    self._controller_arch_fn = tf.function(self._controller_arch_graph)
    # Loop means (host-read once per loop); plain variables, outside the scope.
    names = TRAIN_METRICS + REWARD_METRICS + (("phi",) if s.sharing == "transitional" else ())
    # Means since the last record (reset in-graph; checkpointed, so a resumed
    # run records what the unkilled one did, whatever steps_per_loop).
    self.metrics = {k: keras.metrics.Mean(name=k) for k in names}
    self.checkpoint = tf.train.Checkpoint(
        net=self.net, controller=self.controller, net_opt=self.net_opt,
        ctrl_opt=self.ctrl_opt, step=self.step, ctrl_steps=self.ctrl_steps,
        baseline=self.baseline, generator=self.controller.generator, phi_opt=self.phi_opt,
        metrics=[v for m in self.metrics.values() for v in m.variables])
    self._iterators = None

  def checkpoint_variables(self) -> list[tf.Variable]:
    """Every variable the checkpoint holds (for comparisons)."""
    return (list(self.net.variables) + list(self.controller.variables)
            + list(self.net_opt.variables) + list(self.ctrl_opt.variables)
            + [self.step, self.ctrl_steps, self.baseline, self.controller.generator.state]
            + list(self.phi_opt.velocities))

  # -- traced steps ---------------------------------------------------------
  def _train_step(self, archs, batch):
    self.train_traces += 1
    wd = float(self.cfg.search.weight_decay)
    variables = self.net.trainable_variables

    def replica_fn(archs, images, labels):
      ctx = tf.distribute.get_replica_context()
      arch = tf.gather(archs, ctx.replica_id_in_sync_group)
      loss, correct, grads = self._loss_and_grads(arch, images, labels)
      # Under float16 loss scaling the gradients are scaled: so is the decay.
      grads = optim.add_weight_decay(grads, variables, precision.loss_scale(self.net_opt) * wd,
                                     mask=self._decay_mask, num_replicas=self.num_replicas)
      self.net_opt.apply_gradients(zip(grads, variables))
      local_stats = [tf.identity(v.value) for v in self._bn_vars] if self._sync_bn else []
      return loss, correct / self.global_batch, local_stats

    loss, acc, stats = self.strategy.run(replica_fn, args=(archs,) + tuple(batch))
    for var, local in zip(self._bn_vars, stats):
      # MEAN over replicas of m*old + (1-m)*batch_stat_r = the synchronised update;
      # every replica then holds the same statistics (also for on-read variables,
      # whose replicas would otherwise drift apart between reads).
      var.assign(self.strategy.reduce(tf.distribute.ReduceOp.MEAN, local, axis=None))
    red = lambda x: self.strategy.reduce(tf.distribute.ReduceOp.SUM, x, axis=None)
    return {"loss": red(loss), "accuracy": red(acc)}

  def _loss_and_grads_impl(self, arch, images, labels):
    """Supernet forward and gradients of one replica (the part XLA compiles)."""
    with tf.GradientTape() as tape:
      logits = self.net(images, arch, training=True)
      ce = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
      loss = tf.reduce_sum(ce) / self.global_batch
      scaled = precision.scale_loss(self.net_opt, loss)
    grads = tape.gradient(scaled, self.net.trainable_variables)
    return loss, runner.num_correct(logits, labels), grads

  def _reward_step(self, arch, batch):
    self.reward_traces += 1
    s = self.cfg.search
    variables = self.controller.trainable_variables
    wd = float(s.controller.weight_decay)

    def replica_fn(arch, images, labels):
      ctx = tf.distribute.get_replica_context()
      correct = runner.num_correct(self._reward_forward(images, arch), labels)
      acc = ctx.all_reduce(tf.distribute.ReduceOp.SUM, correct) / self.global_batch
      cost = self.cost_model.tf_cost(arch[None])[0]
      r = reward_lib.reward(acc, cost, s.reward.target, s.reward.alpha, s.reward.beta)
      b = tf.where(self.ctrl_steps > 0, self.baseline, r)
      adv = tf.stop_gradient(r - b)
      with tf.GradientTape() as tape:
        logp, ent = self.controller.log_prob_graph(arch[None])
        loss = -logp[0] * adv - s.controller.entropy_weight * ent[0]
        scaled = loss / self.num_replicas
      grads = tape.gradient(scaled, variables)
      grads = optim.add_weight_decay(grads, variables, wd, num_replicas=self.num_replicas)
      self.ctrl_opt.apply_gradients(zip(grads, variables))
      d = s.controller.baseline_decay
      self.baseline.assign(d * b + (1.0 - d) * r)
      self.ctrl_steps.assign_add(1)
      return {"reward_accuracy": acc, "reward": r, "advantage": adv, "entropy": ent[0],
              "log_prob": logp[0], "cost": tf.cast(cost, tf.float32), "ctrl_loss": loss}

    out = self.strategy.run(replica_fn, args=(arch,) + tuple(batch))
    return {k: self.strategy.experimental_local_results(v)[0] for k, v in out.items()}

  def reward_logits(self, images, arch):
    """The supernet's forward for the reward (and re-scoring), BN per `search.reward.bn`.

    "batch": normalised by this batch's statistics, moving averages untouched
    (the reference's reward); "moving": inference mode.
    """
    if self.cfg.search.reward.bn == "batch":
      with aps_layers.frozen_statistics():
        return self.net(images, arch, training=True)
    return self.net(images, arch, training=False)

  def _phi_step(self):
    return self.phi_opt.step()

  def _probe_grads_impl(self, arch, images, labels):
    """Meta-weight gradients of `arch` on one local batch (no update).

    Runs in replica context (every replica computes the same, nothing is
    reduced): in cross-replica context on-read BN statistics would be read
    through a collective, which has no gradient.
    """
    kernels = [layer.kernel for layer, _, _ in self._aps_units]

    def replica_fn():
      with tf.GradientTape() as tape:
        logits = self.net(images, arch, training=False)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
            labels, logits, from_logits=True))
      return tape.gradient(loss, kernels)

    grads = self.strategy.run(replica_fn)
    return [self.strategy.experimental_local_results(g)[0] for g in grads]

  # -- sampling (graph code, stateless in (seed, step)) -----------------------
  def _train_archs_graph(self, step):
    """[R, D] architectures for the supernet step `step` (uniform in warm-up)."""
    n = self.num_replicas if self.cfg.search.per_replica_archs else 1
    seed = seeds.stateless(self.cfg.seed, seeds.TRAIN_ARCH, step)
    counts = tf.constant(self.space.num_candidates, tf.float32)

    def uniform():
      u = tf.random.stateless_uniform([n, self.space.num_decisions], seed)
      return tf.minimum(tf.cast(tf.floor(u * counts), tf.int32),
                        tf.cast(counts, tf.int32) - 1)

    def controller():
      return self.controller._run(n, seed=seed)[0]  # pylint: disable=protected-access

    archs = tf.cond(tf.cast(step, tf.int64) < self.warmup_steps, uniform, controller)
    return tf.repeat(archs, self.num_replicas // n, axis=0)

  def _controller_arch_graph(self, step):
    seed = seeds.stateless(self.cfg.seed, seeds.CONTROLLER_ARCH, step)
    return self.controller._run(1, seed=seed)[0][0]  # pylint: disable=protected-access

  def train_archs(self, step: int) -> np.ndarray:
    """The [R, D] architectures the search trains at `step` (host copy)."""
    return self._train_archs_fn(tf.constant(step, tf.int64)).numpy()

  def controller_arch(self, step: int) -> np.ndarray:
    """The [D] architecture the controller is rewarded for at `step` (host copy)."""
    return self._controller_arch_fn(tf.constant(step, tf.int64)).numpy()

  # -- one search iteration (runner.Task) -------------------------------------
  def train_step(self, iterators) -> None:
    """One iteration in graph code: reward step (search phase), supernet step, Phi step."""
    train_it, reward_it = iterators
    step = self.step.read_value()
    searching = step >= self.warmup_steps
    m = self.metrics
    runner.reset_every(m.values(), step, int(self.cfg.search.log_every_steps))

    def reward_part():
      out = self._reward_step(self._controller_arch_graph(step), next(reward_it))
      for k in REWARD_METRICS:
        m[k].update_state(out[k])
      return tf.constant(0)

    if self.total_steps > self.warmup_steps:
      tf.cond(searching, reward_part, lambda: tf.constant(0))
    archs = self._train_archs_graph(step)
    out = self._train_step(archs, next(train_it))
    m["loss"].update_state(out["loss"])
    m["accuracy"].update_state(out["accuracy"])
    m["cost"].update_state(tf.cast(self.cost_model.tf_cost(archs[:1])[0], tf.float32))
    if "phi" in m:
      every = int(self.cfg.search.phi_every)

      def phi_part():
        m["phi"].update_state(self.phi_opt.step())
        return tf.constant(0)

      tf.cond(searching & ((step - self.warmup_steps) % every == 0), phi_part,
              lambda: tf.constant(0))

  def train_loop_end(self) -> dict[str, float]:
    return {k: float(v.result().numpy()) for k, v in self.metrics.items()
            if float(v.count.numpy()) > 0}

  def prepare_input(self) -> None:
    """Before a restore: on one replica the iterators join the checkpoint.

    Their state holds the shuffle buffer and, once filled, the in-memory
    cache; `search.checkpoint_input=False` keeps them out (a resume then
    rebuilds the input and skips the consumed batches: the same result).
    """
    if (self.num_replicas == 1 and self._iterators is None
        and self.cfg.search.get("checkpoint_input", True)):
      its = (iter(self.input_dataset("train")), iter(self.input_dataset("reward")))
      if all(isinstance(it, tf.data.Iterator) for it in its):
        self._iterators = its
        self.checkpoint.train_iterator, self.checkpoint.reward_iterator = its

  def iterators(self):
    """(train, reward) iterators; rebuilt at the step when they are not checkpointed."""
    if self._iterators is None:
      step = int(self.step.numpy())
      if step:
        logging.warning("the input iterators are not in the checkpoint (%d replicas, "
                        "search.checkpoint_input=%s): resuming the input at step %d by "
                        "dropping the consumed batches before decoding", self.num_replicas,
                        self.cfg.search.get("checkpoint_input", True), step)
      self._iterators = (iter(self.input_dataset("train", skip=step)),
                         iter(self.input_dataset("reward",
                                                 skip=max(0, step - self.warmup_steps))))
    return self._iterators

  # -- data -----------------------------------------------------------------
  def dataset(self, split: str, epoch: int, augment: bool | None = None):
    """Epoch `epoch` of `split`, distributed (re-scoring, probes, tests).

    `augment`: the training pipeline (shuffled per epoch, augmented); default
    True for 'train', `search.reward.augment` for 'reward'.
    """
    cfg = self.cfg
    if augment is None:
      augment = split == "train" or (split == "reward" and bool(cfg.search.reward.augment))
    training = bool(augment)
    seed = seeds.integer(cfg.seed, seeds.DATA, epoch, 0 if split == "train" else 1)

    def fn(ctx):
      ds = data.build_dataset(cfg.data, split, self.global_batch, training=training, seed=seed,
                              input_context=ctx, repeat=True)
      return ds.take(self.steps_per_epoch)

    return self.strategy.distribute_datasets_from_function(fn)

  def input_dataset(self, split: str, skip: int = 0):
    """The search's infinite input for `split` ('train' or 'reward'), reshuffled per epoch.

    `skip`: search iterations already consumed (a resume without the iterator
    in the checkpoint). Each input pipeline drops the per-replica batches of
    its replicas for those iterations, before decoding or augmenting them.
    """
    cfg = self.cfg
    augment = split == "train" or bool(cfg.search.reward.augment)
    seed = seeds.integer(cfg.seed, seeds.DATA, 0 if split == "train" else 1)

    def fn(ctx):
      per_pipeline = ctx.num_replicas_in_sync // ctx.num_input_pipelines
      return data.build_dataset(cfg.data, split, self.global_batch, training=augment, seed=seed,
                                input_context=ctx, repeat=True,
                                skip_batches=skip * per_pipeline)

    return self.strategy.distribute_datasets_from_function(fn)

  def distribute_batch(self, images, labels):
    """Splits a global batch over replicas (tests and benchmarks)."""
    if self.num_replicas == 1:
      return (tf.convert_to_tensor(images), tf.convert_to_tensor(labels))
    per = self.global_batch // self.num_replicas

    def part(x):
      return self.strategy.experimental_distribute_values_from_function(
          lambda ctx: tf.convert_to_tensor(x[ctx.replica_id_in_sync_group * per:
                                             (ctx.replica_id_in_sync_group + 1) * per]))

    return (part(np.asarray(images)), part(np.asarray(labels)))

  def at_interval(self, step: int, log: runner.MetricsLog) -> None:
    """Analysis record: gradient probes, Phi (total and per layer), decision probabilities."""
    if getattr(self, "_probe_batch", None) is None:
      batch = next(iter(self.dataset("reward", 0, augment=False)))
      self._probe_batch = tuple(self.strategy.experimental_local_results(x)[0] for x in batch)
    rec = {"kind": "analysis", "step": step}
    rec.update(self.probe(step, *self._probe_batch))
    rec["phi"] = float(self.net.phi().numpy())
    rec["phi_per_layer"] = {k: float(v.numpy()) for k, v in self.net.phi_per_layer().items()}
    probs = self.decision_probabilities(step)
    rec["probabilities"] = probs.tolist()
    log.write(rec)

  # -- analysis probes ------------------------------------------------------
  def probe(self, step: int, images, labels) -> dict[str, Any]:
    """Gradient cosine (Eq. 3) and coupled-gradient norm (§3.3) of two sampled archs.

    Two different architectures a, a' (uniform in warm-up, else from the
    controller) are evaluated on the same batch (BN in inference mode, no update).
      grad_cosine: cos(g_W(a), g_W(a')) per APS layer, averaged over layers.
      coupled_grad_norm: the part of the update on a' that lands on a's
        candidate kernels, sqrt(sum_l ||Q^{i}^T g_W(a') P^{o}||_F^2) over the
        layers where a and a' pick different candidates (the paper's
        "coupled updates from other candidates", one step, lr omitted). It is
        exactly 0 under independent sharing and largest under ordinal.
    """
    rng = np.random.default_rng(seeds.integer(self.cfg.seed, seeds.PROBE, step))
    if step < self.warmup_steps:
      a1, a2 = (np.array(self.space.sample_uniform(rng), np.int32) for _ in range(2))
    else:
      archs = self.controller.sample(seeds.stateless(self.cfg.seed, seeds.PROBE, step),
                                     16)[0].numpy()
      a1 = archs[0]
      others = [a for a in archs[1:] if not np.array_equal(a, a1)]
      # Eq. 3 compares two *different* candidates; a collapsed policy falls back to uniform.
      a2 = others[0] if others else np.array(self.space.sample_uniform(rng), np.int32)
      if np.array_equal(a1, a2):
        a2 = np.array(self.space.largest() if list(a1) != self.space.largest()
                      else self.space.smallest(), np.int32)
    g1 = [g.numpy() for g in self._probe_grads(tf.constant(a1), images, labels)]
    g2 = [g.numpy() for g in self._probe_grads(tf.constant(a2), images, labels)]
    cos = []
    for x, y in zip(g1, g2):
      nx, ny = np.linalg.norm(x), np.linalg.norm(y)
      if nx > 0 and ny > 0:
        cos.append(float(np.sum(x * y) / (nx * ny)))
    idx1 = self.net.slot_indices(a1).numpy()
    idx2 = self.net.slot_indices(a2).numpy()
    coupled = 0.0
    for (layer, in_slot, out_slot), g in zip(self._aps_units, g2):
      i1 = None if in_slot is None else idx1[in_slot]
      i2 = None if in_slot is None else idx2[in_slot]
      o1 = None if out_slot is None else idx1[out_slot]
      o2 = None if out_slot is None else idx2[out_slot]
      if (i1, o1) == (i2, o2):
        continue
      coupled += float(np.sum(_project_grad(layer, g, i1, o1) ** 2))
    return {"grad_cosine": float(np.mean(cos)) if cos else float("nan"),
            "coupled_grad_norm": math.sqrt(coupled), "probe_archs": [a1.tolist(), a2.tolist()]}

  def decision_probabilities(self, step: int, n: int = 64) -> np.ndarray:
    """[D, A_max] empirical frequency of each candidate over n controller samples."""
    archs = self.controller.sample(seeds.stateless(self.cfg.seed, seeds.PROBE, step, 1),
                                   n)[0].numpy()
    out = np.zeros((self.space.num_decisions, self.controller.max_candidates))
    for t in range(self.space.num_decisions):
      out[t] = np.bincount(archs[:, t], minlength=self.controller.max_candidates) / n
    return out


def _project_grad(layer, g, in_index, out_index) -> np.ndarray:
  """Q^{i}^T g P^{o} of a meta-weight gradient g (the candidate-kernel view)."""
  def proj(side, var, index):
    c = side.candidates[index]
    return np.asarray(var)[index][:, :c]
  side_in, side_out = layer._in, layer._out  # pylint: disable=protected-access
  if layer.__class__.__name__ == "APSDepthwiseConv2D":
    if out_index is None or not side_out.searched:
      return g
    return np.einsum("hwM,Mc->hwc", g[..., 0], proj(side_out, layer.p, out_index))
  if g.ndim == 2:  # dense [M_in, units]
    if in_index is None or not side_in.searched:
      return g
    return np.einsum("Iu,Iy->yu", g, proj(side_in, layer.q, in_index))
  if out_index is not None and side_out.searched:
    g = np.einsum("hwIO,Ox->hwIx", g, proj(side_out, layer.p, out_index))
  if in_index is not None and side_in.searched:
    g = np.einsum("hwIx,Iy->hwyx", g, proj(side_in, layer.q, in_index))
  return g
