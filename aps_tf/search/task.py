"""The search task (docs/method.md#the-search-loop): state and traced step, Orbit-style.

`SearchTask` is built from injected objects (supernet, policy, cost model,
optimisers; `SearchTask.from_config` makes them from a config under the
strategy's scope) and owns the EMA baseline, the step counters and the
traced functions, each traced once for every architecture (the architecture
is a tensor argument; `train_traces`/`reward_traces` count):

  * `supernet_step(archs[R, D], batch)`: replica r trains `archs[r]`; SGD with
    momentum (`settings.search_lr`), L2 weight decay on the APS kernels (and the
    'pairwise' shortcut kernels) only.
  * `reward_step(arch[D], batch)`: supernet forward with BN per
    `search.reward.bn`, reward-split accuracy all-reduced over replicas,
    R = acc * (F/T)^(alpha|beta), REINFORCE on the policy
    (loss = -log pi(a) (R - b) - lambda_ent H(pi), coupled L2), then the
    baseline b <- d b + (1 - d) R, starting at the first reward.
  * `phi_step()`: one transition step on P/Q (`aps_tf.transition`),
    transitional sharing only, every `search.phi_every` search iterations.

`train_step(iterators)` (an `aps_tf.runner.Task`) is one whole iteration in
graph code: policy step on a reward batch (after warm-up), supernet step on a
train batch with a fresh sample (uniform in warm-up), Phi step. Randomness is
a function of (seed, stream, step) (`aps_tf.seeds`), so a resumed run
continues exactly where its checkpoint was taken. The task's input methods
(`inputs.SearchInputs`), periodic probes (`probes.AnalysisProbes`) and host
draws (`sampling.HostSampling`) are mixins from their own modules.
"""

from __future__ import annotations

import functools

import keras
import ml_collections
import tensorflow as tf

from aps_tf import data
from aps_tf import distribute as strategy_lib
from aps_tf import layers as aps_layers
from aps_tf import precision
from aps_tf import runner
from aps_tf import schema
from aps_tf import transition
from aps_tf import weight_decay as weight_decay_lib
from aps_tf.models import supernet as supernet_lib
from aps_tf.policy import Policy
from aps_tf.search import inputs
from aps_tf.search import probes
from aps_tf.search import reward as reward_lib
from aps_tf.search import sampling
from aps_tf.search import settings

# Means since the last record; the reward ones only over search iterations.
TRAIN_METRICS = ("loss", "accuracy", "cost")
REWARD_METRICS = ("reward_accuracy", "reward", "advantage", "entropy", "log_prob",
                  "ctrl_loss")
# The names other modules and tests use (they live in `settings`).
ConfigError, SECTIONS = settings.ConfigError, settings.SECTIONS
resolve_config = settings.resolve_config



