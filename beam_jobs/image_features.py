"""The transforms of extract_image_features: each image once through Inception, then shards.

An image is told apart by a hash of its JPEG bytes (records without image ids work too). The
Beam job, like the original's builder, shuffles (image, caption) records, so an image's records
sit in several shards; each image still passes through Inception once:

  (shard name, path) --ShardDigestsFn--> (digest, shard) per record     (small: no image bytes)
  --GroupByKey, owner = first shard--> (shard, [digests it owns])
  --ImageViewsFn (reads the shard)--> batches of ((digest, view), [H, W, 3]), each owned
      decodable image once:
      view 0 the evaluation crop, views 1.. seeded training distortions
  --RunInference(KeyedModelHandler(InceptionFeaturesHandler))--> ((digest, view), [2048])
  --CoGroupByKey on digest, with the shards that need it--> (shard, (digest, serialized views))
  --CoGroupByKey on shard--> WriteFeatureShardFn: the shard's records in their order, each with
      its image's views, written atomically under the shard's name.
Only digests, shard names and features cross the shuffles, never image bytes.
"""

import hashlib
import logging
import os
from typing import Any, Dict, Iterable, Sequence

import apache_beam as beam
import numpy as np
import tensorflow as tf
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.ml.inference.base import KeyedModelHandler
from apache_beam.ml.inference.base import ModelHandler
from apache_beam.ml.inference.base import PredictionResult
from apache_beam.ml.inference.base import RunInference

from beam_jobs import build_report
from beam_jobs.build_report import Tally
from im2txt import configuration
from im2txt import file_io
from im2txt import sequence_example
from im2txt.data import feature_cache
from im2txt.model import image_processing
from im2txt.model import show_and_tell_model

NAMESPACE = "extract_image_features"
REPORT_DIRNAME = "reports"
_LOGGER = logging.getLogger(__name__)

# Counters (Beam metrics in NAMESPACE, and per-shard reports for runners without metrics).
IMAGES_COMPUTED = "images_computed"
VIEWS_COMPUTED = "views_computed"
RECORDS_WRITTEN = "records_written"
SHARDS_WRITTEN = "shards_written"
IMAGES_SKIPPED_UNDECODABLE = "images_skipped_undecodable"
RECORDS_SKIPPED_BAD_IMAGE = "records_skipped_bad_image"
RECORDS_SKIPPED_MALFORMED = "records_skipped_malformed"
SKIP_REASONS = {
    IMAGES_SKIPPED_UNDECODABLE: "images that do not decode as JPEG",
    RECORDS_SKIPPED_BAD_IMAGE: "records of those images",
    RECORDS_SKIPPED_MALFORMED: "records that are not image SequenceExamples",
}


def image_digest(image_data: bytes) -> str:
  return hashlib.sha256(image_data).hexdigest()[:32]


def view_seed(seed: int, digest: str, view: int) -> np.ndarray:
  """The stateless-random seed of a training view: fixed by the job's seed and the image."""
  return np.array([int(digest[:15], 16), seed * 1009 + view], dtype=np.int64)


def _image_data(serialized: bytes) -> bytes:
  """The JPEG bytes of an image record; ValueError for anything else."""
  return _example_image_data(tf.train.SequenceExample.FromString(serialized))


def _example_image_data(example: tf.train.SequenceExample) -> bytes:
  """_image_data of a parsed record."""
  context = example.context.feature
  if sequence_example.IMAGE_DATA_FEATURE not in context:
    raise ValueError(f"no {sequence_example.IMAGE_DATA_FEATURE}")
  values = context[sequence_example.IMAGE_DATA_FEATURE].bytes_list.value
  if len(values) != 1:
    raise ValueError(f"{len(values)} values of {sequence_example.IMAGE_DATA_FEATURE}")
  return values[0]


def _read_records(path: str) -> Iterable[bytes]:
  for record in tf.data.TFRecordDataset(path):
    yield record.numpy()


class ShardDigestsFn(beam.DoFn):
  """(shard name, path) -> (digest, shard name) for each image record of the shard."""

  def process(self, shard):
    name, path = shard
    for serialized in _read_records(path):
      try:
        yield image_digest(_image_data(serialized)), name
      except Exception:  # pylint: disable=broad-except
        continue  # Counted (once) by the shard writer.


def owner_shard(element):
  """(digest, [shard names]) -> (the shard that computes it, digest): the first by name."""
  digest, names = element
  return min(names), digest


