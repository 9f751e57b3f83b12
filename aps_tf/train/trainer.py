"""Retraining: the dense child of an architecture file, trained on the one training core.

`RetrainTask` (a `runner.Task`) owns the state: the dense child, SGD
(nesterov) with linear warm-up + cosine, coupled L2 weight decay
(`weight_decay_lib.add_weight_decay`, optionally not on BN/bias), label smoothing, the
step counter, the loss/accuracy `keras.metrics`, and the iterator of one
infinite, seeded 'full_train' pipeline (tf.data reshuffles it every epoch).
`runner.Runner` drives it: `train.steps_per_loop` steps per traced call,
checkpoints every `train.checkpoint_every_steps` steps, records the mean
loss, accuracy (and the lr) over the last `train.log_every_steps` steps and
over every epoch (metrics.jsonl, tb/). Records and results do not depend on
`train.steps_per_loop`. 'test' is read once, at the end.

Resume: the checkpoint (WORKDIR/ckpt) holds the model, optimiser, step,
training wall time, the epoch's running metrics and, on one replica, the
input iterator itself, so a resumed run (also after SIGKILL) continues the
data stream exactly where the checkpoint was taken: bit-identical to an
unkilled run. TF's distributed iterators (MirroredStrategy, multi-worker)
cannot be checkpointed, and an iterator's state holds its in-memory cache
and shuffle buffer (CIFAR-10: about 200 MB, benchmarks/retrain_loop.py),
which `train.checkpoint_input=False` keeps out; in both cases the resumed
run rebuilds the pipeline and skips the consumed batches
(`_distributed_iterator`, with a warning), with the same result.

`train.init = "supernet"`: the CheckpointManager's `init_fn` copies the
search's candidate weights into the child (aps_tf.train.supernet_init); it
runs only when the workdir has no checkpoint yet.

Workdir (chief only writes): config.json, arch.json (copy), ckpt/, tb/
(scalars and the HParams record), metrics.jsonl, and the results
model.keras (the trained child) and metrics.json. Every file goes through
tf.io.gfile or aps_tf.fileio.
"""

from __future__ import annotations

import functools
import os
import time

from absl import logging
import keras
import tensorflow as tf

from aps_tf import archfile
from aps_tf import config_check
from aps_tf import data
from aps_tf import distribute as strategy_lib
from aps_tf import errors
from aps_tf import fileio
from aps_tf import flops as flops_lib
from aps_tf import lifecycle
from aps_tf import precision
from aps_tf import runner as runner_lib
from aps_tf import seeds
from aps_tf import weight_decay as weight_decay_lib
from aps_tf.models import dense
from aps_tf.train import optim


class TrainError(errors.UserError, ValueError):
  """A retraining run that cannot start; the message says why and where."""


# A NaN/inf loss stops the run before anything after it is saved.
NonFiniteLossError = runner_lib.NonFiniteError

# The config sections retraining reads: a rerun may change the others (all
# are checked before it starts).
SECTIONS = ("data", "train")

# Config fields recorded for TensorBoard's HParams dashboard.
HPARAM_KEYS = ("train.lr", "train.epochs", "train.batch_size", "train.weight_decay",
               "train.init", "train.label_smoothing", "seed")


def config_to_json(cfg) -> str:
  """The text of `config.json` for `cfg` (sorted keys, indented).

  Args:
    cfg: a config.

  Returns:
    JSON text ending in a newline.
  """
  return cfg.to_json_best_effort(indent=2, sort_keys=True) + "\n"


def _check_arch(arch: dict, arch_path: str, info: data.DatasetInfo) -> None:
  if tuple(arch["input_shape"]) != tuple(info.image_shape):
    raise TrainError(f"{arch_path}: input_shape {arch['input_shape']} does not match the "
                     f"config's data ({info.name}: {list(info.image_shape)})")
  if arch["num_classes"] != info.num_classes:
    raise TrainError(f"{arch_path}: num_classes {arch['num_classes']} does not match the "
                     f"config's data ({info.name}: {info.num_classes})")


