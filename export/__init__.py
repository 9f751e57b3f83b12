"""Export: SavedModel, LiteRT files, verification, TF-Serving (installed as aps_tf.export)."""

import aps_tf as _aps_tf

_aps_tf.make_callable(__name__, "export")  # aps_tf.export(child, ...): the Python API
