"""Phase 1 on cached Inception features: what the feature job writes and the trainer checks.

beam_jobs/extract_image_features runs every image of the image records once through a frozen
InceptionV3 and writes feature records (sequence_example.to_feature_example) under the same
shard names, plus `image_features.json` beside them:

  {"views": 1, "dim": 2048, "inception_fingerprint": "sha256:...", "inception_source": "...",
   "model": {image_height, image_width, resize_height, resize_width, distort_colors}, "seed": 0}

Phase 1 never changes Inception, so training on the features is the same computation as on the
images only while the model's Inception is the one that computed them. The trainer checks that
with the fingerprint (a hash of Inception's weights): a phase 1 on features from another
Inception would learn a decoder for an encoder it does not have, silently.
"""

import dataclasses
import hashlib
import json
import os
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from im2txt import file_io
from im2txt import sequence_example

INFO_FILENAME = "image_features.json"
# The model settings that decide what a cached view is (crop size, resize, distortions).
MODEL_FIELDS = ("image_height", "image_width", "resize_height", "resize_width", "distort_colors")


@dataclasses.dataclass(frozen=True)
class FeatureShape:
  views: int  # Views per image: 1 (the evaluation crop) + the training distortions.
  dim: int  # Features per view (2048 for InceptionV3).
  directory: str  # The first shard's folder, where the feature job's INFO_FILENAME is.


def inception_fingerprint(inception: tf.keras.Model) -> str:
  """A hash of Inception's weights (shapes and float32 values, in creation order; not their
  names, which Keras numbers per process)."""
  digest = hashlib.sha256()
  for weight in inception.weights:
    value = np.ascontiguousarray(weight.numpy(), dtype=np.float32)
    digest.update(f"{value.shape};".encode())
    digest.update(value.tobytes())
  return "sha256:" + digest.hexdigest()


def write_info(output_dir: str, info: dict) -> str:
  path = os.path.join(output_dir, INFO_FILENAME)
  file_io.write_json(path, info)
  return path


def read_info(directory: str) -> Optional[dict]:
  """The feature job's image_features.json in `directory`, or None when there is none."""
  path = os.path.join(directory, INFO_FILENAME)
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path, "r") as f:
    try:
      return json.loads(f.read())
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}: not valid JSON: {e}") from e


def first_record(path: str) -> Optional[bytes]:
  """The first record of a TFRecord file (None if it has none), read as plain bytes.

  Not through tf.data: the trainer asks before it creates its distribution strategy, and
  MultiWorkerMirroredStrategy must be created before TensorFlow's runtime starts. A TFRecord is
  a little-endian uint64 length, its 4-byte CRC, the data and the data's 4-byte CRC.
  """
  with tf.io.gfile.GFile(path, "rb") as f:
    header = f.read(12)
    if len(header) < 12:
      return None
    length = int.from_bytes(header[:8], "little")
    data = f.read(length)
  if len(data) != length:
    raise ValueError(f"{path}: truncated TFRecord file (its first record is cut short)")
  return data


def feature_shape(file_pattern: str) -> Optional[FeatureShape]:
  """The shape of feature records when the first record of `file_pattern` is one, None when it
  is an image record (or the files hold no record at all)."""
  return files_feature_shape(file_io.expand_patterns(file_pattern, "--input_file_pattern"))


def first_record_in(files: Sequence[str]) -> Optional[bytes]:
  """The first record of the first of `files` that holds one (None if none does): what the
  trainer and the evaluator judge the records by (feature or image records, concept ids)."""
  return next((r for r in map(first_record, files) if r is not None), None)


def files_feature_shape(files: Sequence[str]) -> Optional[FeatureShape]:
  """feature_shape of the files a pattern expanded to."""
  record = first_record_in(files)
  if record is None or not sequence_example.is_feature_record(record):
    return None
  return FeatureShape(*sequence_example.feature_shape(record), os.path.dirname(files[0]))


def check_model(model, shape: FeatureShape) -> None:
  """A ValueError unless `model`'s Inception is the one that computed the features `shape`
  describes (by image_features.json beside their first shard) and its sizes fit them."""
  info = read_info(shape.directory)
  if info is None:
    raise ValueError(
        f"feature records without {INFO_FILENAME} beside them ({shape.directory}): nothing "
        f"tells which Inception computed them. Keep the feature job's {INFO_FILENAME} with "
        "its shards.")
  source = os.path.join(shape.directory, INFO_FILENAME)
  if shape.dim != model.inception.output_shape[-1]:
    raise ValueError(f"{source}: features of {shape.dim} values, but the model's Inception "
                     f"gives {model.inception.output_shape[-1]}")
  mismatched = [f"{name} {info.get('model', {}).get(name)} (the model: "
                f"{getattr(model.config, name)})" for name in MODEL_FIELDS
                if info.get("model", {}).get(name) != getattr(model.config, name)]
  if mismatched:
    raise ValueError(f"{source}: the features were computed for other image settings: "
                     + ", ".join(mismatched))
  if info.get("inception_fingerprint") != inception_fingerprint(model.inception):
    raise ValueError(
        f"{source}: the features were computed by another InceptionV3 "
        f"({info.get('inception_source')}) than this run's: phase 1 would train a decoder for "
        "an encoder it does not have. Start phase 1 from the same weights (the feature job's "
        "--inception_checkpoint_file, or the train_dir its --train_dir named), or recompute the "
        "features.")
