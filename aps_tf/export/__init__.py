"""aps_tf.export: the repository's top-level export/ folder.

The wheel maps export/ into this package (pyproject.toml, [tool.setuptools.package-dir]),
so an installed aps-tf claims only the `aps_tf` import name. In a source
checkout this file stands in for it: the package's modules are searched in the
top-level export/ folder, so `from aps_tf.export import ...` imports the same files
in both (and `python -m export.<module>` still runs from the checkout's root).
"""

import os as _os

__path__ = [_os.path.join(_os.path.dirname(_os.path.dirname(_os.path.dirname(
    __file__))), "export")]

import aps_tf as _aps_tf  # pylint: disable=g-import-not-at-top

_aps_tf.make_callable(__name__, "export")  # aps_tf.export(child, ...): the Python API
