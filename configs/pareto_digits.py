"""The small search-vs-width-multiplier regime of `aps_tf.experiments.pareto`.

Embedded digits, ResNet-20 searched against its own base widths (16, 32, 64),
short searches and short retraining, sized for a shared 2-core CPU. Why this
regime (docs/evidence.md): at the quick config's 50% budget and 15 retraining
epochs every architecture retrains to nearly the same test accuracy, so
neither search nor ranking can be told apart; low budgets (down to 25% of the
base FLOPs), candidates that reach both halves and doubles of the base widths,
and 6 retraining epochs spread the retrained accuracies.

  python -m aps_tf.experiments.pareto --workdir=workdirs/pareto
"""

from aps_tf.configs import quick


def get_config():
  c = quick.get_config()
  # Halves and doubles of ResNet-20's stage widths: the uniform 0.5x network
  # (8, 16, 32) is in the space and so is every stage at twice its base width.
  c.model.candidates = (8, 16, 32, 64)
  # 10 warm-up + 10 search epochs of 22 steps (batch 32).
  c.search.epochs = 20
  c.search.warmup_epochs = 10
  c.search.lr_decay_epochs = (15, 18)
  # The transition spread over the 220-step search phase as the quick
  # config's over its 660 (50% of the drop near 30%, 90% near 55%): tau 0.2
  # gives 62 / 117 steps (`python -m aps_tf.experiments.phi_schedule
  # --config=configs/pareto_digits.py`; 0.1: 119 / 174).
  c.search.phi_lr = 0.2
  c.search.reward.target = 0.5 * 10_063_872  # the experiment sets each budget
  c.search.checkpoint_every_steps = 110
  c.search.log_every_steps = 22
  c.search.analysis_every_steps = 10_000  # once, at the end
  c.search.top_n = 4
  c.search.beam_width = 8
  c.search.rescore_batches = 8
  c.train.epochs = 6
  return c
