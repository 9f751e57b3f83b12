"""The tiny search config the search tests share (resnet8: 7 decisions, fast traces)."""

from aps_tf.configs import quick


def tiny_config(sharing="transitional", **search):
  """A few-step search on digits; `search` overrides fields of `config.search`."""
  c = quick.get_config()
  c.model.name = "resnet8"
  c.model.candidates = (4, 8, 16)
  s = c.search
  s.reward.target = 3e5
  s.sharing = sharing
  s.batch_size = 16
  s.steps_per_epoch = 3
  s.epochs = 3
  s.warmup_epochs = 1
  s.lr_decay_epochs = (2,)
  s.checkpoint_every_steps = 2
  s.log_every_steps = 1
  s.analysis_every_steps = 0  # no probes (tests/test_search_loop.py's resume chain runs them)
  s.top_n = 2
  s.beam_width = 3
  s.rescore_batches = 1
  # A visible anneal within the few Phi steps a test takes (the default
  # weight 5e-3 x tau 1e-3 moves P/Q by ~1e-6 per step).
  s.phi_lr = 0.05
  s.phi_weight = 1.0
  for key, value in search.items():
    s[key] = value
  return c
