"""What every aps-tf binary does before its work."""

from absl import flags
from absl import logging


def quiet_unless_verbose() -> None:
  """Shows warnings and errors only, unless --verbosity was given.

  TensorFlow and its checkpointing log INFO lines through absl (checkpoint
  sharding, SavedModel assets) that would drown the progress bar.
  """
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
