"""The tiny search config of the tf.distribute tests."""

from tests.search_configs import tiny_config


def tiny(sharing):
  # Adam moves every weight by ~lr whatever the gradient's size, so float noise
  # in near-zero controller gradients shows up as ~lr; keep it far below atol.
  c = tiny_config(sharing, epochs=2, checkpoint_every_steps=100, analysis_every_steps=0)
  c.search.controller.lr = 1e-5
  return c
