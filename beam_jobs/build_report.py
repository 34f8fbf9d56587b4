"""What build_mscoco_data counts, and the summary it prints at the end.

Every event worth reporting (a record written, an image dropped, a caption skipped, ...) has one
counter name below, and is counted once, where it happens:
  - metadata events (captions, annotations, image paths) by the driver, in its `Tally`;
  - image and record events by the shard writer that meets them, in a per-shard `Tally` that
    becomes Beam metrics (namespace `build_mscoco_data`, live in a runner's UI, and the
    summary's source) and a small per-shard JSON report with a few example paths.
The reports give the summary its examples on every runner, and its counts on runners that do
not collect metrics (Beam's DaskRunner, as of 2.77).
"""

import collections
import dataclasses
import json
import os
from typing import Dict, List, Mapping, Optional

import tensorflow as tf
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter

from im2txt import file_io

NAMESPACE = "build_mscoco_data"
SPLITS = ("train", "val", "test")
# Example paths (or ids) kept per counter for the summary.
MAX_EXAMPLES = 3

# Images dropped, by reason (their records are not written). Printed in this order.
IMAGE_DROP_REASONS = {
    "images_dropped_outside_image_dir": "path outside its image folder",
    "images_dropped_missing_file": "listed but missing on disk",
    "images_dropped_empty_file": "zero-byte file",
    "images_dropped_corrupt_image": "truncated or corrupt image data",
    "images_dropped_not_an_image": "not image data",
    "images_dropped_unreadable": "read error",
    "images_dropped_no_captions": "no usable caption",
}
# Images whose bytes are replaced by an RGB JPEG, so that decode_jpeg(channels=3) reads them.
IMAGE_CONVERSIONS = {
    "images_converted_png": "PNG data",
    "images_converted_cmyk": "CMYK JPEG",
    "images_converted_other_format": "other image format",
}
IMAGES_DROPPED_NO_CAPTIONS = "images_dropped_no_captions"
# Listed with a path that leads out of the image folder (`..`, absolute, a symlink out): never read.
IMAGES_DROPPED_OUTSIDE_IMAGE_DIR = "images_dropped_outside_image_dir"
GRAYSCALE_KEPT = "images_grayscale_kept"
RECORDS_DROPPED_BAD_IMAGE = "records_dropped_bad_image"
# Caption and annotation problems found while reading the captions files.
CAPTIONS_DROPPED_EMPTY = "captions_dropped_empty"
CAPTIONS_DROPPED_TOO_LONG = "captions_dropped_too_long"
CAPTIONS_NON_ASCII = "captions_non_ascii"
ANNOTATIONS_UNKNOWN_IMAGE_ID = "annotations_unknown_image_id"
IMAGES_DUPLICATE_ID = "images_duplicate_id"
ENTRIES_MALFORMED = "entries_malformed"


def records_written(split: str) -> str:
  return f"records_written_{split}"


def images_written(split: str) -> str:
  return f"images_written_{split}"


def shards_written(split: str) -> str:
  return f"shards_written_{split}"


class Tally:
  """Counts events by counter name and keeps the first few examples of each."""

  def __init__(self, counts: Optional[Mapping[str, int]] = None,
               examples: Optional[Mapping[str, List[str]]] = None):
    self.counts = collections.Counter(counts or {})
    self.examples = collections.defaultdict(list, {k: list(v) for k, v in (examples or {}).items()})

  def add(self, name: str, example: Optional[str] = None, n: int = 1) -> None:
    self.counts[name] += n
    if example is not None and len(self.examples[name]) < MAX_EXAMPLES:
      self.examples[name].append(example)

  def merge(self, other: "Tally") -> None:
    for name, n in other.counts.items():
      self.counts[name] += n
    for name, examples in other.examples.items():
      kept = self.examples[name]
      kept.extend(examples[:MAX_EXAMPLES - len(kept)])

  def to_json(self) -> str:
    return json.dumps({"counts": dict(sorted(self.counts.items())),
                       "examples": {k: v for k, v in sorted(self.examples.items()) if v}},
                      sort_keys=True)

  @classmethod
  def from_json(cls, text: str) -> "Tally":
    data = json.loads(text)
    return cls(data["counts"], data["examples"])


def write_report(tally: Tally, path: str) -> None:
  """Writes a shard's tally as JSON, atomically (a retried shard simply overwrites it)."""
  file_io.write_file(path, tally.to_json())


def publish(tally: Tally, report_file: str, namespace: str = NAMESPACE) -> None:
  """A finished shard's tally: its report file (for runners without metrics) and its Beam
  counters in `namespace`."""
  write_report(tally, report_file)
  for name, count in sorted(tally.counts.items()):
    Metrics.counter(namespace, name).inc(count)


