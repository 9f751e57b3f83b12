"""Shared defaults of every aps-tf config (docs/method.md, docs/experiments.md);
experiments override.

Each experiment file's `get_config()` starts from `base.get_config()` and
changes only what differs, so a run's full config is one ConfigDict that the
search, train and export binaries all read (and that `--config.x.y=` edits).
"""

import ml_collections
from ml_collections import config_dict

from aps_tf import schema


def data_config(name: str = "digits") -> ml_collections.ConfigDict:
  """The `data` section's defaults for dataset `name` (one of schema.DATASETS)."""
  return ml_collections.ConfigDict({
      'name': name,
      'source': '',  # '' (built-in `name`) | tfds:NAME | folder:DIR | python:KEY
      'normalization': 'mean_std',  # see schema.NORMALIZATIONS
      'mean': config_dict.placeholder(tuple),  # None: the dataset's / measured
      'std': config_dict.placeholder(tuple),
      'channels': config_dict.placeholder(int),  # None: the source's (folders: 3)
      'num_classes': config_dict.placeholder(int),  # None: the source's
      # User sources without a test split: this stratified fraction (fixed
      # seed) is held out as 'test'.
      'test_fraction': 0.2,
      'data_dir': config_dict.placeholder(str),  # None: tfds default dir
      'manual_dir': config_dict.placeholder(str),  # imagenet2012 tar files
      'download': False,  # never touch the network unless asked to
      'image_size': schema.IMAGE_SIZE[name],
      'reward_fraction': 0.5,
      'split_seed': 0,  # train/reward permutation of the embedded dataset
      'cache': True,  # in-memory cache of decoded images where they fit
      'augment': True,
      'deterministic': False,  # force ordered parallel map even without seed
      'shuffle_buffer': 10_000,
  })


