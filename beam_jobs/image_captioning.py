"""The transforms of caption_images: image files -> checked bytes -> RunInference -> JSONL shards.

  (shard index, [(path, failure found by the driver or "")]) --ReadImagesFn-->
      ("batch", [((shard, path, converted from), image bytes), ...])
      ("failed", (shard, (path, reason, detail)))
  --RunInference(KeyedModelHandler(CaptionModelHandler).with_no_batching()) on the batches-->
      ((shard, path, converted from), one image's outputs or {"error"}) --ToRecordFn--> lines
  --CoGroupByKey on shard, with the shards--> WriteCaptionShardFn: the shard's failures file, then
      its captions file, each written atomically; the captions file marks the shard done.

Only paths, captions and failures cross the shuffle, never image bytes. The batches are made per
shard here, bounded by the job's --batch_size, not by RunInference's BatchElements: that emits its
last batch from finish_bundle, which Beam's DaskRunner (2.77) drops (measured for
extract_image_features, which batches the same way).

Every file is checked before it reaches the model, so that one bad file never fails a batch or the
job (the SavedModel decodes a whole batch at once): see `check_image`. A batch the SavedModel still
rejects is captioned image by image, and the image it fails on is a failure like the others.
"""

import io
import json
import logging
import math
import os
import time
import uuid
import warnings
from typing import Any, Dict, Iterable, List, Sequence, Tuple

import apache_beam as beam
import numpy as np
import tensorflow as tf
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import KeyedModelHandler
from apache_beam.ml.inference.base import ModelHandler
from apache_beam.ml.inference.base import PredictionResult
from apache_beam.ml.inference.base import RunInference
from PIL import Image

from beam_jobs import image_check
from im2txt import file_io

NAMESPACE = "caption_images"
_LOGGER = logging.getLogger(__name__)

# Failures, by reason: the summary's keys and descriptions, in the summary's order.
FAILURE_REASONS = {
    "outside_base_dir": "path outside --base_dir (not read)",
    "missing_file": "listed but missing",
    "unreadable": "read error",
    "empty_file": "zero-byte file",
    "not_an_image": "not image data",
    "corrupt_image": "truncated or corrupt image data",
    "too_many_pixels": "more pixels than --max_image_pixels",
    "model_error": "the model failed on it",
}
# Images in a format TensorFlow's decoder does not read (WebP, TIFF, ...): given to the model as
# an RGB JPEG, as build_mscoco_data does; their lines name the format (CONVERTED_FROM).
CONVERTED = "converted_to_jpeg"
CONVERTED_FROM = "converted_from"
# Formats the SavedModel's tf.io.decode_jpeg reads itself: their bytes go to it unchanged.
TF_FORMATS = ("JPEG", "PNG", "GIF", "BMP")
CAPTIONED = "images_captioned"
# A worker's progress line at most this often.
PROGRESS_SECONDS = 10.0


def captions_name(shard: int, num_shards: int) -> str:
  return "captions-%.5d-of-%.5d.jsonl" % (shard, num_shards)


def failures_name(shard: int, num_shards: int) -> str:
  return "failures-%.5d-of-%.5d.jsonl" % (shard, num_shards)


class Failure(Exception):
  """An image that cannot be captioned: `reason` is a FAILURE_REASONS key."""

  def __init__(self, reason: str, detail: str):
    super().__init__(f"{reason}: {detail}")
    self.reason = reason
    self.detail = detail


