"""Helpers shared by the train/export/serving tests (no tests here).

A tiny real run: reduced ResNet-20 (widths 4-8) on the embedded 16x16 digits.
"""

import os
import subprocess
import sys

from aps_tf import archfile
from aps_tf import data
from aps_tf import models
from aps_tf.configs import quick

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny_config(epochs=3, **train):
  cfg = quick.get_config()
  cfg.train.epochs = epochs
  cfg.train.lr = 0.1
  cfg.train.warmup_epochs = 0
  cfg.train.checkpoint_every_steps = 1000
  cfg.export.parity_examples = 120
  cfg.export.representative_examples = 60
  cfg.export.latency_runs = 5
  cfg.export.qat_epochs = 1
  for k, v in train.items():
    cfg.train[k] = v
  return cfg


def topology(cfg):
  info = data.dataset_info(cfg.data)
  return models.topology_from_config(cfg.model, info.image_shape, info.num_classes)


def write_arch(cfg, path, index=1, last=None):
  """Architecture with every decision at candidate `index` (quick: 4,8,16,32)."""
  t = topology(cfg)
  idx = [index] * t.space.num_decisions
  if last is not None:
    idx[-1] = last
  arch = archfile.make(t, t.space.widths(idx), idx, models.search_space_record(cfg.model))
  archfile.save(arch, path)
  return arch


def run_binary(module, *args, timeout=300):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                        cwd=ROOT, env=env, timeout=timeout)


def trained_workdir(tmp, epochs=4):
  """Trains the tiny child into tmp/train; returns (workdir, cfg)."""
  from aps_tf.train import trainer  # pylint: disable=g-import-not-at-top
  cfg = tiny_config(epochs)
  arch_path = os.path.join(tmp, "arch_in.json")
  write_arch(cfg, arch_path, index=1)
  workdir = os.path.join(tmp, "train")
  trainer.train(cfg, arch_path, workdir, progress=False)
  return workdir, cfg
