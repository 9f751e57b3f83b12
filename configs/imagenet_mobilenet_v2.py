"""ImageNet MobileNetV2: 24 decisions, stage outputs {8,12,16,20} x factor."""

from configs import base


def get_config():
  c = base.get_config("imagenet2012")
  c.model.name = "mobilenet_v2"
  c.model.candidates = (8, 12, 16, 20)
  c.model.meta_width = 20
  c.model.stage_factors = (1, 1.5, 2, 4, 6, 10, 20)
  c.search.noise_std = 1e-2
  # The reference's P/Q optimiser on ImageNet: a step every 10 iterations,
  # weight decay as the network's (4e-5). tau 1e-3, not the reference's 1e-4,
  # with which Phi hardly moves in the search phase (README "Phi schedule").
  c.search.phi_lr = 1e-3
  c.search.phi_every = 10
  c.search.phi_weight_decay = 4e-5
  c.search.reward.flops_convention = "full"
  c.search.reward.target = 3.0e8
  c.search.epochs = 120
  c.search.warmup_epochs = 40
  c.search.lr_decay_epochs = (60, 90)
  c.search.weight_decay = 4e-5
  c.train.epochs = 250
  c.train.batch_size = 512
  c.train.lr = 0.8
  c.train.warmup_epochs = 5
  c.train.weight_decay = 4e-5
  c.train.decay_bn_and_bias = False
  c.train.label_smoothing = 0.1
  return c
