"""Quick end-to-end run on the embedded digits data: 2 CPU cores, minutes.

  python -m aps_tf.search --config=configs/quick.py --workdir=/tmp/quick
"""

from configs import base


def get_config():
  c = base.get_config("digits")
  c.model.name = "resnet20"
  c.model.candidates = (4, 8, 16, 32)
  # Search: 22 steps/epoch at batch 32, ~1,300 steps; ~3-4 min on 2 CPU cores.
  # lr 0.05 trains the digits supernet fastest (0.02/0.2 measured worse); the
  # controller gets a larger lr than the paper's 1.6e-4 so that its policy
  # visibly moves in a few hundred steps.
  c.search.epochs = 60
  c.search.warmup_epochs = 30
  c.search.batch_size = 32
  c.search.lr = 0.05
  c.search.lr_decay_epochs = (45, 54)
  c.search.controller.lr = 1e-3
  # Half of ResNet-20's FLOPs at 16x16 digits (search convention).
  c.search.reward.target = 0.5 * 10_063_872
  c.search.checkpoint_every_steps = 100
  c.search.log_every_steps = 10
  c.search.analysis_every_steps = 50
  c.search.top_n = 5
  c.search.beam_width = 10
  c.train.epochs = 15
  c.train.batch_size = 64
  c.train.lr = 0.05
  c.train.checkpoint_every_steps = 100
  c.export.representative_examples = 100
  c.export.parity_examples = 200
  return c
