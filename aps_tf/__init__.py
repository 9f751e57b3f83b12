"""aps-tf: automatic channel-number search with affine parameter sharing.

The Python API (`aps_tf.search`, `aps_tf.export`, the budgets `Flops`,
`Params`, `Latency`, `from_keras`) is imported on first use, so that
`import aps_tf` stays free of TensorFlow (docs/own_model.md).
"""

# `search` is the subpackage aps_tf.search, which is callable (aps_tf.api.search).
_API = {"export": "aps_tf.api", "Flops": "aps_tf.api",
        "Params": "aps_tf.api", "Latency": "aps_tf.api", "SearchResult": "aps_tf.api",
        "Retrained": "aps_tf.api", "UserError": "aps_tf.errors",
        "from_keras": "aps_tf.models"}

__all__ = sorted(_API) + ["search"]


def __getattr__(name):
  if name == "search":
    import importlib  # pylint: disable=g-import-not-at-top
    return importlib.import_module("aps_tf.search")
  if name in _API:
    import importlib  # pylint: disable=g-import-not-at-top
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value
    return value
  raise AttributeError(f"module 'aps_tf' has no attribute {name!r}")


def __dir__():
  return sorted(set(globals()) | set(__all__))
