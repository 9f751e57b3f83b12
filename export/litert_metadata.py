"""LiteRT metadata: the preprocessing a phone app needs, inside every .tflite file.

Each exported file carries, in the model flatbuffer's `metadata` list:

* `TFLITE_METADATA`: the standard LiteRT model metadata (a `ModelMetadata`
  flatbuffer, file identifier "M001", of tflite-support's
  metadata_schema.fbs): the input tensor as an image (`ImageProperties`:
  RGB or GRAYSCALE, default size S x S), its `NormalizationOptions` (per-
  channel mean and std on the 0..255 scale: input = (pixel - mean) / std),
  `Stats` (the input's range after normalisation) and, when the dataset has
  label names, a `labels.txt` associated file of type TENSOR_AXIS_LABELS on
  the output, packed into the file as a zip archive after the flatbuffer
  (the layout tflite-support's MetadataPopulator writes). Android Studio's ML
  model binding, the LiteRT/TFLite Support Library's `MetadataExtractor`, the
  Task Library's ImageClassifier and Netron read it.
* `aps_tf_preprocessing`: the same as JSON (`preprocessing`), with the
  resize step and, for int8 inputs, the input quantisation: any flatbuffer
  reader (and `read` here) gets the whole recipe without the metadata schema.

No metadata library is needed: the standard buffer is written with the
`flatbuffers` package against the schema's field order (below), and the model
is re-serialised with TensorFlow's own schema (`flatbuffer_utils`).
"""

from __future__ import annotations

import io
import json
import zipfile

import flatbuffers
from flatbuffers import number_types as nt
from flatbuffers import table as fb_table
import numpy as np

STANDARD_NAME = "TFLITE_METADATA"
JSON_NAME = "aps_tf_preprocessing"
LABELS_FILE = "labels.txt"
FILE_IDENTIFIER = b"M001"
MIN_PARSER_VERSION = "1.0.0"  # no field newer than schema 1.0.0 is written

# metadata_schema.fbs: enum values and field ids (vtable slot = field id).
_IMAGE_PROPERTIES = 2  # ContentProperties union: FeatureProperties=1, ImageProperties=2
_NORMALIZATION = 1  # ProcessUnitOptions union: NormalizationOptions=1
_COLOR_SPACES = {"RGB": 1, "GRAYSCALE": 2}
_TENSOR_AXIS_LABELS = 2  # AssociatedFileType


class MetadataError(ValueError):
  """A file's metadata is missing or differs from the manifest."""


def preprocessing(data_info, image_size: int, resize: dict, labels: list[str] | None) -> dict:
  """The preprocessing record of an export (export_manifest.json and every file).

  Args:
    data_info: `aps_tf.data.dataset_info` of the config's data.
    image_size: S, the model's input height and width.
    resize: how a raw image becomes S x S (`aps_tf.data.serving_resize`).
    labels: class names in output order, or None.

  Returns:
    A JSON-able dict: input shape and layout, colour space, the pixel scale,
    resize, per-channel mean and std, the formula, the output and labels.
  """
  channels = int(data_info.image_shape[-1])
  return {
      "input_shape": [1, int(image_size), int(image_size), channels],
      "layout": "NHWC",
      "color_space": "GRAYSCALE" if channels == 1 else "RGB",
      "pixel_range": [0, 255],
      "resize": dict(resize),
      "mean": [float(m) for m in data_info.mean],
      "std": [float(s) for s in data_info.std],
      "normalization": "input[c] = (pixel[c] - mean[c]) / std[c], pixel on the 0..255 scale",
      "output": "probabilities [1, num_classes] (softmax inside the file)",
      "num_classes": int(data_info.num_classes),
      "labels": list(labels) if labels else None,
  }


def file_record(pre: dict, input_details: dict) -> dict:
  """`pre` plus what one file's input tensor adds (dtype, int8 quantisation)."""
  return dict(pre, **input_record(input_details))