def _check_workdir_arch(workdir: str, arch: dict, arch_path: str) -> None:
  """A workdir belongs to one architecture: refuse to resume another's run."""
  existing = os.path.join(workdir, "arch.json")
  if not tf.io.gfile.exists(existing):
    return
  try:
    old = archfile.load(existing)
  except archfile.ArchFileError as e:
    raise TrainError(f"workdir {workdir} holds an unreadable arch.json: {e}") from e
  keys = ("model", "input_shape", "num_classes", "widths")
  if any(old.get(k) != arch.get(k) for k in keys):
    raise TrainError(
        f"workdir {workdir} holds a run of another architecture ({existing}: {old['model']} "
        f"widths {old['widths']}) than {arch_path} ({arch['model']} widths {arch['widths']}); "
        f"use a fresh --workdir")


def _check_checkpoint_model(model: keras.Model, path: str, arch_path: str) -> None:
  """The checkpoint's model must be this architecture (read before the full restore)."""
  try:
    status = tf.train.Checkpoint(model=model).restore(path).expect_partial()
    status.assert_existing_objects_matched()
  except (ValueError, AssertionError, tf.errors.OpError) as e:
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise TrainError(f"checkpoint {path} does not match the architecture of {arch_path}: "
                     f"{msg}") from e


def _per_example_loss(labels, logits, num_classes: int, smoothing: float):
  onehot = tf.one_hot(labels, num_classes)
  if smoothing:
    onehot = onehot * (1.0 - smoothing) + smoothing / num_classes
  return tf.nn.softmax_cross_entropy_with_logits(onehot, tf.cast(logits, tf.float32))


