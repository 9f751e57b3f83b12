"""The public entry points: dataset info, tf.data pipelines, serving hooks.

Order of a training pipeline: source shard -> cache (decoded, pre-augment)
-> shuffle -> repeat -> zip per-example seeds -> parallel augment -> batch
-> prefetch. Augmentation seeds come from a seeded random dataset zipped in
element order, so with a seed (or cfg.deterministic) the pipeline is
reproducible regardless of how many threads run the map.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from aps_tf import seeds
from aps_tf.data import config
from aps_tf.data import digits
from aps_tf.data import recipes
from aps_tf.data import sources
from aps_tf.data import tfds_source


def _source(cfg):
  """The module that reads cfg's images: digits, tfds, or a user source."""
  if cfg.get('source'):
    kind, _ = config.parse_source(cfg.source)
    return tfds_source if kind == 'tfds' else sources
  config.check_name(cfg.name)
  return digits if cfg.name == 'digits' else tfds_source


def dataset_info(cfg) -> config.DatasetInfo:
  """Shapes, classes, split sizes and normalisation of cfg's dataset.

  `mean`/`std` are the constants the model input is normalised with
  (`data.normalization`; 0/1 for 'none').
  """
  config.validate(cfg)
  info = _source(cfg).info(cfg)
  mean, std = recipes.normalization_constants(cfg, info.mean, info.std)
  return dataclasses.replace(info, mean=mean, std=std,
                             normalization=recipes.normalization(cfg))


def check_prepared(cfg) -> None:
  """Fails before a run starts if its images cannot be read.

  A built-in tfds dataset must be on disk (or downloadable); a user source
  (`data.source`) readable: its folder, registry entry or tfds metadata is
  read; digits always is.

  Args:
    cfg: the `data` section of a config.

  Raises:
    DatasetNotPreparedError: a tfds dataset is missing; the message gives the
      command that prepares it.
    UserError: a user source cannot be read (`sources.DataSourceError`).
  """
  if cfg.get('source'):
    dataset_info(cfg)
    return
  tfds_source.check_prepared(cfg)


def _worker_seed(seed: int | None, index: int) -> int | None:
  """Distinct, reproducible seed per input pipeline."""
  return None if seed is None else seeds.integer(seed, index)


