"""The one file layer: every run path goes through `tf.io.gfile` (any filesystem).

Workdirs, export bases and reports may be local paths or URLs of any
filesystem TensorFlow has: `gs://bucket/dir` (Cloud Storage, TF's built-in
support), `ram://dir` (TF's in-memory filesystem, used by the tests), HDFS.
Local paths behave exactly as plain `os` calls would.

Atomic writes: a reader (or a resumed run) never sees half a file. A file is
written to a hidden temporary file beside its destination
(`.NAME-tmp-RANDOM`) and renamed over it with
`tf.io.gfile.rename(..., overwrite=True)`:
  * local: one rename(2), atomic;
  * ram://: an in-memory rename of one key, atomic within the process;
  * gs://: a server-side copy then a delete; readers see either the old or the
    new object (object writes are atomic), never a partial one, but a second
    object (the temporary one) exists for a moment.
Directories are published with `publish_dir`: one atomic rename locally; on
other filesystems (no atomic directory rename: ram:// renames only the
directory's own entry and would strand its files, gs:// renames object by
object) its files are copied and the source removed, `saved_model.pb` last,
so TF-Serving (which loads a version once saved_model.pb appears) never loads
a partial version.

ram:// quirks (TensorFlow 2.21), handled here: renaming a directory moves
only its own entry (so directories are never renamed there, see
`publish_dir`), and listing DIR also returns phantom entries for siblings
whose name extends DIR's (listing `assets` shows `.extra` when `assets.extra`
exists): `listdir` and `copy_tree` drop entries that do not exist, and
`rmtree` deletes bottom-up.

`save_keras`/`load_keras` need no staging (Keras 3 reads and writes URLs
through tf.io.gfile); `save_figure` renders into memory; `atomic_path` and
`staging_dir` give a local temporary path for tools that only write local
files.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import json
import os
import shutil
import tempfile
import uuid
from typing import Any, Iterator



class _LazyTensorFlow:
  """`tensorflow`, imported on first use: binaries that touch no file (the
  FLOPs counter) start without it."""

  def __getattr__(self, name: str):
    import tensorflow  # pylint: disable=g-import-not-at-top
    return getattr(tensorflow, name)


tf = _LazyTensorFlow()

# Written last by publish_dir / copy_tree: a model server loads a SavedModel
# version once this file exists.
_LAST = ("saved_model.pb",)


@contextlib.contextmanager
def os_errors(path: str) -> Iterator[None]:
  """Raises TensorFlow's file errors as the OSError that `open` would raise
  (FileNotFoundError, PermissionError, ... with errno and strerror), so
  callers keep one `except OSError` and a full or read-only disk stays a
  user error (aps_tf.cli)."""
  try:
    yield
  except tf.errors.OpError as e:
    # TF's local filesystem reports "CONTEXT; STRERROR": keep the exact errno.
    code = _STRERROR.get(e.message.rsplit("; ", 1)[-1].strip(), _errno_of(type(e)))
    if code is None:
      raise OSError(errno.EIO, e.message, str(path)) from e
    raise OSError(code, os.strerror(code), str(path)) from e


def _errno_of(error_type) -> int | None:
  return {tf.errors.NotFoundError: errno.ENOENT, tf.errors.PermissionDeniedError: errno.EACCES,
          tf.errors.AlreadyExistsError: errno.EEXIST,
          tf.errors.ResourceExhaustedError: errno.ENOSPC,
          tf.errors.FailedPreconditionError: errno.ENOTDIR}.get(error_type)
_STRERROR = {os.strerror(n): n for n in (
    errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT,
    errno.ENOTDIR, errno.EISDIR, errno.EEXIST)}


def _os_errors_of_first_arg(fn):
  """Decorator: `os_errors(first argument)` around FN."""
  @functools.wraps(fn)
  def wrapped(path, *args, **kwargs):
    with os_errors(path):
      return fn(path, *args, **kwargs)
  return wrapped


def is_local(path: str) -> bool:
  """Whether PATH is on the local filesystem (no `scheme://` prefix)."""
  return "://" not in str(path)


def abspath(path: str) -> str:
  """os.path.abspath for local paths; URLs unchanged."""
  return os.path.abspath(path) if is_local(path) else str(path)


def dirname(path: str) -> str:
  """The parent directory of PATH (local: absolute; gs://b/x -> gs://b)."""
  path = str(path)
  if is_local(path):
    return os.path.dirname(os.path.abspath(path))
  scheme, rest = path.split("://", 1)
  rest = rest.rstrip("/")
  return f"{scheme}://{rest.rsplit('/', 1)[0] if '/' in rest else ''}"


def exists(path: str) -> bool:
  return tf.io.gfile.exists(path)


def isdir(path: str) -> bool:
  return tf.io.gfile.isdir(path)


def makedirs(path: str) -> None:
  """mkdir -p (no error if it exists); OSError if it cannot."""
  with os_errors(path):
    tf.io.gfile.makedirs(path)


def listdir(path: str) -> list[str]:
  """Entry names of a directory (no trailing '/'), sorted; [] if it does not exist."""
  if not tf.io.gfile.isdir(path):
    return []
  names = sorted(n.rstrip("/") for n in tf.io.gfile.listdir(path))
  if str(path).startswith("ram://"):
    names = [n for n in names if tf.io.gfile.exists(tf.io.gfile.join(path, n))]
  return names


def walk(path: str) -> Iterator[tuple[str, list[str], list[str]]]:
  """`tf.io.gfile.walk` (top-down), without ram://'s phantom entries."""
  for d, dirs, names in tf.io.gfile.walk(path):
    if str(path).startswith("ram://"):
      names = [n for n in names if tf.io.gfile.exists(tf.io.gfile.join(d, n))]
    yield d, dirs, names


def glob(pattern: str) -> list[str]:
  return sorted(tf.io.gfile.glob(pattern))


@_os_errors_of_first_arg
def remove(path: str) -> None:
  tf.io.gfile.remove(path)


@_os_errors_of_first_arg
def rmtree(path: str, ignore_errors: bool = False) -> None:
  try:
    if str(path).startswith("ram://"):
      # Bottom-up, so that no phantom entry (module docstring) is listed.
      # (A directory is one key there, removed like a file.)
      for d, _, names in reversed(list(walk(path))):
        for n in names:
          if not tf.io.gfile.isdir(tf.io.gfile.join(d, n)):
            tf.io.gfile.remove(tf.io.gfile.join(d, n))
        tf.io.gfile.remove(d)
    else:
      tf.io.gfile.rmtree(path)
  except (tf.errors.OpError, OSError):
    if not ignore_errors:
      raise


@_os_errors_of_first_arg
def copy(src: str, dst: str) -> None:
  """Copies one file (overwriting DST), any filesystems."""
  tf.io.gfile.copy(src, dst, overwrite=True)


@_os_errors_of_first_arg
def mtime(path: str) -> float:
  """Modification time (seconds since the epoch)."""
  return tf.io.gfile.stat(path).mtime_nsec / 1e9


@_os_errors_of_first_arg
def size(path: str) -> int:
  """Bytes of a file, or of every file under a directory."""
  if not tf.io.gfile.isdir(path):
    return tf.io.gfile.stat(path).length
  return sum(tf.io.gfile.stat(tf.io.gfile.join(d, f)).length for d, _, fs in walk(path) for f in fs)


def read_bytes(path: str) -> bytes:
  """The file's bytes; OSError (see `os_errors`) if it cannot be read."""
  with os_errors(path), tf.io.gfile.GFile(path, "rb") as f:
    return f.read()


def read_text(path: str) -> str:
  """The file as UTF-8 text; OSError if unreadable, UnicodeDecodeError if not text."""
  return read_bytes(path).decode("utf-8")


def read_json(path: str) -> Any:
  return json.loads(read_text(path))


def _tmp_name(path: str) -> str:
  """A hidden, unique name beside PATH."""
  parent, name = os.path.split(str(path).rstrip("/"))
  tmp = f".{name}-tmp-{uuid.uuid4().hex[:12]}"
  return f"{parent}/{tmp}" if parent else tmp


def _publish_file(tmp: str, path: str) -> None:
  try:
    tf.io.gfile.rename(tmp, path, overwrite=True)
  except BaseException:
    with contextlib.suppress(tf.errors.OpError, OSError):
      tf.io.gfile.remove(tmp)
    raise


def write_bytes(path: str, content: bytes) -> None:
  """Writes PATH atomically (hidden temp file beside it, then rename)."""
  parent = os.path.dirname(str(path))
  if parent:
    makedirs(parent)
  tmp = _tmp_name(path)
  with os_errors(path):
    try:
      with tf.io.gfile.GFile(tmp, "wb") as f:
        f.write(content)
    except BaseException:
      with contextlib.suppress(tf.errors.OpError, OSError):
        tf.io.gfile.remove(tmp)
      raise
    _publish_file(tmp, path)


def write_text(path: str, text: str) -> None:
  write_bytes(path, text.encode("utf-8"))


def write_json(path: str, obj: Any, **dump_kwargs) -> None:
  dump_kwargs.setdefault("indent", 2)
  write_text(path, json.dumps(obj, **dump_kwargs) + "\n")


@_os_errors_of_first_arg
def append_text(path: str, text: str) -> None:
  """Appends TEXT to PATH (created if missing). On gs:// an append rewrites
  the object (Cloud Storage objects are immutable): fine for small logs."""
  with tf.io.gfile.GFile(path, "a") as f:
    f.write(text)


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "") -> Iterator[str]:
  """Yields a LOCAL temporary path; what the block writes there replaces PATH.

  For libraries that only write local files. Locally the temporary file is
  beside PATH (one rename); elsewhere it is in a local temp directory and is
  copied to a hidden file beside PATH, then renamed over it.
  """
  if is_local(path):
    directory = os.path.dirname(os.path.abspath(path))
    makedirs(directory)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}-", suffix=suffix,
                               dir=directory)
    os.close(fd)
    try:
      yield tmp
      os.replace(tmp, path)
    except BaseException:
      if os.path.exists(tmp):
        os.remove(tmp)
      raise
    return
  with tempfile.TemporaryDirectory(prefix="aps-stage-") as stage:
    local = os.path.join(stage, "file" + suffix)
    yield local
    makedirs(os.path.dirname(str(path)))
    tmp = _tmp_name(path)
    with os_errors(path):
      try:
        tf.io.gfile.copy(local, tmp, overwrite=True)
      except BaseException:
        with contextlib.suppress(tf.errors.OpError, OSError):
          tf.io.gfile.remove(tmp)
        raise
      _publish_file(tmp, path)


