"""ImageNet ResNet-18: 13 decisions, {32,48,64,80} x {1,2,4,8}, M=128 x factor."""

from configs import base


def get_config():
  c = base.get_config("imagenet2012")
  c.model.name = "resnet18"
  c.model.candidates = (32, 48, 64, 80)
  c.model.meta_width = 128
  c.model.stage_factors = (1, 2, 4, 8)
  c.search.noise_std = 1e-2
  # The transition as the reference runs it on ImageNet: tau 1e-3, a P/Q step
  # every 10 iterations; the exact step at the paper's tau anneals over the
  # whole search phase (README "Phi schedule").
  c.search.phi_lr = 1e-3
  c.search.phi_every = 10
  c.search.reward.flops_convention = "full"
  c.search.reward.target = 1.05e9
  c.search.epochs = 120
  c.search.warmup_epochs = 40
  c.search.lr_decay_epochs = (60, 90)
  c.search.weight_decay = 1e-4
  c.train.epochs = 120
  c.train.batch_size = 512
  c.train.lr = 0.1
  c.train.weight_decay = 1e-4
  return c
