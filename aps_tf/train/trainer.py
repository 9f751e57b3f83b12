"""Retraining loop: dense child from an architecture file, the recipes of docs/experiments.md#retraining-recipes.

Custom loop under `cfg.strategy`: SGD (nesterov), linear warm-up + cosine
schedule, coupled L2 weight decay (optionally not on BN/bias), label
smoothing, on split 'full_train'; 'test' is read once, at the end.

Resume: the model, optimiser (slots + iteration count) and accumulated wall
time live in a `tf.train.Checkpoint` under WORKDIR/checkpoints, saved every
`train.checkpoint_every_steps` steps and at each epoch end. The data order is
a function of (seed, epoch), so a resumed run (also after SIGKILL) rebuilds
epoch e's pipeline and skips the batches already consumed.

Outputs (chief only): WORKDIR/arch.json (copy), config.json, tensorboard/,
model.keras (the trained dense child), metrics.json.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time

from absl import logging
import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from aps_tf import archfile
from aps_tf import config_check
from aps_tf import data
from aps_tf import distribute as strategy_lib
from aps_tf import errors
from aps_tf import fileio
from aps_tf import flops as flops_lib
from aps_tf.models import dense
from aps_tf.train import optim
from aps_tf import workdir as workdir_lib


class TrainError(errors.UserError, ValueError):
  """A retraining run that cannot start; the message says why and where."""


class NonFiniteLossError(TrainError, RuntimeError):
  """The loss became NaN/inf; nothing after the last good checkpoint is saved."""


# The config sections retraining reads: a rerun may change the others (all
# are checked before it starts).
SECTIONS = ("data", "train")


def save_keras_atomic(model: keras.Model, path: str) -> None:
  with fileio.atomic_path(path, suffix=".keras") as tmp:
    model.save(tmp)


def config_to_json(cfg) -> str:
  return cfg.to_json_best_effort(indent=2, sort_keys=True) + "\n"


def scalar_summary(name: str, value, step: int) -> None:
  """tf.summary.scalar without the tensorboard package (not installed here):
  the same event (scalars plugin metadata), written with the core op."""
  tf.summary.write(name, tf.constant(float(value), tf.float32), step=step,
                   metadata=_SCALAR_METADATA)


_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
).SerializeToString()


def _epoch_seed(seed: int, epoch: int) -> int:
  return int(np.random.SeedSequence([int(seed), 7919, int(epoch)]).generate_state(1)[0] % (2**31))


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
  if not os.path.exists(existing):
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


def _restore(ckpt: tf.train.Checkpoint, path: str, arch_path: str) -> None:
  try:
    status = ckpt.restore(path)
    status.assert_existing_objects_matched()
  except (ValueError, AssertionError, tf.errors.OpError) as e:
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise TrainError(f"checkpoint {path} does not match the architecture of {arch_path}: "
                     f"{msg}") from e


def train(cfg, arch_path: str, workdir: str, *, progress: bool = True,
          strategy: tf.distribute.Strategy | None = None) -> dict:
  """Retrains the architecture in `arch_path`; returns the metrics dict.

  `strategy` overrides the one `cfg.strategy` names (tests: logical devices).
  """
  t0 = time.time()
  tcfg = cfg.train
  # Everything a user can get wrong is checked before the workdir is touched.
  config_check.check(cfg)
  config_check.check_data_prepared(cfg.data)
  arch = archfile.load(arch_path)
  info = data.dataset_info(cfg.data)
  _check_arch(arch, arch_path, info)
  batch = int(tcfg.batch_size)
  n_train = info.split_sizes["full_train"]
  steps_per_epoch = n_train // batch
  if steps_per_epoch < 1:
    raise TrainError(f"train.batch_size {batch} exceeds the {n_train} 'full_train' examples")
  config = json.loads(config_to_json(cfg))
  workdir_lib.check_config(config, workdir, SECTIONS)
  _check_workdir_arch(workdir, arch, arch_path)
  workdir_lib.ensure_writable(workdir)

  strategy = strategy or strategy_lib.make_strategy(cfg)
  chief = strategy_lib.is_chief(strategy)
  os.makedirs(workdir, exist_ok=True)
  if chief:
    archfile.save(arch, os.path.join(workdir, "arch.json"))
    workdir_lib.check_config(config, workdir, SECTIONS, write=True)

  total_steps = int(tcfg.epochs) * steps_per_epoch
  replicas = strategy.num_replicas_in_sync
  keras.utils.set_random_seed(int(cfg.seed))

  with strategy.scope():
    model = dense.build_from_arch(arch)
    schedule = optim.make_schedule(tcfg, steps_per_epoch)
    opt = optim.make_optimizer(tcfg, schedule)
    opt.build(model.trainable_variables)
    wall = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="wall_time")
  decayed = optim.decayed_variables(model, bool(tcfg.decay_bn_and_bias))
  wd = float(tcfg.weight_decay)
  smoothing = float(tcfg.label_smoothing)
  num_classes = info.num_classes

  ckpt = tf.train.Checkpoint(model=model, optimizer=opt, wall_time=wall)
  ckpt_dir = strategy_lib.write_dir(os.path.join(workdir, "checkpoints"), strategy)
  manager = tf.train.CheckpointManager(ckpt, ckpt_dir,
                                       max_to_keep=int(tcfg.get("keep_checkpoints", 3)))
  init_info = {"init": tcfg.init}
  if manager.latest_checkpoint:
    _restore(ckpt, manager.latest_checkpoint, arch_path)
    logging.warning("resumed from %s at step %d", manager.latest_checkpoint,
                 int(opt.iterations.numpy()))
    init_info["resumed_from"] = manager.latest_checkpoint
  elif tcfg.init == "supernet":
    from aps_tf.train import supernet_init  # pylint: disable=g-import-not-at-top
    init_info.update(supernet_init.init_from_supernet(model, arch, tcfg.supernet_workdir))
    logging.info("initialised from supernet %s", tcfg.supernet_workdir)

  def train_dataset(epoch: int, skip: int):
    seed = _epoch_seed(cfg.seed, epoch)

    def fn(ctx):
      ds = data.build_dataset(cfg.data, "full_train", batch, training=True, seed=seed,
                              input_context=ctx)
      return ds.skip(skip) if skip else ds
    return strategy.distribute_datasets_from_function(fn)

  def per_example_loss(labels, logits, smooth):
    onehot = tf.one_hot(labels, num_classes)
    if smooth:
      onehot = onehot * (1.0 - smooth) + smooth / num_classes
    return tf.nn.softmax_cross_entropy_with_logits(onehot, logits)

  @tf.function
  def train_step(iterator):
    def step_fn(images, labels):
      with tf.GradientTape() as tape:
        logits = model(images, training=True)
        loss = tf.reduce_sum(per_example_loss(labels, logits, smoothing)) / batch
        total = loss + optim.l2_penalty(decayed, wd) / replicas
      grads = tape.gradient(total, model.trainable_variables)
      opt.apply_gradients(zip(grads, model.trainable_variables))
      correct = tf.reduce_sum(tf.cast(tf.equal(
          tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32))
      return loss, correct
    loss, correct = strategy.run(step_fn, args=next(iterator))
    return (strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None),
            strategy.reduce(tf.distribute.ReduceOp.SUM, correct, axis=None) / batch)

  @tf.function
  def eval_step(images, labels):
    def step_fn(images, labels):
      logits = model(images, training=False)
      loss = tf.reduce_sum(per_example_loss(labels, logits, 0.0))
      correct = tf.reduce_sum(tf.cast(tf.equal(
          tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32))
      count = tf.cast(tf.shape(labels)[0], tf.float32)
      return loss, correct, count
    out = strategy.run(step_fn, args=(images, labels))
    return [strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for v in out]

  writer = (tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))
            if chief else tf.summary.create_noop_writer())
  every_ckpt = max(1, int(tcfg.checkpoint_every_steps))
  every_log = max(1, int(tcfg.log_every_steps))
  step = int(opt.iterations.numpy())
  if step > total_steps:
    raise TrainError(f"checkpoint in {ckpt_dir} is at step {step}, past this config's "
                     f"{total_steps} steps ({tcfg.epochs} epochs)")
  last = {}
  seg_start, wall_base = time.time(), float(wall.numpy())

  def save():
    wall.assign(wall_base + time.time() - seg_start)
    manager.save(checkpoint_number=int(opt.iterations.numpy()))

  with writer.as_default(), strategy_lib.peer_failures(strategy):
    while step < total_steps:
      epoch, offset = divmod(step, steps_per_epoch)
      iterator = iter(train_dataset(epoch, offset))
      bar = keras.utils.Progbar(steps_per_epoch, stateful_metrics=["loss", "acc", "lr"],
                                verbose=1 if (progress and chief) else 0)
      if progress and chief:
        print(f"Epoch {epoch + 1}/{tcfg.epochs}", flush=True)
      bar.update(offset)
      loss_sum = acc_sum = 0.0
      n = 0
      for _ in range(offset, steps_per_epoch):
        loss, acc = train_step(iterator)
        step += 1
        n += 1
        loss, acc = float(loss), float(acc)
        if not math.isfinite(loss):
          raise NonFiniteLossError(
              f"non-finite loss at step {step} (loss={loss}); stopped before saving. The last "
              f"good checkpoint ({manager.latest_checkpoint or 'none yet'}) is kept; lower "
              f"train.lr or check the data.")
        loss_sum += loss
        acc_sum += acc
        lr = float(schedule(step - 1))
        bar.update(step - epoch * steps_per_epoch, [("loss", loss), ("acc", acc), ("lr", lr)])
        if step % every_log == 0 or step == total_steps:
          scalar_summary("train/loss", loss, step=step)
          scalar_summary("train/accuracy", acc, step=step)
          scalar_summary("train/lr", lr, step=step)
        if step % every_ckpt == 0 and step % steps_per_epoch:
          save()
      save()  # epoch end
      last = {"train_loss_last_epoch": loss_sum / max(n, 1),
              "train_accuracy_last_epoch": acc_sum / max(n, 1)}
      scalar_summary("train/epoch_loss", last["train_loss_last_epoch"], step=step)
    writer.flush()

    # Final evaluation: the only read of 'test'.
    test_ds = strategy.distribute_datasets_from_function(
        lambda ctx: data.build_dataset(cfg.data, "test", batch, training=False, input_context=ctx,
                                       repeat=False, drop_remainder=False))
    loss_sum = correct = count = 0.0
    for images, labels in test_ds:
      l, c, k = eval_step(images, labels)
      loss_sum, correct, count = loss_sum + float(l), correct + float(c), count + float(k)
    test_acc, test_loss = correct / max(count, 1.0), loss_sum / max(count, 1.0)
    scalar_summary("test/accuracy", test_acc, step=step)
    scalar_summary("test/loss", test_loss, step=step)
    writer.flush()

  train_wall = wall_base + (time.time() - seg_start)
  t = archfile.topology_of(arch)
  metrics = {
      "test_accuracy": test_acc,
      "test_loss": test_loss,
      "test_examples": int(count),
      "flops": {c: flops_lib.count(t, arch["widths"], c)["flops"]
                for c in flops_lib.CONVENTIONS},
      "params": int(flops_lib.count_keras_model(model)["params"]),
      "epochs": int(tcfg.epochs),
      "steps": int(step),
      "steps_per_epoch": steps_per_epoch,
      "batch_size": batch,
      "train_wall_time_s": round(train_wall, 2),
      "wall_time_s": round(time.time() - t0, 2),
      "strategy": cfg.get("strategy", "default"),
      "num_replicas": replicas,
      "model": arch["model"],
      "widths": arch["widths"],
      "arch": os.path.abspath(arch_path),
      **init_info,
      **last,
  }
  if chief:
    save_keras_atomic(model, os.path.join(workdir, "model.keras"))
    fileio.write_json(os.path.join(workdir, "metrics.json"), metrics, sort_keys=True)
  else:
    shutil.rmtree(ckpt_dir, ignore_errors=True)
  return metrics