class ImageViewsFn(beam.DoFn):
  """(shard name, {"shard": [path], "owned": [[digests]]}) -> batches (lists of up to
  batch_size) of ((digest, view), model input [H, W, 3]) for each decodable image the shard
  owns, once; view 0 the evaluation crop, views 1..num_views seeded distortions.

  The batches are made here, not by RunInference's BatchElements: that emits its last batch
  from finish_bundle, which Beam's DaskRunner (2.77) drops, losing images (measured).
  """

  def __init__(self, model_config: configuration.ModelConfig, num_views: int, seed: int,
               batch_size: int, tmp_dir: str):
    super().__init__()
    self._config = model_config
    self._num_views = num_views
    self._seed = seed
    self._batch_size = batch_size
    self._tmp_dir = tmp_dir
    self._process = None

  def setup(self):
    config = self._config
    self._process = {
        False: tf.function(lambda data, seed: image_processing.process_image(
            data, config, is_training=False)),
        True: tf.function(lambda data, seed: image_processing.process_image(
            data, config, is_training=True, seed=seed)),
    }

  def teardown(self):
    self._process = None  # Freed before the interpreter exits (TensorFlow complains otherwise).

  def process(self, element):
    name, grouped = element
    (path,) = list(grouped["shard"])
    owned = {digest for digests in grouped["owned"] for digest in digests}
    tally, batch = Tally(), []
    for index, serialized in enumerate(_read_records(path)):
      if not owned:
        break
      try:
        data = _image_data(serialized)
      except Exception:  # pylint: disable=broad-except
        continue
      digest = image_digest(data)
      if digest not in owned:
        continue
      owned.discard(digest)
      try:
        views = [self._process[view > 0](tf.constant(data), view_seed(self._seed, digest, view))
                 for view in range(1 + self._num_views)]
      except tf.errors.InvalidArgumentError as e:
        reason = file_io.tf_message(e)
        _LOGGER.warning("%s record %d: skipped, its image does not decode as JPEG (%s)",
                        path, index, reason)
        tally.add(IMAGES_SKIPPED_UNDECODABLE, f"{path} record {index}")
        continue
      tally.add(IMAGES_COMPUTED)
      tally.add(VIEWS_COMPUTED, n=len(views))
      for view, image in enumerate(views):
        batch.append(((digest, view), image.numpy()))
        if len(batch) == self._batch_size:
          yield batch
          batch = []
    if batch:
      yield batch
    build_report.publish(tally, os.path.join(self._tmp_dir, REPORT_DIRNAME, f"{name}.views.json"),
                         NAMESPACE)


def to_needing_shards(element):
  """(digest, {"features": [(view, features)], "shards": [names]}) -> (shard, (digest, the
  serialized feature context of all views)) for each shard with a record of the image."""
  digest, grouped = element
  views = dict(grouped["features"])
  if not views:
    return  # The image did not decode.
  context = sequence_example.feature_context_bytes([views[v] for v in sorted(views)])
  for name in sorted(set(grouped["shards"])):
    yield name, (digest, context)


def load_inception_model(config: configuration.ModelConfig, checkpoint: str,
                         inception_file: str) -> show_and_tell_model.ShowAndTellModel:
  """The model whose frozen Inception computes the features: a train_dir checkpoint's, or a
  fresh model with Inception's weights from a TF-slim checkpoint or Keras .h5 file."""
  model = show_and_tell_model.ShowAndTellModel(config, train_inception=False)
  model.build_all()
  if checkpoint:
    status = tf.train.Checkpoint(model=model).restore(checkpoint)
    status.assert_existing_objects_matched().expect_partial()
  else:
    model.load_inception_weights(inception_file)
  return model


class InceptionFeaturesHandler(ModelHandler[np.ndarray, PredictionResult, Any]):
  """RunInference's model handler: batches of images -> Inception's pooled features.

  Each worker loads the weights once and checks their fingerprint against the one the driver
  wrote to image_features.json (a train_dir's checkpoint could have been replaced meanwhile).
  """

  def __init__(self, model_config: configuration.ModelConfig, checkpoint: str,
               inception_file: str, fingerprint: str):
    super().__init__()
    self._config = model_config
    self._checkpoint = checkpoint
    self._inception_file = inception_file
    self._fingerprint = fingerprint

  def load_model(self):
    model = load_inception_model(self._config, self._checkpoint, self._inception_file)
    found = feature_cache.inception_fingerprint(model.inception)
    if found != self._fingerprint:
      raise ValueError(f"{self._checkpoint or self._inception_file}: Inception's weights changed "
                       "since the job started")
    c = self._config
    features = tf.function(lambda images: model.image_features(images, training=False),
                           input_signature=[tf.TensorSpec(
                               [None, c.image_height, c.image_width, 3], tf.float32)])
    features(tf.zeros([1, c.image_height, c.image_width, 3]))  # Traced here, not in a batch.
    return features

  def run_inference(self, batch: Sequence[np.ndarray], model, inference_args=None):
    features = model(tf.constant(np.stack(batch))).numpy()
    return [PredictionResult(example, inference)
            for example, inference in zip(batch, features)]

  def get_num_bytes(self, batch: Sequence[np.ndarray]) -> int:
    return sum(image.nbytes for image in batch)