@_os_errors_of_first_arg
def save_keras(model, path: str) -> None:
  """`model.save(path)` (a .keras file), atomically, on any filesystem.

  Keras 3 writes URLs (any `scheme://`) itself through tf.io.gfile, from an
  in-memory zip, so no local staging is needed: it saves to a hidden file
  beside PATH, renamed over PATH.
  """
  if is_local(path):
    with atomic_path(path, suffix=".keras") as tmp:
      model.save(tmp)
    return
  tf.io.gfile.makedirs(os.path.dirname(str(path)))
  tmp = _tmp_name(path) + ".keras"
  try:
    model.save(tmp)
  except BaseException:
    with contextlib.suppress(tf.errors.OpError, OSError):
      tf.io.gfile.remove(tmp)
    raise
  _publish_file(tmp, path)


def load_keras(path: str, **kwargs):
  """`keras.models.load_model` from any filesystem (Keras 3 reads URLs through
  tf.io.gfile)."""
  import keras  # pylint: disable=g-import-not-at-top
  return keras.models.load_model(path, **kwargs)


def save_figure(fig, path: str, **savefig_kwargs) -> None:
  """`fig.savefig` on any filesystem (rendered into memory, written atomically)."""
  buf = io.BytesIO()
  fmt = savefig_kwargs.pop("format", None) or os.path.splitext(str(path))[1][1:] or "png"
  fig.savefig(buf, format=fmt, **savefig_kwargs)
  write_bytes(path, buf.getvalue())