def check_image(data: bytes, max_pixels: int) -> Tuple[bytes, str]:
  """(the bytes to give the SavedModel, the format they were converted from or "") for one
  file's bytes; Failure when it cannot be captioned.

  The size comes from the header (PIL opens lazily), before anything is decoded: an image of
  more than max_pixels is never decoded. A JPEG's whole entropy-coded stream is then decoded by
  TensorFlow at 1/8 scale (truncation and corruption show, at a fraction of a full decode); PNG,
  GIF and BMP are decoded in full by the same op. Other formats PIL reads are converted to an RGB
  JPEG.
  """
  if not data:
    raise Failure("empty_file", "0 bytes")
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      image = Image.open(io.BytesIO(data))
      width, height = image.size
  except Image.DecompressionBombError as e:
    raise Failure("too_many_pixels", str(e)) from e
  except Exception as e:  # PIL raises many types on unknown data. pylint: disable=broad-except
    # (PIL's message names a memory address: not kept, the lines must not depend on the run.)
    raise Failure("not_an_image", "not an image format PIL or TensorFlow reads") from e
  if width * height > max_pixels:
    raise Failure("too_many_pixels", f"{width}x{height} = {width * height:,} pixels, more than "
                                     f"{max_pixels:,}")
  if image.format in TF_FORMATS:
    problem = image_check.tf_decode_problem(data, ratio=8 if image.format == "JPEG" else 1)
    if problem:
      raise Failure("corrupt_image", f"{image.format}: {problem}")
    return data, ""
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      image.load()
      return image_check.to_rgb_jpeg(image), image.format or "?"
  except Exception as e:  # pylint: disable=broad-except
    raise Failure("corrupt_image", f"{image.format}: {e}") from e


def read_image(path: str, max_pixels: int) -> Tuple[bytes, str]:
  """check_image of the file at `path` (local or any tf.io.gfile file system)."""
  try:
    with tf.io.gfile.GFile(path, "rb") as f:
      data = f.read()
  except tf.errors.NotFoundError as e:
    raise Failure("missing_file", "no such file") from e
  except (tf.errors.OpError, OSError) as e:
    message = file_io.tf_message(e)
    reason = "missing_file" if "No such file" in message else "unreadable"
    raise Failure(reason, message) from e
  return check_image(data, max_pixels)


class ReadImagesFn(beam.DoFn):
  """(shard, [(path, failure reason or "")]) -> (BATCH, a list of up to batch_size ((shard, path,
  the format converted from or ""), bytes)) and (FAILED, (shard, (path, reason, detail))). A path
  the driver already failed (outside --base_dir) is not read.

  One output, not tagged ones: Beam's DaskRunner (2.77) gives a ParDo's consumers every tagged
  output together.
  """

  BATCH = "batch"
  FAILED = "failed"

  def __init__(self, batch_size: int, max_pixels: int):
    super().__init__()
    self._batch_size = batch_size
    self._max_pixels = max_pixels

  def process(self, element):
    shard, entries = element
    batch = []
    for path, known_failure in entries:
      try:
        if known_failure:
          raise Failure(known_failure, "not read")
        data, converted_from = read_image(path, self._max_pixels)
      except Failure as e:
        Metrics.counter(NAMESPACE, f"images_failed_{e.reason}").inc()
        yield self.FAILED, (shard, (path, e.reason, e.detail))
        continue
      if converted_from:
        Metrics.counter(NAMESPACE, f"images_{CONVERTED}").inc()
      batch.append(((shard, path, converted_from), data))
      if len(batch) == self._batch_size:
        yield self.BATCH, batch
        batch = []
    if batch:
      yield self.BATCH, batch


def image_record(path: str, outputs: Dict[str, np.ndarray]) -> Dict[str, Any]:
  """One image's line from its SavedModel outputs: its captions best first (the valid ones:
  log-probability above -inf), their log-probabilities and probabilities, and its concepts when
  the model has a concept head; as run_inference's JSON, plus "probabilities"."""
  log_probs = [float(p) for p in outputs["log_probs"]]
  valid = [k for k, p in enumerate(log_probs) if p > -math.inf]
  record = {
      "file": path,
      "captions": [outputs["captions"][k].decode("utf-8") for k in valid],
      "log_probs": [log_probs[k] for k in valid],
      "probabilities": [math.exp(log_probs[k]) for k in valid],
  }
  if "concepts" in outputs:
    record["concepts"] = [{"word": w.decode("utf-8"), "probability": float(p)}
                          for w, p in zip(outputs["concepts"], outputs["concept_probs"])]
  return record


# A model_error's detail when the SavedModel reports an image invalid.
UNDECODABLE_IN_MODEL = "the SavedModel could not decode it (valid False)"