def input_record(input_details: dict) -> dict:
  """A file's input dtype and, for int8 inputs, the quantisation after normalising."""
  rec = {"input_dtype": np.dtype(input_details["dtype"]).name}
  if rec["input_dtype"] != "float32":
    scale, zero = input_details["quantization"]
    info = np.iinfo(np.dtype(input_details["dtype"]))
    rec["input_quantization"] = {
        "scale": float(scale), "zero_point": int(zero),
        "formula": f"q = clip(round(input / scale + zero_point), {info.min}, {info.max})"}
  return rec


# -- the standard ModelMetadata flatbuffer ------------------------------------
def _floats(b: flatbuffers.Builder, values) -> int:
  b.StartVector(4, len(values), 4)
  for v in reversed(values):
    b.PrependFloat32(float(v))
  return b.EndVector()


def _offsets(b: flatbuffers.Builder, offsets) -> int:
  b.StartVector(4, len(offsets), 4)
  for o in reversed(offsets):
    b.PrependUOffsetTRelative(o)
  return b.EndVector()


def _table(b: flatbuffers.Builder, num_fields: int, offsets: dict, scalars=()) -> int:
  """A table of `offsets` {field id: offset} and `scalars` (id, kind, value)."""
  b.StartObject(num_fields)
  for fid, off in offsets.items():
    b.PrependUOffsetTRelativeSlot(fid, off, 0)
  for fid, kind, value in scalars:
    if kind == "uint8":
      b.PrependUint8Slot(fid, value, 0)
    elif kind == "int8":
      b.PrependInt8Slot(fid, value, 0)
    else:
      b.PrependUint32Slot(fid, value, 0)
  return b.EndObject()


def standard_metadata(rec: dict, name: str) -> bytes:
  """The `ModelMetadata` flatbuffer of `rec` (a `file_record`)."""
  b = flatbuffers.Builder(1024)
  h, w = rec["input_shape"][1:3]
  size = _table(b, 2, {}, [(0, "uint32", int(w)), (1, "uint32", int(h))])  # ImageSize
  image = _table(b, 2, {1: size}, [(0, "int8", _COLOR_SPACES[rec["color_space"]])])
  content = _table(b, 3, {1: image}, [(0, "uint8", _IMAGE_PROPERTIES)])
  norm = _table(b, 2, {0: _floats(b, rec["mean"]), 1: _floats(b, rec["std"])})
  unit = _table(b, 2, {1: norm}, [(0, "uint8", _NORMALIZATION)])
  lo = [(rec["pixel_range"][0] - m) / s for m, s in zip(rec["mean"], rec["std"])]
  hi = [(rec["pixel_range"][1] - m) / s for m, s in zip(rec["mean"], rec["std"])]
  stats = _table(b, 2, {0: _floats(b, hi), 1: _floats(b, lo)})
  in_desc = b.CreateString(
      f"{rec['color_space']} image {h}x{w}, {rec['normalization']}; resize: "
      f"{json.dumps(rec['resize'], sort_keys=True)}")
  in_name = b.CreateString("image")
  tensor_in = _table(b, 7, {0: in_name, 1: in_desc, 3: content,
                            4: _offsets(b, [unit]), 5: stats})
  out_fields = {0: b.CreateString("probability"),
                1: b.CreateString(f"probabilities of the {rec['num_classes']} classes")}
  feature = _table(b, 0, {})  # FeatureProperties
  out_fields[3] = _table(b, 3, {1: feature}, [(0, "uint8", 1)])
  if rec.get("labels"):
    f = _table(b, 4, {0: b.CreateString(LABELS_FILE),
                      1: b.CreateString("class names, one per line, in output order")},
               [(2, "int8", _TENSOR_AXIS_LABELS)])
    out_fields[6] = _offsets(b, [f])
  tensor_out = _table(b, 7, out_fields)
  sub = _table(b, 10, {0: b.CreateString(name), 2: _offsets(b, [tensor_in]),
                       3: _offsets(b, [tensor_out])})
  root = _table(b, 8, {
      0: b.CreateString(name),
      1: b.CreateString("Image classifier exported by aps-tf; input: one preprocessed "
                        "image, output: class probabilities."),
      3: _offsets(b, [sub]),
      7: b.CreateString(MIN_PARSER_VERSION)})
  b.Finish(root, file_identifier=FILE_IDENTIFIER)
  return bytes(b.Output())


