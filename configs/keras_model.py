"""Search the widths of your own Keras model on your own images (docs/own_model.md).

  python -m aps_tf.search --config=configs/keras_model.py --workdir=/tmp/mine \\
      --config.model.keras_file=model.keras --config.data.source=folder:images/

The input size, channels and classes come from the model file (images are
resized to the model's input); the budget is half the model's FLOPs (all convs and dense
layers counted); the input normalisation is the model's own Rescaling /
Normalization layers if it starts with one, else the data's mean/std. The
same config drives `aps_tf.search(model, data, ...)`.
"""

from aps_tf.configs import base


def get_config():
  c = base.get_config("digits")
  c.model.name = "keras"
  # The supernet starts from the model's own weights (each layer's first
  # channels; model.channel_order='l1' puts the strongest channels first).
  c.model.init_from = "keras"
  c.data.normalization = "auto"
  # Search: a short schedule that fits small user datasets; scale epochs with
  # the data (steps per epoch = one pass over the 'train' split).
  c.search.epochs = 40
  c.search.warmup_epochs = 20
  c.search.batch_size = 32
  c.search.lr = 0.02  # the supernet starts from trained weights: a gentle lr
  c.search.lr_schedule = "cosine"
  c.search.lr_decay_epochs = ()
  c.search.controller.lr = 1e-3
  # Ordinal sharing: the widest candidate is the user's model exactly, so the
  # supernet starts as the trained model, and it works after every supported
  # layer. Transitional sharing (search.sharing='transitional', with
  # search.phi_lr) is refused for a layer whose input is a Concatenate.
  c.search.sharing = "ordinal"
  c.search.phi_lr = 0.03
  c.search.reward.target_fraction = 0.5
  # A user's model has 1x1 and depthwise convs that matter: count every layer.
  c.search.reward.flops_convention = "full"
  c.search.reward.beta = -0.5
  c.search.top_n = 5
  c.search.beam_width = 10
  c.search.checkpoint_every_steps = 200
  c.search.log_every_steps = 20
  c.search.analysis_every_steps = 200
  # Retraining: fine-tune the picked child from the supernet's weights.
  c.train.epochs = 10
  c.train.batch_size = 32
  c.train.lr = 0.01
  c.export.representative_examples = 100
  c.export.parity_examples = 100
  return c