def read_reports(report_dir: str) -> Tally:
  """Merges every shard report in `report_dir`, in file-name order (deterministic examples)."""
  tally = Tally()
  for path in sorted(tf.io.gfile.glob(os.path.join(report_dir, "*.json"))):
    with tf.io.gfile.GFile(path, "r") as f:
      tally.merge(Tally.from_json(f.read()))
  return tally


def metric_counters(result, namespace: str = NAMESPACE) -> Optional[Dict[str, int]]:
  """Counter values of a finished PipelineResult (committed where the runner has them)."""
  try:
    counters = result.metrics().query(MetricsFilter().with_namespace(namespace))["counters"]
  except (AttributeError, NotImplementedError, KeyError):
    return None
  values = collections.Counter()
  for counter in counters:
    value = counter.committed if counter.committed is not None else counter.attempted
    values[counter.key.metric.name] += int(value or 0)
  return dict(values)


@dataclasses.dataclass
class BuildSummary:
  """The outcome of one build: counters, a few examples per problem, and where things went."""

  counts: Dict[str, int]
  examples: Dict[str, List[str]]
  num_shards: Dict[str, int]
  output_dir: str
  vocab_file: str
  vocab_size: int
  min_word_count: int
  max_caption_tokens: int
  # concepts.txt and its number of concepts; "" with --num_concepts=0.
  concepts_file: str = ""
  num_concepts: int = 0
  seconds: float = 0.0
  stale_shards_removed: int = 0

  def records(self, split: str) -> int:
    return self.counts.get(records_written(split), 0)

  def images(self, split: str) -> int:
    return self.counts.get(images_written(split), 0)

  @property
  def total_records(self) -> int:
    return sum(self.records(split) for split in SPLITS)

  def _examples(self, name: str) -> str:
    examples = self.examples.get(name) or []
    return ("  e.g. " + ", ".join(examples)) if examples else ""

  def _section(self, title: str, reasons: Mapping[str, str]) -> List[str]:
    total = sum(self.counts.get(name, 0) for name in reasons)
    lines = [f"  {title}: {total}"]
    for name, description in reasons.items():
      if self.counts.get(name):
        lines.append(f"    {description:<34}{self.counts[name]:>8}{self._examples(name)}")
    return lines

  def format(self) -> str:
    """The text printed at the end of a run."""
    c = self.counts.get
    lines = [f"build_mscoco_data summary (output {self.output_dir})",
             f"  {'split':<8}{'records':>10}{'images':>10}{'shards':>8}"]
    for split in SPLITS:
      lines.append(f"  {split:<8}{self.records(split):>10}{self.images(split):>10}"
                   f"{self.num_shards.get(split, 0):>8}")
    lines.append(f"  vocabulary: {self.vocab_size} words (min_word_count={self.min_word_count}) "
                 f"in {self.vocab_file}")
    lines.append(f"  concepts: {self.num_concepts} words in {self.concepts_file}"
                 if self.concepts_file else "  concepts: none (--num_concepts=0)")
    lines += self._section("images dropped", IMAGE_DROP_REASONS)
    lines.append(f"  records dropped with their images: {c(RECORDS_DROPPED_BAD_IMAGE, 0)}")
    lines += self._section("images converted to RGB JPEG", IMAGE_CONVERSIONS)
    lines.append(f"  grayscale JPEGs kept as they are: {c(GRAYSCALE_KEPT, 0)}"
                 f"{self._examples(GRAYSCALE_KEPT)}")
    too_long = f"> {self.max_caption_tokens} tokens" if self.max_caption_tokens else "no limit"
    lines.append(f"  captions dropped: empty {c(CAPTIONS_DROPPED_EMPTY, 0)}, too long ({too_long}) "
                 f"{c(CAPTIONS_DROPPED_TOO_LONG, 0)}{self._examples(CAPTIONS_DROPPED_TOO_LONG)}")
    lines.append(f"  non-ASCII captions kept (UTF-8): {c(CAPTIONS_NON_ASCII, 0)}"
                 f"{self._examples(CAPTIONS_NON_ASCII)}")
    for name, description in ((ANNOTATIONS_UNKNOWN_IMAGE_ID, "annotations with unknown image id"),
                              (IMAGES_DUPLICATE_ID, "duplicate image ids (first kept)"),
                              (ENTRIES_MALFORMED, "malformed JSON entries")):
      if c(name):
        lines.append(f"  {description} skipped: {c(name)}{self._examples(name)}")
    if self.stale_shards_removed:
      lines.append(f"  removed {self.stale_shards_removed} shard files of an earlier run with "
                   "other shard counts")
    lines.append(f"  {self.total_records} records written in {self.seconds:.1f} s")
    return "\n".join(lines)