class CaptionModelHandler(ModelHandler[bytes, PredictionResult, Any]):
  """RunInference's handler: batches of image bytes -> the SavedModel's captions per image.

  RunInference loads the SavedModel once per worker process (Beam's Shared) and shares it
  between the threads of that process.
  """

  def __init__(self, saved_model_dir: str):
    super().__init__()
    self._saved_model_dir = saved_model_dir

  def load_model(self):
    return tf.saved_model.load(self._saved_model_dir)

  @staticmethod
  def _serve(serve, batch: Sequence[bytes]) -> List[Dict[str, np.ndarray]]:
    """Each image's outputs (the image bytes are not kept in the results); an image that the
    SavedModel reports invalid (it does not decode) gets an "error"."""
    outputs = {k: v.numpy() for k, v in serve(jpegs=tf.constant(list(batch), tf.string)).items()}
    per_image = [{k: v[i] for k, v in outputs.items()} for i in range(len(batch))]
    return [{"error": UNDECODABLE_IN_MODEL} if "valid" in image and not image["valid"] else image
            for image in per_image]

  def run_inference(self, batch: Sequence[bytes], model, inference_args=None):
    serve = model.signatures["serving_default"]
    try:
      return [PredictionResult(b"", outputs) for outputs in self._serve(serve, batch)]
    except tf.errors.InvalidArgumentError:
      # One image the checks let through, in a SavedModel of an earlier version (without the
      # "valid" output, its batch fails as a whole): the others are captioned one by one.
      pass
    results = []
    for data in batch:
      try:
        results.append(PredictionResult(b"", self._serve(serve, [data])[0]))
      except tf.errors.InvalidArgumentError as e:
        results.append(PredictionResult(b"", {"error": image_check.tf_error_message(e)}))
    return results

  def get_num_bytes(self, batch: Sequence[bytes]) -> int:
    return sum(len(data) for data in batch)


class ToRecordFn(beam.DoFn):
  """((shard, path, converted from), PredictionResult) -> (shard, ("ok", line)) or (shard, ("failed", (path,
  "model_error", detail))); logs this worker's progress (images/s, and the job's ETA from the
  other workers' progress files in tmp_dir) at most every PROGRESS_SECONDS."""

  def __init__(self, total: int, tmp_dir: str):
    super().__init__()
    self._total = total
    self._tmp_dir = tmp_dir

  def setup(self):
    self._id = uuid.uuid4().hex[:12]
    self._start = self._last = time.time()
    self._count = 0

  def process(self, element):
    (shard, path, converted_from), result = element
    outputs = result.inference
    if "error" in outputs:
      Metrics.counter(NAMESPACE, "images_failed_model_error").inc()
      yield shard, ("failed", (path, "model_error", outputs["error"]))
      return
    Metrics.counter(NAMESPACE, CAPTIONED).inc()
    record = image_record(path, outputs)
    if converted_from:
      record[CONVERTED_FROM] = converted_from
    yield shard, ("ok", json.dumps(record))
    self._count += 1
    now = time.time()
    if now - self._last >= PROGRESS_SECONDS:
      self._last = now
      self._log_progress(now)

  def _log_progress(self, now: float) -> None:
    progress_dir = os.path.join(self._tmp_dir, "progress")
    file_io.write_json(os.path.join(progress_dir, f"{self._id}.json"),
                       {"images": self._count, "start": self._start}, indent=None)
    done, start = 0, self._start
    for path in tf.io.gfile.glob(os.path.join(progress_dir, "*.json")):
      try:
        with tf.io.gfile.GFile(path) as f:
          worker = json.load(f)
      except (ValueError, tf.errors.OpError):
        continue
      done += worker["images"]
      start = min(start, worker["start"])
    rate = done / max(now - start, 1e-9)
    eta = (self._total - done) / rate if rate > 0 else float("inf")
    _LOGGER.info("caption_images: ~%d of %d images captioned (%.1f images/s, this worker %.1f; "
                 "ETA %s)", done, self._total, rate, self._count / max(now - self._start, 1e-9),
                 _format_seconds(eta))


