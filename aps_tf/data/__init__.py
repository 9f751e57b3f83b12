"""Input pipelines for the search and for retraining.

Datasets: 'digits' (embedded, no download), 'cifar10', 'cifar100',
'imagenet2012' (tfds, offline unless cfg.download), or the user's own
(`data.source`: 'tfds:NAME', 'folder:DIR', 'python:KEY'; aps_tf.data.sources). Splits: 'train' and
'reward' (disjoint parts of the training set), 'full_train' (both) and
'test' (final evaluation only).
"""

from aps_tf.data.config import DATASETS
from aps_tf.data.config import DatasetInfo
from aps_tf.data.config import default_config
from aps_tf.data.config import SPLITS
from aps_tf.data.pipeline import build_dataset
from aps_tf.data.pipeline import check_prepared
from aps_tf.data.pipeline import dataset_info
from aps_tf.data.pipeline import label_names
from aps_tf.data.pipeline import preprocessing_record
from aps_tf.data.pipeline import raw_images
from aps_tf.data.pipeline import serving_preprocess
from aps_tf.data.pipeline import serving_resize
from aps_tf.data.sources import DataSourceError
from aps_tf.data.sources import register
from aps_tf.data.tfds_source import DatasetNotPreparedError

__all__ = [
    'DATASETS', 'SPLITS', 'DataSourceError', 'DatasetInfo',
    'DatasetNotPreparedError', 'build_dataset', 'check_prepared', 'dataset_info',
    'default_config', 'label_names', 'preprocessing_record', 'raw_images', 'register',
    'serving_preprocess', 'serving_resize',
]
