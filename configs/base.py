"""Shared defaults of every aps-tf config (DESIGN §5-7); experiments override.

Each experiment file's `get_config()` starts from `base.get_config()` and
changes only what differs, so a run's full config is one ConfigDict that the
search, train and export binaries all read (and that `--config.x.y=` edits).
"""

import ml_collections
from ml_collections import config_dict

from aps_tf.data import config as data_config


def get_config(dataset: str = "digits") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  # 'default' (one device), 'mirrored', 'multi_worker' (TF_CONFIG) or 'tpu'.
  c.strategy = "default"
  c.tpu = ""  # TPU address for strategy='tpu'

  c.data = data_config.default_config(dataset)

  c.model = ml_collections.ConfigDict()
  c.model.name = "resnet20"
  c.model.candidates = (4, 8, 16, 32, 64)
  c.model.meta_width = config_dict.placeholder(int)  # None: sum of candidates
  c.model.stage_factors = config_dict.placeholder(tuple)  # family default
  c.model.bn_momentum = 0.9

  s = c.search = ml_collections.ConfigDict()
  s.sharing = "transitional"  # 'ordinal' (APS-O) | 'independent' (APS-I) | 'transitional' (APS-T)
  s.noise_std = 1e-3  # P/Q init noise for transitional (1e-2 on ImageNet)
  # tau of Eq. 5. DESIGN says 1e-3, but with Eq. 4/5 taken literally that step
  # is unstable on ResNet-20 (Phi grows 150x in 5 steps); 1e-4 anneals Phi to
  # the independent minimum in ~100 steps (measured, see README).
  s.phi_lr = 1e-4
  s.static_shapes = False  # max-width masked path (XLA/TPU)
  s.epochs = 600
  s.warmup_epochs = 200
  s.steps_per_epoch = config_dict.placeholder(int)  # None: one pass over 'train'
  s.batch_size = 256
  s.lr = 0.1
  s.momentum = 0.9
  s.weight_decay = 2e-4
  s.lr_decay_epochs = (300, 450)
  s.lr_decay = 0.1
  s.per_replica_archs = False  # one sampled architecture per replica
  # Controller (DESIGN §5).
  s.controller = ml_collections.ConfigDict()
  s.controller.hidden = 100
  s.controller.layers = 2
  s.controller.lr = 1.6e-4
  s.controller.beta_1 = 0.5
  s.controller.beta_2 = 0.999
  s.controller.entropy_weight = 4e-3
  s.controller.baseline_decay = 0.99
  # Reward: acc * (F/T)^alpha if F <= T else acc * (F/T)^beta.
  s.reward = ml_collections.ConfigDict()
  s.reward.kind = "flops"  # 'flops' | 'params' | 'latency' (target in ms)
  # kind='latency': a table from `python -m aps_tf.latency build` (measured in
  # this format; the build takes both from here when --out is not given).
  s.reward.latency_table = config_dict.placeholder(str)
  s.reward.latency_format = "int8"
  s.reward.target = 2.05e7
  s.reward.alpha = 0.0
  s.reward.beta = -0.1
  s.reward.flops_convention = "search"  # DESIGN §8: the paper's CIFAR numbers
  # Picking (paper §5.3).
  s.top_n = 10
  s.beam_width = 20
  s.rescore = True  # re-score the top-N on the reward split with the supernet
  s.rescore_batches = 4
  # Bookkeeping.
  s.checkpoint_every_steps = 200
  s.keep_checkpoints = 3
  s.log_every_steps = 20
  s.analysis_every_steps = 200  # gradient cosine / coupled-gradient norm probes

  t = c.train = ml_collections.ConfigDict()
  t.epochs = 300
  t.batch_size = 128
  t.optimizer = "sgd"
  t.nesterov = True
  t.momentum = 0.9
  t.lr = 0.1
  t.warmup_epochs = 0
  t.warmup_from_fraction = 0.25  # warm-up starts at this fraction of lr (MobileNetV2: 0.2 -> 0.8)
  t.schedule = "cosine"
  t.weight_decay = 5e-4
  t.decay_bn_and_bias = True  # DESIGN §7: False for MobileNetV2
  t.label_smoothing = 0.0
  t.init = "scratch"  # 'scratch' | 'supernet' (fine-tune from the search's weights)
  t.supernet_workdir = config_dict.placeholder(str)
  t.checkpoint_every_steps = 500
  t.log_every_steps = 50
  t.keep_checkpoints = 3

  e = c.export = ml_collections.ConfigDict()
  e.formats = ("saved_model", "tflite_float32", "tflite_float16", "tflite_dynamic",
               "tflite_int8", "tflite_qat_int8")
  e.representative_examples = 200
  e.parity_examples = 200
  e.qat_epochs = 1
  e.qat_lr = 1e-3  # SGD momentum 0.9 fine-tuning of the fake-quantised model
  e.qat_batch_size = 64
  e.latency_runs = 50  # timed single-image invocations per TFLite file
  return c
