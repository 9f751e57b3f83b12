"""aps-tf: automatic channel-number search with affine parameter sharing.

The Python API (`aps_tf.search`, `aps_tf.export`, the budgets `Flops`,
`Params`, `Latency`, `from_keras`) is imported on first use, so that
`import aps_tf` stays free of TensorFlow (docs/own_model.md).
"""

# `search` and `export` are the subpackages aps_tf.search and aps_tf.export,
# which are callable (aps_tf.api.search, aps_tf.api.export).
_CALLABLE_PACKAGES = ("search", "export")
_API = {"Flops": "aps_tf.api",
        "Params": "aps_tf.api", "Latency": "aps_tf.api", "SearchResult": "aps_tf.api",
        "Retrained": "aps_tf.api", "UserError": "aps_tf.errors",
        "from_keras": "aps_tf.models"}

__all__ = sorted(_API) + list(_CALLABLE_PACKAGES)


def make_callable(module_name: str, function: str) -> None:
  """Makes the package MODULE_NAME callable as `aps_tf.api.FUNCTION`.

  The subpackages `aps_tf.search` and `aps_tf.export` share their names with
  the Python API's functions; calling the package calls the function, so
  either import order gives the callable.
  """
  import sys  # pylint: disable=g-import-not-at-top
  import types  # pylint: disable=g-import-not-at-top

  class _CallablePackage(types.ModuleType):

    def __call__(self, *args, **kwargs):
      from aps_tf import api  # pylint: disable=g-import-not-at-top
      return getattr(api, function)(*args, **kwargs)

  sys.modules[module_name].__class__ = _CallablePackage


def __getattr__(name):
  if name in _CALLABLE_PACKAGES:
    import importlib  # pylint: disable=g-import-not-at-top
    return importlib.import_module(f"aps_tf.{name}")
  if name in _API:
    import importlib  # pylint: disable=g-import-not-at-top
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value
    return value
  raise AttributeError(f"module 'aps_tf' has no attribute {name!r}")


def __dir__():
  return sorted(set(globals()) | set(__all__))