@_os_errors_of_first_arg
def copy_tree(src: str, dst: str) -> None:
  """Copies every file under SRC to DST (created), any filesystems;
  `saved_model.pb` files go last."""
  files = []
  for d, _, names in walk(src):
    rel = os.path.relpath(d, src) if is_local(src) else d[len(src.rstrip("/")):].lstrip("/")
    rel = "" if rel == "." else rel
    target = tf.io.gfile.join(dst, rel) if rel else dst
    tf.io.gfile.makedirs(target)
    files += [(tf.io.gfile.join(d, n), tf.io.gfile.join(target, n), n) for n in names]
  files.sort(key=lambda f: f[2] in _LAST)
  for s, t, _ in files:
    tf.io.gfile.copy(s, t, overwrite=True)


@_os_errors_of_first_arg
def move(src: str, dst: str) -> None:
  """Moves a file or directory SRC to DST (which should not exist): one
  rename locally; elsewhere a copy then a delete (see the module docstring)."""
  if is_local(src) and is_local(dst):
    os.rename(src, dst)
  elif tf.io.gfile.isdir(src):
    copy_tree(src, dst)
    rmtree(src, ignore_errors=True)
  else:
    tf.io.gfile.copy(src, dst, overwrite=True)
    tf.io.gfile.remove(src)


@_os_errors_of_first_arg
def publish_dir(src: str, dst: str) -> None:
  """Moves directory SRC to DST, which must not exist (see the module docstring).

  Raises OSError (FileExistsError elsewhere than locally) if DST appeared
  meanwhile; locally the rename itself refuses a non-empty DST.
  """
  if not (is_local(src) and is_local(dst)) and tf.io.gfile.exists(dst):
    raise FileExistsError(f"{dst} exists")
  move(src, dst)


@_os_errors_of_first_arg
def make_temp_dir(parent: str, prefix: str) -> str:
  """A new uniquely named directory PARENT/PREFIX... (created with PARENT)."""
  tf.io.gfile.makedirs(parent)
  if is_local(parent):
    return tempfile.mkdtemp(prefix=prefix, dir=parent)
  path = f"{str(parent).rstrip('/')}/{prefix}{uuid.uuid4().hex[:12]}"
  tf.io.gfile.makedirs(path)
  return path


@contextlib.contextmanager
def staging_dir(prefix: str = "aps-stage-") -> Iterator[str]:
  """A local temporary directory, removed afterwards (for tools that only
  write local files; copy the result with `copy_tree`)."""
  stage = tempfile.mkdtemp(prefix=prefix)
  try:
    yield stage
  finally:
    shutil.rmtree(stage, ignore_errors=True)