class RetrainTask(runner_lib.Task):
  """The retraining state and its step, for `runner.Runner`.

  Why a Task: the Runner owns looping, checkpoints, logging and NaN stops for
  search and retraining alike; this class only says what one step does and
  what state a checkpoint must hold for a bit-identical resume.
  """

  def __init__(self, cfg, arch: dict, strategy: tf.distribute.Strategy, steps_per_epoch: int):
    tcfg = cfg.train
    self.log_every = max(1, int(tcfg.log_every_steps))
    self.cfg = cfg
    self.strategy = strategy
    self.batch = int(tcfg.batch_size)
    self.steps_per_epoch = int(steps_per_epoch)
    self.arch = arch
    self.num_classes = int(arch["num_classes"])
    self.smoothing = float(tcfg.label_smoothing)
    self.weight_decay = float(tcfg.weight_decay)
    self.replicas = strategy.num_replicas_in_sync
    self.data_seed = seeds.integer(cfg.seed, seeds.TRAIN_DATA)
    keras.utils.set_random_seed(int(cfg.seed))

    # Mixed precision (aps_tf.precision): the child is built under the policy,
    # the optimizer loss-scaled for float16; the loss is computed in float32.
    mixed = cfg.mixed_precision
    with strategy.scope():
      with precision.policy_scope(mixed):
        self.model = dense.build_from_arch(arch)
      self.schedule = optim.make_schedule(tcfg, steps_per_epoch)
      self.optimizer = precision.wrap_optimizer(optim.make_optimizer(tcfg, self.schedule), mixed)
      self.optimizer.build(self.model.trainable_variables)
      self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    self.decay_mask = weight_decay_lib.decay_mask(
        self.model.trainable_variables,
        weight_decay_lib.decayed_variables(self.model, bool(tcfg.decay_bn_and_bias)))

    # Running means since the last record (reset every `log_every` steps) and
    # over the epoch, reset in-graph, so that what is recorded at a step does
    # not depend on steps_per_loop or on a resume (they are checkpointed).
    # They are updated in cross-replica context with replica-reduced values,
    # so they live outside the strategy (plain variables).
    self.window = (keras.metrics.Mean("loss"), keras.metrics.Mean("accuracy"))
    self.epoch = (keras.metrics.Mean("epoch_loss"), keras.metrics.Mean("epoch_accuracy"))
    self.last_epoch = tf.Variable([float("nan")] * 2, dtype=tf.float32, trainable=False,
                                  name="last_epoch")  # (loss, accuracy) of the last full epoch
    self.wall_time = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="wall_time")
    self._segment = None  # (wall_time at this process's first loop, time.time() then)

    state = dict(model=self.model, optimizer=self.optimizer, step=self.step,
                 wall_time=self.wall_time, last_epoch=self.last_epoch,
                 metrics=[v for m in self.window + self.epoch for v in m.variables])
    self._iterator = None
    self.eval_traces = 0  # traces of `evaluate`'s step (one per call)
    if self.replicas == 1 and bool(tcfg.checkpoint_input):
      # A plain tf.data iterator is trackable: it is saved with the state.
      self._iterator = iter(self._dataset(None))
      state["data"] = self._iterator
    self.checkpoint = tf.train.Checkpoint(**state)

  # -- input --------------------------------------------------------------
  def _dataset(self, ctx: tf.distribute.InputContext | None,
               skip_batches: int = 0) -> tf.data.Dataset:
    return data.build_dataset(self.cfg.data, "full_train", self.batch, training=True,
                              seed=self.data_seed, input_context=ctx, repeat=True,
                              skip_batches=skip_batches)

  def _distributed_iterator(self):
    """Input not in the checkpoint: rebuilt on resume, skipping the consumed batches.

    TF 2.21's DistributedIterator is not trackable (a Checkpoint refuses it),
    and `train.checkpoint_input=False` keeps large iterator states (an
    in-memory cache, the shuffle buffer) out of checkpoints, so this is the
    one place a resumed run replays input: each input pipeline skips the
    per-replica batches it had yielded (`step` steps times its replicas).
    They are read again but dropped before decoding and augmentation
    (`data.build_dataset(skip_batches=)`).
    """
    step = int(self.step.numpy())
    if step:
      logging.warning(
          "resuming at step %d with the input iterator outside the checkpoint (%d replicas, "
          "train.checkpoint_input=%s): the input pipeline is rebuilt and the batches of the "
          "first %d steps are read again and dropped before decoding", step, self.replicas,
          self.cfg.train.checkpoint_input, step)

    def fn(ctx: tf.distribute.InputContext):
      per_pipeline = ctx.num_replicas_in_sync // ctx.num_input_pipelines
      return self._dataset(ctx, skip_batches=step * per_pipeline)
    return iter(self.strategy.distribute_datasets_from_function(fn))

  def iterators(self):
    if self._iterator is None:
      self._iterator = self._distributed_iterator()
    return self._iterator

  # -- the step (graph code) ------------------------------------------------
  def _replica_step(self, images, labels):
    variables = self.model.trainable_variables
    with tf.GradientTape() as tape:
      logits = self.model(images, training=True)
      loss = tf.reduce_sum(_per_example_loss(labels, logits, self.num_classes,
                                             self.smoothing)) / self.batch
      scaled = precision.scale_loss(self.optimizer, loss)
    grads = tape.gradient(scaled, variables)
    # Under float16 loss scaling the gradients are scaled: so is the decay.
    grads = weight_decay_lib.add_weight_decay(grads, variables,
                                   precision.loss_scale(self.optimizer) * self.weight_decay,
                                   mask=self.decay_mask, num_replicas=self.replicas)
    self.optimizer.apply_gradients(zip(grads, variables))
    return loss, runner_lib.num_correct(logits, labels)

  @tf.autograph.experimental.do_not_convert  # called inside the runner's converted loop
  def train_step(self, iterator) -> None:
    runner_lib.reset_every(self.window, self.step, self.log_every)
    runner_lib.reset_every(self.epoch, self.step, self.steps_per_epoch)
    images, labels = next(iterator)
    loss, correct = self.strategy.run(self._replica_step, args=(images, labels))
    loss = self.strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
    accuracy = self.strategy.reduce(tf.distribute.ReduceOp.SUM, correct, axis=None) / self.batch
    for metrics in (self.window, self.epoch):
      metrics[0].update_state(loss)
      metrics[1].update_state(accuracy)

  # -- host code at loop boundaries ---------------------------------------
  def train_loop_begin(self) -> None:
    if self._segment is None:
      self._segment = (float(self.wall_time.numpy()), time.time())

  def train_loop_end(self) -> dict[str, float]:
    base, start = self._segment
    self.wall_time.assign(base + time.time() - start)
    step = int(self.step.numpy())
    return {"loss": float(self.window[0].result()),
            "accuracy": float(self.window[1].result()),
            "lr": float(self.schedule(max(step - 1, 0)))}

  def at_interval(self, step: int, log: runner_lib.MetricsLog) -> None:
    """At each epoch end: the epoch's mean loss and accuracy."""
    if step % self.steps_per_epoch:
      return
    loss, acc = float(self.epoch[0].result()), float(self.epoch[1].result())
    self.last_epoch.assign([loss, acc])
    log.write({"kind": "epoch", "step": step, "epoch": step // self.steps_per_epoch,
               "loss": loss, "accuracy": acc})

  def float32_model(self) -> keras.Model:
    """The trained child in float32, what export and serving read.

    Mixed precision is a training setting: the weights are float32 under any
    policy, so a float32 rebuild with the same weights is the same network
    in full precision.

    Returns:
      A Keras model with the trained weights.
    """
    if self.model.layers[-1].dtype_policy.name == "float32":
      return self.model
    model = dense.build_from_arch(self.arch)
    model.set_weights(self.model.get_weights())
    return model

  # -- the final evaluation -------------------------------------------------
  def evaluate(self) -> dict:
    """Loss and accuracy on 'test' (its only read), with weighted keras.metrics.

    Returns:
      {"test_accuracy", "test_loss", "test_examples"}.
    """
    loss_m, acc_m = keras.metrics.Mean("test_loss"), keras.metrics.Mean("test_accuracy")
    strategy = self.strategy
    test_ds = strategy.distribute_datasets_from_function(
        lambda ctx: data.build_dataset(self.cfg.data, "test", self.batch, training=False,
                                       input_context=ctx, repeat=False, drop_remainder=False))

    # One trace for the full batches and the last, smaller one (the dataset's
    # spec leaves the batch dimension open); no Python control flow to convert.
    @functools.partial(tf.function, input_signature=test_ds.element_spec, autograph=False)
    def eval_step(images, labels):
      self.eval_traces += 1

      def step_fn(images, labels):
        logits = self.model(images, training=False)
        loss = tf.reduce_sum(_per_example_loss(labels, logits, self.num_classes, 0.0))
        return loss, runner_lib.num_correct(logits, labels), tf.cast(tf.shape(labels)[0], tf.float32)
      out = strategy.run(step_fn, args=(images, labels))
      loss, correct, count = [strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                              for v in out]
      loss_m.update_state(loss / tf.maximum(count, 1.0), sample_weight=count)
      acc_m.update_state(correct / tf.maximum(count, 1.0), sample_weight=count)

    for images, labels in test_ds:
      eval_step(images, labels)
    return {"test_accuracy": float(acc_m.result()), "test_loss": float(loss_m.result()),
            "test_examples": int(round(float(acc_m.count.numpy())))}