def write_feature_shard(name: str, path: str, contexts: Dict[str, bytes], output_dir: str,
                        tmp_dir: str, tally: Tally) -> int:
  """Writes output_dir/name: the records of `path` in order, each as a feature record with its
  image's views ({digest: sequence_example.feature_context_bytes}); records without them are
  skipped and counted. Returns the number of records written."""
  written = 0
  with file_io.atomic_path(os.path.join(output_dir, name), tmp_dir=tmp_dir) as tmp_path, \
       tf.io.TFRecordWriter(tmp_path) as writer:
    for index, serialized in enumerate(_read_records(path)):
      try:
        example = tf.train.SequenceExample.FromString(serialized)
        context = contexts.get(image_digest(_example_image_data(example)))
      except Exception as e:  # pylint: disable=broad-except
        _LOGGER.warning("%s record %d: skipped, not an image SequenceExample (%s)", path, index,
                        e)
        tally.add(RECORDS_SKIPPED_MALFORMED, f"{path} record {index}")
        continue
      if context is None:
        tally.add(RECORDS_SKIPPED_BAD_IMAGE, f"{path} record {index}")
        continue
      writer.write(sequence_example.to_feature_record(example, context))
      written += 1
  tally.add(RECORDS_WRITTEN, n=written)
  tally.add(SHARDS_WRITTEN)
  return written


class WriteFeatureShardFn(beam.DoFn):
  """(shard name, {"shard": [path], "features": [(digest, context bytes), ...]}) -> name."""

  def __init__(self, output_dir: str, tmp_dir: str):
    super().__init__()
    self._output_dir = output_dir
    self._tmp_dir = tmp_dir

  def process(self, element):
    name, grouped = element
    (path,) = list(grouped["shard"])
    contexts = dict(grouped["features"])
    tally = Tally()
    written = write_feature_shard(name, path, contexts, self._output_dir, self._tmp_dir, tally)
    build_report.publish(tally, os.path.join(self._tmp_dir, REPORT_DIRNAME, f"{name}.write.json"),
                         NAMESPACE)
    _LOGGER.info("Wrote %s: %d records", os.path.join(self._output_dir, name), written)
    yield name


class ExtractImageFeatures(beam.PTransform):
  """The whole job from the pipeline root; returns the PCollection of written shard names.

  Args:
    shards: (output shard name, input shard path) pairs.
    model_config: the model's image settings and Inception's shape.
    checkpoint / inception_file: where Inception's weights come from (one of them).
    fingerprint: feature_cache.inception_fingerprint of those weights.
    num_views: training distortions per image besides the evaluation crop; seed fixes them.
  """

  def __init__(self, shards, model_config, checkpoint: str, inception_file: str,
               fingerprint: str, num_views: int, seed: int, batch_size: int, output_dir: str,
               tmp_dir: str):
    super().__init__()
    self._shards = list(shards)
    self._model_config = model_config
    self._handler = InceptionFeaturesHandler(model_config, checkpoint, inception_file,
                                             fingerprint)
    self._batch_size = batch_size
    self._num_views = num_views
    self._seed = seed
    self._output_dir = output_dir
    self._tmp_dir = tmp_dir

  def expand(self, pbegin):
    shards = (pbegin
              | "Shards" >> beam.Create(self._shards)
              | "SpreadShards" >> beam.Reshuffle())
    digests = shards | "Digests" >> beam.ParDo(ShardDigestsFn())
    owned = (digests
             | "ShardsOfImage" >> beam.GroupByKey()
             | "Owner" >> beam.Map(owner_shard)
             | "OwnedByShard" >> beam.GroupByKey())
    features = ({"shard": shards, "owned": owned}
                | "JoinOwned" >> beam.CoGroupByKey()
                | "ImageViews" >> beam.ParDo(ImageViewsFn(self._model_config, self._num_views,
                                                          self._seed, self._batch_size,
                                                          self._tmp_dir))
                | "Inception" >> RunInference(KeyedModelHandler(self._handler).with_no_batching())
                | "ByImage" >> beam.Map(lambda kv: (kv[0][0], (kv[0][1], kv[1].inference))))
    by_shard = ({"features": features, "shards": digests}
                | "JoinImages" >> beam.CoGroupByKey()
                | "ToShards" >> beam.FlatMap(to_needing_shards))
    return ({"shard": shards, "features": by_shard}
            | "JoinShards" >> beam.CoGroupByKey()
            | "WriteShards" >> beam.ParDo(WriteFeatureShardFn(self._output_dir, self._tmp_dir)))


def read_counts(result, tmp_dir: str) -> Tally:
  """The job's counts (Beam metrics, or the per-shard reports where a runner has none), with the
  reports' examples."""
  reports = build_report.read_reports(os.path.join(tmp_dir, REPORT_DIRNAME))
  metrics = build_report.metric_counters(result, NAMESPACE)
  if metrics:
    return Tally(metrics, reports.examples)
  return reports


def inference_seconds(result) -> float:
  """Seconds RunInference spent inside InceptionV3 (its batch latency metric; 0 without one)."""
  try:
    distributions = result.metrics().query(
        MetricsFilter().with_name("inference_batch_latency_micro_secs"))["distributions"]
  except (AttributeError, NotImplementedError, KeyError):
    return 0.0
  total = 0
  for distribution in distributions:
    value = distribution.committed or distribution.attempted
    total += value.sum if value is not None else 0
  return total / 1e6
