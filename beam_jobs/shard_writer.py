"""Writes output shards: the Beam transform of build_mscoco_data and the per-shard function.

The driver plans every shard from metadata (caption_metadata.plan_shards) and stores each plan
as a small JSON spec file. The pipeline moves only those spec paths:

  spec paths --Reshuffle--> ParDo(write one shard) --> ShardResult per shard

Each DoFn call reads its own images, checks them, writes the TFRecord file under a temporary
name and renames it when complete. Image bytes never cross a shuffle and a worker holds one image
at a time, so memory does not grow with the dataset. A killed or retried call leaves at most a
temporary file (in the job's temp directory, which the next run clears), never a truncated
shard under a final name. Output bytes depend only on the spec (concept ids included) and the
image files, so any runner and any number of workers produce identical shards.
"""

import logging
import os
from typing import NamedTuple

import apache_beam as beam
import tensorflow as tf

from beam_jobs import build_report
from beam_jobs import image_check
from beam_jobs.build_report import Tally
from beam_jobs.caption_metadata import ShardSpec
from im2txt import file_io
from im2txt import sequence_example
from im2txt import vocabulary

_LOGGER = logging.getLogger(__name__)
SPEC_DIRNAME = "specs"
REPORT_DIRNAME = "reports"


class ShardResult(NamedTuple):
  """What one shard call wrote."""
  split: str
  shard_index: int
  num_shards: int
  records_written: int
  images_written: int
  records_dropped: int


def write_shard_spec(spec: ShardSpec, tmp_dir: str) -> str:
  """Stores a shard plan as JSON under `tmp_dir/specs/`; returns its path."""
  path = os.path.join(tmp_dir, SPEC_DIRNAME, spec.name + ".json")
  with tf.io.gfile.GFile(path, "w") as f:
    f.write(spec.to_json())
  return path


def read_shard_spec(path: str) -> ShardSpec:
  with tf.io.gfile.GFile(path, "r") as f:
    return ShardSpec.from_json(f.read())


def report_path(tmp_dir: str, spec: ShardSpec) -> str:
  return os.path.join(tmp_dir, REPORT_DIRNAME, spec.name + ".json")


def write_shard(spec: ShardSpec, output_dir: str, tmp_dir: str, vocab: vocabulary.Vocabulary,
                tally: Tally) -> ShardResult:
  """Writes `output_dir/<spec.name>`: one SequenceExample per record whose image is usable.

  Images are read, checked (image_check) and serialized one record at a time. Image-level events
  are counted once, on the image's `first_of_image` record; every record dropped with its image is
  counted too. An empty shard is still written, so every split always has all of its shards.
  """
  final_path = os.path.join(output_dir, spec.name)
  records_written = images_written = records_dropped = 0
  # In the job's temp dir, unique per attempt: a retried or speculative attempt never shares it.
  with file_io.atomic_path(final_path, tmp_dir=tmp_dir) as tmp_path, \
       tf.io.TFRecordWriter(tmp_path) as writer:
    for record in spec.records:
      image = image_check.read_and_check_image(record.path)
      if record.first_of_image and image.reason:
        tally.add(image.reason, record.path)
      if image.action == image_check.DROP:
        records_dropped += 1
        continue
      tokens = record.tokens.split(" ")
      # The image's concept ids come with the plan (None: none, the original's records).
      example = sequence_example.make_sequence_example(record.image_id, image.data, tokens,
                                                       vocab.ids(tokens), record.concept_ids)
      # deterministic=True sorts the context map's keys: the same record is always the same bytes.
      writer.write(example.SerializeToString(deterministic=True))
      records_written += 1
      images_written += int(record.first_of_image)
  tally.add(build_report.records_written(spec.split), n=records_written)
  tally.add(build_report.images_written(spec.split), n=images_written)
  tally.add(build_report.shards_written(spec.split))
  if records_dropped:
    tally.add(build_report.RECORDS_DROPPED_BAD_IMAGE, n=records_dropped)
  return ShardResult(spec.split, spec.shard_index, spec.num_shards, records_written,
                     images_written, records_dropped)


class _WriteShardFn(beam.DoFn):
  """Writes the shard of one spec path; counts its events in Beam metrics and a report file."""

  def __init__(self, output_dir: str, tmp_dir: str, vocab_file: str):
    super().__init__()
    self._output_dir = output_dir
    self._tmp_dir = tmp_dir
    self._vocab_file = vocab_file
    self._vocab = None

  def setup(self):
    self._vocab = vocabulary.Vocabulary.from_file(self._vocab_file)

  def process(self, spec_path: str):
    spec = read_shard_spec(spec_path)
    tally = Tally()
    result = write_shard(spec, self._output_dir, self._tmp_dir, self._vocab, tally)
    build_report.publish(tally, report_path(self._tmp_dir, spec))
    _LOGGER.info("Wrote %s: %d records (%d dropped with bad images)",
                 os.path.join(self._output_dir, spec.name), result.records_written,
                 result.records_dropped)
    yield result


class BuildMscocoData(beam.PTransform):
  """The whole job from the pipeline root: writes every planned shard, counts everything.

  Args:
    spec_paths: shard spec files (write_shard_spec) to write, one output shard each.
    output_dir: where the shards go.
    tmp_dir: the job's temp directory (partial shards and per-shard reports).
    vocab_file: the word_counts.txt the caption ids come from.
  Returns a PCollection of ShardResult, one per shard.
  """

  def __init__(self, spec_paths, output_dir, tmp_dir, vocab_file):
    super().__init__()
    self._spec_paths = list(spec_paths)
    self._output_dir = output_dir
    self._tmp_dir = tmp_dir
    self._vocab_file = vocab_file

  def expand(self, pbegin):
    return (pbegin
            | "ShardSpecs" >> beam.Create(self._spec_paths)
            # Only the small spec paths are shuffled: this spreads the shards over the workers.
            | "SpreadShards" >> beam.Reshuffle()
            | "WriteShards" >> beam.ParDo(_WriteShardFn(self._output_dir, self._tmp_dir,
                                                        self._vocab_file)))
