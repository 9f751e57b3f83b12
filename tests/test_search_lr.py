"""The search loop's supernet learning rate: piecewise (default) and cosine."""

from absl.testing import parameterized
import ml_collections

from aps_tf.search import settings
from configs import base


def _search(**kw):
  s = base.get_config().search
  s.update(kw)
  return s


class SearchLrTest(parameterized.TestCase):

  def test_piecewise_default(self):
    # Keras PiecewiseConstantDecay: the boundary step still has the earlier value.
    lr = settings.search_lr(_search(lr=0.1, lr_decay_epochs=(2, 3)), 10, 40)
    self.assertEqual([round(float(lr(k)), 6) for k in (0, 20, 21, 30, 31, 39)],
                     [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])

  def test_cosine_to_lr_min(self):
    s = _search(lr=0.05, lr_schedule="cosine", lr_min=2e-4)
    lr = settings.search_lr(s, 10, 1000)
    self.assertAlmostEqual(float(lr(0)), 0.05, places=7)
    self.assertAlmostEqual(float(lr(500)), 2e-4 + (0.05 - 2e-4) / 2, places=6)
    self.assertAlmostEqual(float(lr(1000)), 2e-4, places=7)

  @parameterized.parameters(
      (dict(lr_schedule="step"),
       r"search.lr_schedule: expected one of piecewise, cosine, got 'step'"),
      (dict(lr_min=1.0), r"search.lr_min: expected a number in \[0, search.lr=0.1\], got 1.0"),
  )
  def test_bad_schedule_is_a_config_error(self, kw, message):
    cfg = base.get_config()
    cfg.search.update(kw)
    with self.assertRaisesRegex(settings.ConfigError, message):
      settings.resolve_config(ml_collections.ConfigDict(cfg))


if __name__ == "__main__":
  from absl.testing import absltest
  absltest.main()