def make_pipeline(ds: tf.data.Dataset, recipe: recipes.Recipe,
                  batch_size: int, *, training: bool, seed: int | None,
                  shuffle_buffer: int, repeat: bool, drop_remainder: bool,
                  deterministic: bool, skip_batches: int = 0) -> tf.data.Dataset:
  """Shuffle/augment/batch tail shared by all sources (and the benchmark).

  `skip_batches` drops the first batches (a resumed run's consumed input)
  before anything is decoded or augmented: every element's augmentation seed
  is the element's own draw from a seeded stream, skipped alongside it, so the
  batches after the skip are exactly those of the unskipped pipeline.
  """
  skip = int(skip_batches) * int(batch_size)  # drop_remainder: whole batches
  if skip and not drop_remainder:
    raise ValueError("skip_batches needs drop_remainder=True (whole batches)")
  if training:
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
  if repeat:
    ds = ds.repeat()
  if training:
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    seeds = seeds.batch(2, drop_remainder=True)
    if skip:
      ds, seeds = ds.skip(skip), seeds.skip(skip)
    ds = tf.data.Dataset.zip(ds, seeds)
    ds = ds.map(lambda xy, s: (recipe.train(xy[0], s), xy[1]),
                num_parallel_calls=tf.data.AUTOTUNE)
  else:
    if skip:
      ds = ds.skip(skip)
    ds = ds.map(lambda x, y: (recipe.eval(recipe.decode(x)), y),
                num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(batch_size, drop_remainder=drop_remainder)
  ds = ds.prefetch(tf.data.AUTOTUNE)
  options = tf.data.Options()
  options.deterministic = deterministic
  return ds.with_options(options)


def build_dataset(cfg, split: str, batch_size: int, *, training: bool,
                  seed: int | None = None,
                  input_context: tf.distribute.InputContext | None = None,
                  repeat: bool = True,
                  drop_remainder: bool = True,
                  skip_batches: int = 0) -> tf.data.Dataset:
  """Yields (images float32 [B,H,W,C] normalised, labels int32 [B]).

  `batch_size` is global; under `input_context` each input pipeline reads a
  disjoint contiguous shard of the split and yields per-replica batches.
  A seed makes shuffling, augmentation and element order reproducible.
  `skip_batches`: the first batches of this pipeline (per-replica batches
  under `input_context`) are dropped without being decoded or augmented.
  """
  config.validate(cfg)
  config.check_split(split)
  if batch_size < 1:
    raise ValueError(f'batch_size must be positive, got {batch_size}.')
  shard = (0, 1)
  if input_context is not None:
    shard = (input_context.input_pipeline_id,
             input_context.num_input_pipelines)
    batch_size = input_context.get_per_replica_batch_size(batch_size)
  seed = _worker_seed(seed, shard[0])
  source = _source(cfg)
  ds = source.examples(cfg, split, shard=shard, training=training, seed=seed)
  if cfg.cache and source.cacheable(cfg):
    ds = ds.cache()
  ds = make_pipeline(
      ds, recipes.get(cfg), batch_size, training=training, seed=seed,
      shuffle_buffer=cfg.shuffle_buffer, repeat=repeat,
      drop_remainder=drop_remainder, skip_batches=skip_batches,
      deterministic=bool(cfg.deterministic or seed is not None
                         or not training))
  if input_context is not None:  # Already sharded: no second auto-shard.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.OFF)
    ds = ds.with_options(options)
  return ds


def raw_images(cfg, split: str, limit: int) -> np.ndarray:
  """First `limit` images of `split` as uint8 [N, H0, W0, C], unaugmented.

  What a serving client sends: digits/CIFAR at their stored resolution,
  ImageNet resized (shorter side image_size/0.875) and center-cropped square.
  """
  config.validate(cfg)
  config.check_split(split)
  if limit < 1:
    raise ValueError(f'limit must be positive, got {limit}.')
  recipe = recipes.get(cfg)
  ds = _source(cfg).examples(cfg, split).take(limit)
  ds = ds.map(lambda x, _: recipe.raw(x)).batch(limit)
  return next(iter(ds)).numpy()


def label_names(cfg) -> list[str] | None:
  """Class names in the model's output order, or None when the dataset has none."""
  return _source(cfg).label_names(cfg)


def serving_resize(cfg) -> dict:
  """How `serving_preprocess` brings a raw image to the model's size, as data
  (what an app that feeds a LiteRT file must do itself, before normalising)."""
  return recipes.resize_record(cfg)


def serving_preprocess(cfg, images_uint8: tf.Tensor) -> tf.Tensor:
  """Eval preprocessing of raw uint8 [N, H, W, C] -> float32 model input.

  The same function the eval pipeline maps over each example, built from
  constants only, so it can be traced into a SavedModel signature.
  """
  return recipes.get(cfg).eval(images_uint8)


def preprocessing_record(cfg) -> dict:
  """How a served uint8 image becomes the model input, for export manifests.

  Keys: source, image_size, channels, resize, normalization, mean, std (the
  constants of `(x - mean) / std` on the 0..255 scale), and class_names when
  the source names its classes (image folders).
  """
  info = dataset_info(cfg)
  size = int(cfg.image_size)
  out = {'source': config.display_name(cfg), 'image_size': size,
         'channels': int(info.image_shape[-1]),
         'resize': (f'shorter side to {round(size / 0.875)}, center crop {size}'
                    if not cfg.get('source') and cfg.name == 'imagenet2012'
                    else f'bilinear to {size}x{size}'),
         'normalization': info.normalization,
         'mean': [float(m) for m in info.mean], 'std': [float(s) for s in info.std]}
  if info.class_names:
    out['class_names'] = list(info.class_names)
  return out