def _format_seconds(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  minutes, seconds = divmod(int(round(seconds)), 60)
  return f"{minutes}m{seconds:02d}s"


def write_caption_shard(output_dir: str, shard: int, num_shards: int, lines: Iterable[str],
                        failures: Iterable[Tuple[str, str, str]]) -> Tuple[int, int]:
  """Writes the shard's failures file, then its captions file (the shard's completion mark),
  each atomically and sorted by path. Returns (captioned, failed)."""
  failure_lines = [json.dumps({"file": p, "reason": r, "detail": d})
                   for p, r, d in sorted(failures)]
  lines = sorted(lines, key=lambda line: json.loads(line)["file"])
  file_io.write_file(os.path.join(output_dir, failures_name(shard, num_shards)),
                     "".join(l + "\n" for l in failure_lines))
  file_io.write_file(os.path.join(output_dir, captions_name(shard, num_shards)),
                     "".join(l + "\n" for l in lines))
  return len(lines), len(failure_lines)


class WriteCaptionShardFn(beam.DoFn):
  """(shard, {"paths": [[paths]], "results": [("ok", line) | ("failed", failure)]}) -> shard."""

  def __init__(self, output_dir: str, num_shards: int):
    super().__init__()
    self._output_dir = output_dir
    self._num_shards = num_shards

  def process(self, element):
    shard, grouped = element
    lines, failures = [], []
    for kind, value in grouped["results"]:
      (lines if kind == "ok" else failures).append(value)
    captioned, failed = write_caption_shard(self._output_dir, shard, self._num_shards, lines,
                                            failures)
    Metrics.counter(NAMESPACE, "shards_written").inc()
    _LOGGER.info("Wrote %s: %d images captioned, %d failed", os.path.join(
        self._output_dir, captions_name(shard, self._num_shards)), captioned, failed)
    yield shard


class CaptionImages(beam.PTransform):
  """The whole job from the pipeline root; returns the PCollection of written shard indices.

  Args:
    shards: (shard index, [(image path, failure reason or "")]) of the shards to write.
    num_shards: the job's number of shards (for the file names).
    saved_model_dir: export_saved_model's output.
    batch_size: most images per SavedModel call.
    max_pixels: larger images are failures, never decoded.
    total: images to caption in this run (for the progress lines).
  """

  def __init__(self, shards: List[Tuple[int, List[Tuple[str, str]]]], num_shards: int, saved_model_dir: str,
               output_dir: str, tmp_dir: str, batch_size: int, max_pixels: int, total: int):
    super().__init__()
    self._shards = list(shards)
    self._num_shards = num_shards
    self._handler = CaptionModelHandler(saved_model_dir)
    self._output_dir = output_dir
    self._tmp_dir = tmp_dir
    self._batch_size = batch_size
    self._max_pixels = max_pixels
    self._total = total

  def expand(self, pbegin):
    shards = (pbegin
              | "Shards" >> beam.Create(self._shards)
              | "SpreadShards" >> beam.Reshuffle())
    read = shards | "ReadImages" >> beam.ParDo(ReadImagesFn(self._batch_size, self._max_pixels))
    captioned = (read
                 | "Batches" >> beam.FlatMap(
                     lambda kv: [kv[1]] if kv[0] == ReadImagesFn.BATCH else [])
                 | "Caption" >> RunInference(
                     KeyedModelHandler(self._handler).with_no_batching())
                 | "ToRecords" >> beam.ParDo(ToRecordFn(self._total, self._tmp_dir)))
    failed = read | "Failed" >> beam.FlatMap(
        lambda kv: [(kv[1][0], ("failed", kv[1][1]))] if kv[0] == ReadImagesFn.FAILED else [])
    results = (captioned, failed) | "AllResults" >> beam.Flatten()
    return ({"paths": shards, "results": results}
            | "JoinShards" >> beam.CoGroupByKey()
            | "WriteShards" >> beam.ParDo(WriteCaptionShardFn(self._output_dir,
                                                              self._num_shards)))