class SearchTask(inputs.SearchInputs, probes.AnalysisProbes, sampling.HostSampling,
                 runner.Task):
  """Supernet + policy search under a tf.distribute strategy.

  Args:
    cfg: the resolved config (`settings.resolve_config`).
    strategy: the strategy the objects below were built under.
    info: the dataset's shapes and split sizes.
    net: the built supernet (`supernet_from_config`).
    policy: the RL policy over the topology's decisions.
    cost_model: the reward's cost (`reward.make_cost_model`).
    net_opt: the supernet's optimiser, built over its variables.
    ctrl_opt: the policy's optimiser, built over its variables.
  """

  finite = ("loss", "ctrl_loss")

  def __init__(self, cfg: ml_collections.ConfigDict, strategy: tf.distribute.Strategy,
               info: data.DatasetInfo, net: supernet_lib.Supernet, policy: Policy,
               cost_model: reward_lib.CostModel, net_opt, ctrl_opt):
    self.cfg = cfg
    s = cfg.search
    self.strategy = strategy
    self.num_replicas = self.strategy.num_replicas_in_sync
    self.info = info
    self.net, self.policy, self.cost_model = net, policy, cost_model
    self.topology = net.topology
    self.space = self.topology.space
    self.net_opt, self.ctrl_opt = net_opt, ctrl_opt
    self.global_batch, self.steps_per_epoch = settings.batching(cfg, info, self.num_replicas)
    self.total_steps = int(s.epochs) * self.steps_per_epoch
    self.warmup_steps = int(s.warmup_epochs) * self.steps_per_epoch
    self.train_traces = 0
    self.reward_traces = 0
    with self.strategy.scope():
      first = tf.VariableAggregation.ONLY_FIRST_REPLICA
      self.step = tf.Variable(0, dtype=tf.int64, trainable=False, aggregation=first,
                              name="step")
      self.ctrl_steps = tf.Variable(0, dtype=tf.int64, trainable=False, aggregation=first,
                                    name="ctrl_steps")
      self.baseline = tf.Variable(0.0, trainable=False, aggregation=first, name="baseline")
      self.phi_opt = transition.PhiOptimizer.from_config(self.net.aps_layers, s)
    self._bn_vars = [v for l in self.net.batch_norm_layers()
                     for v in (l.moving_mean, l.moving_variance)]
    # BN statistics sync on read: each replica updates its own copy inside the
    # step; the step then averages the copies (the synchronised update).
    self._sync_bn = not isinstance(self.strategy, type(tf.distribute.get_strategy()))
    decay_ids = {id(l.kernel) for l in self.net.aps_layers + self.net.pair_shortcuts()}
    # Which trainable variables get weight decay (the APS and pair-shortcut kernels).
    self.decay_mask = [id(v) in decay_ids for v in self.net.trainable_variables]
    self.units = self.net.searched_units()
    # XLA compiles the compute (forward and gradients); updates stay outside.
    jit = bool(s.jit_compile)
    # No autograph: the steps' control flow is written as tf.cond/tf.while_loop,
    # and converting their call trees' source costs seconds per process.
    traced = functools.partial(tf.function, autograph=False)
    self._loss_and_grads = (traced(self._loss_and_grads_impl, jit_compile=True) if jit
                            else self._loss_and_grads_impl)
    self._reward_forward = (traced(self.reward_logits, jit_compile=True) if jit
                            else self.reward_logits)
    self.supernet_step = traced(self._train_step)
    self.reward_step = traced(self._reward_step)
    self.phi_step = traced(self._phi_step)
    self.probe_grads = probes.gradients_fn(self)
    self._train_archs_fn = traced(lambda step: sampling.train_archs(self, step))
    self._policy_arch_fn = traced(lambda step: sampling.policy_arch(self, step))
    # Loop means (host-read once per loop); plain variables, outside the scope.
    names = TRAIN_METRICS + REWARD_METRICS + (
        ("phi",) if schema.is_transitional(s.sharing) else ())
    # Means since the last record (reset in-graph; checkpointed, so a resumed
    # run records what the unkilled one did, whatever steps_per_loop).
    self.metrics = {k: keras.metrics.Mean(name=k) for k in names}
    # The attribute names are the checkpoint's keys: runs written before keep loading.
    self.checkpoint = tf.train.Checkpoint(
        net=self.net, controller=self.policy, net_opt=self.net_opt,
        ctrl_opt=self.ctrl_opt, step=self.step, ctrl_steps=self.ctrl_steps,
        baseline=self.baseline, generator=self.policy.generator, phi_opt=self.phi_opt,
        metrics=[v for m in self.metrics.values() for v in m.variables])
    self._iterators = None
    self._probe_batch = None

  @classmethod
  def from_config(cls, cfg: ml_collections.ConfigDict,
                  strategy: tf.distribute.Strategy | None = None,
                  info: data.DatasetInfo | None = None) -> "SearchTask":
    """Builds the supernet, policy, cost model and optimisers a config describes.

    Args:
      cfg: a search config; checked and resolved here (`settings.resolve_config`).
      strategy: defaults to the config's (`aps_tf.distribute.make_strategy`).
      info: overrides `data.dataset_info(cfg.data)` (benchmarks on synthetic data).

    Returns:
      The task, its initial weights a function of `cfg.seed`.

    Raises:
      ConfigError: a bad field, a batch that does not divide over the
        replicas or exceeds the train split, or an unreachable budget.
    """
    cfg = settings.resolve_config(cfg)
    strategy = strategy or strategy_lib.make_strategy(cfg)
    info = info or data.dataset_info(cfg.data)
    return cls(cfg, strategy, info, *settings.build_parts(cfg, strategy, info))

  def checkpoint_variables(self) -> list[tf.Variable]:
    """Every variable the checkpoint holds (for comparisons).

    Returns:
      The variables in a fixed order.
    """
    return (list(self.net.variables) + list(self.policy.variables)
            + list(self.net_opt.variables) + list(self.ctrl_opt.variables)
            + [self.step, self.ctrl_steps, self.baseline, self.policy.generator.state]
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
      grads = weight_decay_lib.add_weight_decay(grads, variables, precision.loss_scale(self.net_opt) * wd,
                                     mask=self.decay_mask, num_replicas=self.num_replicas)
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
    variables = self.policy.trainable_variables
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
        logp, ent = self.policy.log_prob_graph(arch[None])
        loss = -logp[0] * adv - s.controller.entropy_weight * ent[0]
        scaled = loss / self.num_replicas
      grads = tape.gradient(scaled, variables)
      grads = weight_decay_lib.add_weight_decay(grads, variables, wd, num_replicas=self.num_replicas)
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

    Args:
      images: a batch.
      arch: `[D]` decisions.

    Returns:
      float32 logits.
    """
    if self.cfg.search.reward.bn == "batch":
      with aps_layers.frozen_statistics():
        return self.net(images, arch, training=True)
    return self.net(images, arch, training=False)

  def _phi_step(self):
    return self.phi_opt.step()

  # -- one search iteration (runner.Task) -------------------------------------
  @tf.autograph.experimental.do_not_convert  # called inside the runner's converted loop
  def train_step(self, iterators) -> None:
    """One iteration in graph code: reward step (search phase), supernet step, Phi step.

    Args:
      iterators: the (train, reward) input iterators.
    """
    train_it, reward_it = iterators
    step = self.step.read_value()
    searching = step >= self.warmup_steps
    m = self.metrics
    runner.reset_every(m.values(), step, int(self.cfg.search.log_every_steps))

    def reward_part():
      out = self._reward_step(sampling.policy_arch(self, step), next(reward_it))
      for k in REWARD_METRICS:
        m[k].update_state(out[k])
      return tf.constant(0)

    if self.total_steps > self.warmup_steps:
      tf.cond(searching, reward_part, lambda: tf.constant(0))
    archs = sampling.train_archs(self, step)
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
    """The loop means of the metrics that were updated since the last record.

    Returns:
      {metric name: mean}.
    """
    return {k: float(v.result().numpy()) for k, v in self.metrics.items()
            if float(v.count.numpy()) > 0}