class _T:
  """Minimal reader of one flatbuffer table (the fields this module writes)."""

  def __init__(self, buf, pos):
    self.t = fb_table.Table(buf, pos)

  def _o(self, fid):
    return self.t.Offset(4 + 2 * fid)

  def string(self, fid):
    o = self._o(fid)
    return self.t.String(o + self.t.Pos).decode() if o else None

  def scalar(self, fid, flags, default=0):
    o = self._o(fid)
    return self.t.Get(flags, o + self.t.Pos) if o else default

  def table(self, fid):
    o = self._o(fid)
    return _T(self.t.Bytes, self.t.Indirect(o + self.t.Pos)) if o else None

  def tables(self, fid):
    o = self._o(fid)
    if not o:
      return []
    start = self.t.Vector(o)
    return [_T(self.t.Bytes, self.t.Indirect(start + 4 * i)) for i in range(self.t.VectorLen(o))]

  def floats(self, fid):
    o = self._o(fid)
    if not o:
      return []
    start = self.t.Vector(o)
    return [self.t.Get(nt.Float32Flags, start + 4 * i) for i in range(self.t.VectorLen(o))]


def parse_standard(buf: bytes) -> dict:
  """The fields of a `ModelMetadata` flatbuffer that `standard_metadata` writes."""
  buf = bytearray(buf)
  if bytes(buf[4:8]) != FILE_IDENTIFIER:
    raise MetadataError(f"{STANDARD_NAME}: file identifier {bytes(buf[4:8])!r}, expected "
                        f"{FILE_IDENTIFIER!r}")
  root = _T(buf, flatbuffers.encode.Get(nt.UOffsetTFlags.packer_type, buf, 0))
  sub = root.tables(3)[0]
  tin, tout = sub.tables(2)[0], sub.tables(3)[0]
  content = tin.table(3)
  image = content.table(1)
  size = image.table(1)
  norm = tin.tables(4)[0].table(1)
  stats = tin.table(5)
  colors = {v: k for k, v in _COLOR_SPACES.items()}
  files = [{"name": f.string(0), "type": f.scalar(2, nt.Int8Flags)} for f in tout.tables(6)]
  return {
      "name": root.string(0), "min_parser_version": root.string(7),
      "input_name": tin.string(0),
      "content_type": content.scalar(0, nt.Uint8Flags),
      "color_space": colors.get(image.scalar(0, nt.Int8Flags)),
      "width": size.scalar(0, nt.Uint32Flags), "height": size.scalar(1, nt.Uint32Flags),
      "process_unit_type": tin.tables(4)[0].scalar(0, nt.Uint8Flags),
      "mean": norm.floats(0), "std": norm.floats(1),
      "stats_max": stats.floats(0), "stats_min": stats.floats(1),
      "output_name": tout.string(0), "associated_files": files,
  }


# -- writing into and reading from a .tflite file -----------------------------
def write(content: bytes, rec: dict, name: str) -> bytes:
  """`content` (a .tflite file) with both metadata entries and the label file.

  Args:
    content: the converted model.
    rec: its `file_record`.
    name: the model name recorded in the metadata.

  Returns:
    The file with `TFLITE_METADATA` and `aps_tf_preprocessing` entries (any
    earlier entries of those names replaced) and, when `rec` has labels,
    `labels.txt` zipped after the flatbuffer.
  """
  from tensorflow.lite.python import schema_py_generated as schema  # pylint: disable=g-import-not-at-top
  from tensorflow.lite.tools import flatbuffer_utils  # pylint: disable=g-import-not-at-top
  model = flatbuffer_utils.read_model_from_bytearray(bytearray(_flatbuffer_part(content)))
  model.metadata = [m for m in (model.metadata or [])
                    if m.name.decode() not in (STANDARD_NAME, JSON_NAME)]
  for key, payload in ((STANDARD_NAME, standard_metadata(rec, name)),
                       (JSON_NAME, json.dumps(rec, sort_keys=True).encode())):
    buf = schema.BufferT()
    buf.data = list(payload)
    model.buffers.append(buf)
    m = schema.MetadataT()
    m.name = key.encode()
    m.buffer = len(model.buffers) - 1
    model.metadata.append(m)
  out = flatbuffer_utils.convert_object_to_bytearray(model)
  if rec.get("labels"):
    stream = io.BytesIO(out)
    stream.seek(0, io.SEEK_END)
    with zipfile.ZipFile(stream, "a", zipfile.ZIP_STORED) as z:
      z.writestr(LABELS_FILE, "\n".join(rec["labels"]) + "\n")
    out = stream.getvalue()
  return bytes(out)