def train(cfg, arch_path: str, workdir: str, *, progress: bool = True,
          strategy: tf.distribute.Strategy | None = None) -> dict:
  """Retrains the architecture in `arch_path` (or resumes) and evaluates it.

  Args:
    cfg: the retraining config (checked here, once).
    arch_path: the architecture file the search wrote.
    workdir: the retraining's directory; a rerun with the same config resumes.
    progress: show a progress bar on the chief.
    strategy: overrides the one `cfg.strategy` names (tests: logical devices).

  Returns:
    The metrics written to WORKDIR/metrics.json (test accuracy and loss,
    FLOPs, parameters, timings, the architecture).

  Raises:
    ConfigError: a bad config field.
    ArchFileError: the architecture file is unreadable or does not fit the data.
    TrainError: the batch exceeds the data, or a checkpoint of another model.
    WorkdirError: the workdir holds another run or cannot be written.
  """
  t0 = time.time()
  # Everything a user can get wrong is checked before the workdir is touched.
  config_check.check(cfg)
  cfg = config_check.with_defaults(cfg)
  arch = archfile.load(arch_path)
  info = {}
  run = lifecycle.open_run(cfg, workdir, SECTIONS, strategy=strategy,
                           checks=lambda: info.update(_check_inputs(cfg, arch, arch_path,
                                                                    workdir)))
  run.write_config()
  if run.chief:
    archfile.save(arch, os.path.join(workdir, "arch.json"))
  steps_per_epoch = info["data"].split_sizes["full_train"] // int(cfg.train.batch_size)
  task = RetrainTask(cfg, arch, run.strategy, steps_per_epoch)
  init_info = {"init": cfg.train.init}
  runner, close_progress = _runner(cfg, arch, arch_path, task, run, workdir, init_info,
                                   progress)
  with strategy_lib.peer_failures(run.strategy):
    try:
      runner.run()
    finally:
      close_progress()
    results = task.evaluate()
  metrics = _finish(cfg, arch, arch_path, task, run, workdir, results, init_info, t0)
  run.close()
  return metrics