def get_config(dataset: str = "digits") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  # 'default' (one device), 'mirrored', 'multi_worker' (TF_CONFIG) or 'tpu'.
  c.strategy = "default"
  c.tpu = ""  # TPU address for strategy='tpu'
  # "" (float32) | "mixed_bfloat16" | "mixed_float16" (loss-scaled): the search's
  # and retraining's models; what stays float32 is listed in aps_tf/precision.py.
  c.mixed_precision = ""

  c.data = data_config(dataset)

  c.model = ml_collections.ConfigDict()
  c.model.name = "resnet20"
  c.model.candidates = (4, 8, 16, 32, 64)
  # None: sum of candidates. An imported Keras model (model.keras_file): None
  # (each layer's original width), a multiple of it (a number >= 1) or 'sum'.
  c.model.meta_width = config_dict.placeholder(object)
  c.model.stage_factors = config_dict.placeholder(tuple)  # family default
  c.model.bn_momentum = 0.9
  # Search-space layout: 'aps_tf' or 'reference' (the authors' release; see
  # aps_tf/models/topology.py SPACES and docs/reference.md).
  c.model.space = "aps_tf"
  # ResNets: last block output (and classifier input) fixed at the widest
  # candidate, no decision. None: True for space='reference', else False.
  c.model.fix_last_width = config_dict.placeholder(bool)
  # Strided ResNet shortcut: 'conv_bn' (1x1/2 conv + BN) or 'avgpool_conv'
  # (2x2 avg pool, 1x1 conv, no BN: the authors' retrained children).
  c.model.downsample_shortcut = "conv_bn"
  # The supernet's residual shortcut (the search only; retrained children use
  # the rule above): 'aps' (identity when the sampled widths match, else one
  # APS 1x1 conv + BN inside Phi) or 'pairwise' (the authors' release: a plain
  # 1x1 conv + BN per (input, output) candidate pair on every residual block,
  # outside Phi). docs/evidence.md#release-options has the measured effect.
  c.model.supernet_shortcut = "aps"
  # Meta-weight init: 'he_normal' or 'kaiming_uniform' (the release's PyTorch
  # default, U(+-1/sqrt(fan_in))).
  c.model.meta_init = "he_normal"
  # The user's own model (configs/keras_model.py, docs/own_model.md): a
  # '.keras' file whose widths are searched (aps_tf.user_model fills the data
  # fields it decides).
  c.model.keras_file = config_dict.placeholder(str)
  # Its candidate widths, as fractions of each searchable layer's own width.
  c.model.width_fractions = (0.25, 0.5, 0.75, 1.0)
  c.model.pinned = ()  # names of its layers whose output width is not searched
  # Where the supernet's weights start: None (the initialisers) or 'keras' (the
  # file's weights, each layer's first channels, as ordered by channel_order:
  # 'none' keeps the layer's order, 'l1' puts the largest-l1 channels first).
  c.model.init_from = config_dict.placeholder(str)
  c.model.channel_order = "none"

  s = c.search = ml_collections.ConfigDict()
  s.sharing = "transitional"  # 'ordinal' (APS-O) | 'independent' (APS-I) | 'transitional' (APS-T)
  s.noise_std = 1e-3  # P/Q init noise for transitional (1e-2 on ImageNet)
  # The transition (APS-T): how P/Q move after warm-up (aps_tf/transition.py).
  # 'exact': each side descends its own sharing sum S (Phi = S_Q * S_P, paper
  # Eq. 4, per-side so one tau means one speed in every layer); 'reference':
  # the reference implementation's surrogate, offdiag l1 of each side's Gram.
  # Both: g = phi_weight * grad + phi_weight_decay * P, SGD with phi_momentum,
  # lr phi_lr (tau), columns renormalised, one step every phi_every search
  # iterations. The paper's tau maps 1:1 onto phi_lr at phi_weight 5e-3 and
  # momentum 0.9; defaults per config measured with
  # `python -m aps_tf.experiments.phi_schedule` (docs/method.md "Phi schedule").
  s.phi_objective = "exact"
  s.phi_lr = 1e-3
  s.phi_weight = 5e-3
  s.phi_momentum = 0.9
  s.phi_weight_decay = 2e-4
  s.phi_every = 1
  s.static_shapes = False  # max-width masked path (XLA/TPU)
  # Compile the search step with XLA (tf.function(jit_compile=True)); needs
  # static_shapes (or strategy='tpu', which forces them). One compilation
  # serves every architecture.
  s.jit_compile = False
  s.epochs = 600
  s.warmup_epochs = 200
  s.steps_per_epoch = config_dict.placeholder(int)  # None: one pass over 'train'
  s.batch_size = 256
  s.lr = 0.1
  s.momentum = 0.9
  s.weight_decay = 2e-4
  s.lr_decay_epochs = (300, 450)
  s.lr_decay = 0.1
  # 'piecewise' (x lr_decay at lr_decay_epochs) or 'cosine' (per step from lr
  # to lr_min over all search epochs).
  s.lr_schedule = "piecewise"
  s.lr_min = 0.0
  s.per_replica_archs = False  # one sampled architecture per replica
  # Controller (docs/method.md#controller-and-reward).
  s.controller = ml_collections.ConfigDict()
  # 'per_decision' (a token per (decision, candidate) and a head per decision)
  # or 'shared' (the release's: one embedding per candidate index and one
  # head for all decisions, head bias zero at init).
  s.controller.kind = "per_decision"
  s.controller.hidden = 100
  s.controller.layers = 2
  s.controller.lr = 1.6e-4
  s.controller.beta_1 = 0.5
  s.controller.beta_2 = 0.999
  s.controller.entropy_weight = 4e-3
  s.controller.baseline_decay = 0.99
  # Coupled L2 (added to the gradient before Adam), as the reference's Adam weight decay.
  s.controller.weight_decay = 1e-3
  # Reward: acc * (F/T)^alpha if F <= T else acc * (F/T)^beta.
  s.reward = ml_collections.ConfigDict()
  s.reward.kind = "flops"  # 'flops' | 'params' | 'latency' (target in ms)
  # kind='latency': a table from `python -m aps_tf.latency build` (measured in
  # this format; the build takes both from here when --out is not given).
  s.reward.latency_table = config_dict.placeholder(str)
  s.reward.latency_format = "int8"
  s.reward.target = 2.05e7
  # None: `target` is absolute; else the target is this fraction of the widest
  # architecture's cost (the user's model, for model.keras_file).
  s.reward.target_fraction = config_dict.placeholder(float)
  s.reward.alpha = 0.0
  s.reward.beta = -0.1
  s.reward.flops_convention = "search"  # docs/method.md#flops: the paper's CIFAR numbers
  # The reward split through the training pipeline (pad-crop-flip, reshuffled
  # every epoch), as the reference; False: fixed order, no augmentation.
  s.reward.augment = True
  # BN in the reward forward: 'batch' (the reward batch's statistics, moving
  # averages untouched; the reference) or 'moving' (inference mode with the
  # per-pair moving statistics). Also used when re-scoring the top-N. 'batch'
  # by measurement: after the search, 'moving' scores architectures the
  # controller no longer samples near chance (docs/results.md#reward_bn).
  s.reward.bn = "batch"
  # Picking: beam search for the top-N, re-scored on the reward split (no
  # augmentation), then 'closest_accurate' (cost closest to the target among
  # the architectures whose re-scored accuracy is at least
  # pick_accuracy_fraction of the best one's or within pick_accuracy_se
  # standard errors of it), 'closest_to_target' (the paper's rule: cost
  # closest to the target, whatever the accuracy) or 'best_reward' (highest
  # re-scored reward, soft budget included).
  s.top_n = 10
  s.beam_width = 20
  s.rescore = True  # re-score the top-N on the reward split with the supernet
  s.rescore_batches = 16  # batches per architecture; the standard error is reported
  s.pick = "closest_accurate"
  s.pick_accuracy_fraction = 0.98
  s.pick_accuracy_se = 2.0
  # Bookkeeping.
  s.checkpoint_every_steps = 200
  s.keep_checkpoints = 3
  s.log_every_steps = 20
  # Iterations per traced loop (one host sync each); loops also end at every
  # logging, analysis and checkpoint step.
  s.steps_per_loop = 50
  # The input iterators' state (shuffle buffer, in-memory cache) in every
  # checkpoint; False: a resume re-reads and skips the consumed batches.
  s.checkpoint_input = True
  # Analysis probes (gradient cosine, coupled-gradient norm, decision
  # probabilities: the plots in plots/) every this many steps and at the end;
  # 0 turns them off.
  s.analysis_every_steps = 200

  t = c.train = ml_collections.ConfigDict()
  t.epochs = 300
  t.batch_size = 128
  t.optimizer = "sgd"
  t.nesterov = True
  t.momentum = 0.9
  t.lr = 0.1
  t.warmup_epochs = 0.0  # may be fractional (MobileNetV2: 1,250 iterations)
  t.warmup_from_fraction = 0.25  # warm-up starts at this fraction of lr (MobileNetV2: 0.2 -> 0.8)
  t.schedule = "cosine"
  t.weight_decay = 5e-4
  t.decay_bn_and_bias = True  # False for MobileNetV2 (docs/experiments.md)
  t.label_smoothing = 0.0
  # 'scratch' | 'supernet' (fine-tune from the search's weights) | 'keras' (from
  # model.keras_file's weights, each layer's first channels)
  t.init = "scratch"
  t.supernet_workdir = config_dict.placeholder(str)
  t.checkpoint_every_steps = 500
  t.log_every_steps = 50
  t.steps_per_loop = 50  # training steps per traced call (one host round trip each)
  # The input iterator's state (shuffle buffer, in-memory cache: ~200 MB on
  # CIFAR-10) in every checkpoint; False: a resume re-reads and skips the
  # consumed batches instead (same result, slower resume, small checkpoints).
  t.checkpoint_input = True
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


# The APS-T step-size presets of the ImageNet configs (`--config=FILE:PRESET`).
PHI_PRESETS = ("paper", "release")


def phi_preset(preset: str, config_file: str, paper: float, release: float) -> float:
  """search.phi_lr of a paper config's Phi preset.

  'paper' (the default): Phi anneals over the search phase, as the paper
  describes APS-T. 'release': the step size that matches the authors'
  release's anneal, which leaves Phi within ~1% of ordinal sharing (APS-T
  then searches close to APS-O); for replaying the release.

  Raises:
    errors.ConfigError: an unknown preset.
  """
  from aps_tf import errors  # pylint: disable=g-import-not-at-top
  preset = preset or "paper"
  if preset not in PHI_PRESETS:
    raise errors.ConfigError(f"{config_file}:{preset}: unknown Phi preset {preset!r}; "
                             f"expected one of {PHI_PRESETS} (e.g. --config={config_file}"
                             ":release)")
  return paper if preset == "paper" else release