def _flatbuffer_part(content: bytes) -> bytes:
  """The model without an appended zip of associated files."""
  try:
    with zipfile.ZipFile(io.BytesIO(content)) as z:
      infos = z.infolist()
    if infos:
      return content[:min(i.header_offset for i in infos)]
  except zipfile.BadZipFile:
    pass
  return content


def read(content: bytes) -> dict:
  """Both metadata entries and the associated files of a .tflite file.

  Returns:
    {"preprocessing": the JSON record, "standard": `parse_standard`'s dict,
    "files": {name: text} of the zipped associated files}.

  Raises:
    MetadataError: an entry is missing.
  """
  from tensorflow.lite.python import schema_py_generated as schema  # pylint: disable=g-import-not-at-top
  buf = bytearray(_flatbuffer_part(content))
  model = schema.Model.GetRootAsModel(buf, 0)
  entries = {}
  for i in range(model.MetadataLength()):
    m = model.Metadata(i)
    entries[m.Name().decode()] = model.Buffers(m.Buffer()).DataAsNumpy().tobytes()
  missing = [k for k in (STANDARD_NAME, JSON_NAME) if k not in entries]
  if missing:
    raise MetadataError(f"no LiteRT metadata entry {missing[0]!r} (entries: "
                        f"{sorted(entries)}); export the file again with this aps-tf")
  files = {}
  try:
    with zipfile.ZipFile(io.BytesIO(content)) as z:
      files = {n: z.read(n).decode() for n in z.namelist()}
  except zipfile.BadZipFile:
    pass
  return {"preprocessing": json.loads(entries[JSON_NAME]),
          "standard": parse_standard(entries[STANDARD_NAME]), "files": files}


def check(meta: dict, manifest_pre: dict, source: str) -> None:
  """Raises MetadataError naming `source` and the field where `meta` (a `read`
  result) differs from the manifest's preprocessing record."""
  pre, std = meta["preprocessing"], meta["standard"]
  for k, want in manifest_pre.items():
    if pre.get(k) != want:
      raise MetadataError(f"{source}: metadata field {JSON_NAME}.{k} is {pre.get(k)!r}, "
                          f"the manifest's preprocessing.{k} is {want!r}")
  close = lambda a, b: len(a) == len(b) and all(abs(x - y) <= 1e-4 * max(1, abs(y))
                                                for x, y in zip(a, b))
  _, h, w, _ = manifest_pre["input_shape"]
  checks = [("mean", close(std["mean"], manifest_pre["mean"]), std["mean"]),
            ("std", close(std["std"], manifest_pre["std"]), std["std"]),
            ("default_size", (std["width"], std["height"]) == (w, h),
             (std["width"], std["height"])),
            ("color_space", std["color_space"] == manifest_pre["color_space"],
             std["color_space"])]
  labels = manifest_pre.get("labels")
  if labels:
    got = meta["files"].get(LABELS_FILE, "").splitlines()
    checks.append((LABELS_FILE, got == labels, got[:3]))
  for field, ok, got in checks:
    if not ok:
      raise MetadataError(f"{source}: {STANDARD_NAME} {field} is {got!r}; the manifest's "
                          "preprocessing differs")