def _check_inputs(cfg, arch: dict, arch_path: str, workdir: str) -> dict:
  """The data, architecture, batch and workdir checks (before anything is written)."""
  info = data.dataset_info(cfg.data)
  _check_arch(arch, arch_path, info)
  n_train = info.split_sizes["full_train"]
  if n_train // int(cfg.train.batch_size) < 1:
    raise TrainError(f"train.batch_size {cfg.train.batch_size} exceeds the {n_train} "
                     "'full_train' examples")
  _check_workdir_arch(workdir, arch, arch_path)
  return {"data": info}


def _runner(cfg, arch: dict, arch_path: str, task: RetrainTask, run: lifecycle.Run,
            workdir: str, init_info: dict, progress: bool):
  """The retraining's runner (initialisation, checkpoints, progress) and its bar's close."""
  tcfg = cfg.train

  def init_fn():
    if tcfg.init == "supernet":
      from aps_tf.train import supernet_init  # pylint: disable=g-import-not-at-top
      init_info.update(supernet_init.init_from_supernet(task.model, arch, tcfg.supernet_workdir))
      logging.info("initialised from supernet %s", tcfg.supernet_workdir)
    elif tcfg.init == "keras":
      from aps_tf import user_model  # pylint: disable=g-import-not-at-top
      init_info.update(user_model.init_from_keras(task.model, cfg))
      logging.info("initialised from %s", cfg.model.keras_file)

  total_steps = int(tcfg.epochs) * task.steps_per_epoch
  hparams = run.hparams(HPARAM_KEYS, {"arch.model": arch["model"],
                                      "arch.widths": str(list(arch["widths"]))})
  show, close = run.progress(total_steps, progress, ("loss", "accuracy", "lr"), "train")
  runner = runner_lib.Runner(
      task, workdir, total_steps=total_steps, steps_per_loop=int(tcfg.steps_per_loop),
      checkpoint_every=int(tcfg.checkpoint_every_steps), log_every=int(tcfg.log_every_steps),
      hook_every=task.steps_per_epoch, max_to_keep=int(tcfg.keep_checkpoints),
      ckpt_dir=run.ckpt_dir, init_fn=init_fn, chief=run.chief, hparams=hparams,
      progress=show)
  latest = runner.manager.latest_checkpoint
  if latest:
    _check_checkpoint_model(task.model, latest, arch_path)
    init_info["resumed_from"] = latest
  return runner, close


def _finish(cfg, arch: dict, arch_path: str, task: RetrainTask, run: lifecycle.Run,
            workdir: str, results: dict, init_info: dict, t0: float) -> dict:
  """Records the test result once, writes model.keras and metrics.json (chief)."""
  step = int(task.step.numpy())
  done = any(r.get("kind") == "test" and r.get("step") == step
             for r in runner_lib.read_metrics(workdir))
  if run.chief and not done:  # a rerun after the end evaluates again, but records once
    log = runner_lib.MetricsLog(workdir, step)
    log.write({"kind": "test", "step": step, "accuracy": results["test_accuracy"],
               "loss": results["test_loss"]})
    log.close()
  t = archfile.topology_of(arch)
  last_loss, last_acc = (float(x) for x in task.last_epoch.numpy())
  metrics = {
      **results,
      "flops": {c: flops_lib.count(t, arch["widths"], c)["flops"]
                for c in flops_lib.CONVENTIONS},
      "params": int(flops_lib.count_keras_model(task.model)["params"]),
      "epochs": int(cfg.train.epochs),
      "steps": step,
      "steps_per_epoch": task.steps_per_epoch,
      "batch_size": int(cfg.train.batch_size),
      "train_wall_time_s": round(float(task.wall_time.numpy()), 2),
      "wall_time_s": round(time.time() - t0, 2),
      "strategy": cfg.strategy,
      "num_replicas": run.strategy.num_replicas_in_sync,
      "model": arch["model"],
      "widths": arch["widths"],
      "arch": fileio.abspath(arch_path),
      **init_info,
  }
  if step >= task.steps_per_epoch:
    metrics.update(train_loss_last_epoch=last_loss, train_accuracy_last_epoch=last_acc)
  if run.chief:
    fileio.save_keras(task.float32_model(), os.path.join(workdir, "model.keras"))
    fileio.write_json(os.path.join(workdir, "metrics.json"), metrics, sort_keys=True)
  return metrics
