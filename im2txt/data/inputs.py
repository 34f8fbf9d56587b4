"""The tf.data input pipeline: sharded TFRecord SequenceExamples -> padded training batches.

Each batch is a dict:
  images       float32 [B, image_height, image_width, 3] in [-1, 1]
  input_seqs   int64   [B, T]   caption ids without the last (</S>)
  target_seqs  int64   [B, T]   caption ids without the first (<S>)
  input_mask   int32   [B, T]   1 on real tokens, 0 on padding
  image_ids    int64   [B]
  concept_targets  float32 [B, model.num_concepts]  1 for each concept the image's captions name
                   (only with a concept head; see im2txt/concepts.py)
(feature records: `image_features` float32 [B, dim] instead of `images`, see make_dataset.)
T is the longest caption in the batch minus one. For the captions "<S> a dog </S>" (1 5 9 2)
and "<S> cat </S>" (1 7 2) in one batch:
  input_seqs  = [[1, 5, 9], [1, 7, 0]]
  target_seqs = [[5, 9, 2], [7, 2, 0]]
  input_mask  = [[1, 1, 1], [1, 1, 0]]

A record with a caption id outside [0, model.vocab_size), or a concept id outside
[0, model.num_concepts), stops iteration with an InvalidArgumentError that `input_error` turns
into a message naming its file and index (such an id is a raw error on CPU and silent NaNs on
GPU).
A record whose image does not decode stops iteration with tf.errors.InvalidArgumentError;
`find_undecodable_records` names it (the trainer calls it then). With `skip_bad_images` such
records are skipped instead (and `find_undecodable_records` counts them up front).
"""

import re
from typing import List, Optional, Sequence, Tuple, Union

from absl import logging
import tensorflow as tf

from im2txt import configuration
from im2txt import file_io
from im2txt import sequence_example
from im2txt.data import feature_cache
from im2txt.model import concept_head
from im2txt.model import image_processing


def _enumerated_records(filename: tf.Tensor) -> tf.data.Dataset:
  """(filename, record index, serialized record) for every record of one TFRecord file."""
  records = tf.data.TFRecordDataset(filename)
  return records.enumerate().map(lambda index, record: (filename, index, record))


def _read_records(files: List[str], is_training: bool, config: configuration.InputConfig,
                  input_context: Optional[tf.distribute.InputContext], seed) -> tf.data.Dataset:
  dataset = tf.data.Dataset.from_tensor_slices(files)
  if input_context is not None and input_context.num_input_pipelines > 1:
    # Multi-worker: each worker reads its own subset of the shards.
    dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
  if is_training:
    dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True).repeat()
    return dataset.interleave(
        _enumerated_records, cycle_length=config.num_parallel_reads,
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=seed is not None)
  # Evaluation reads the files in order, one after the other: a deterministic, finite pass.
  return dataset.flat_map(_enumerated_records)


def split_caption(caption_ids: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """caption ids [<S> w1 .. wn </S>] -> (input_seq, target_seq, mask), each of length n+1."""
  input_seq = caption_ids[:-1]
  target_seq = caption_ids[1:]
  mask = tf.ones_like(input_seq, dtype=tf.int32)
  return input_seq, target_seq, mask


# make_dataset's and find_undecodable_records' `features` default: read from the first record.
DETECT = "detect"


def _marker_message(marker: str) -> re.Pattern:
  """The failed assertion's message [marker, file, record index, value] (see _checked_ids)."""
  return re.compile(re.escape(marker) + r"\] \[(?:b')?(.*?)'?\] \[(-?\d+)\] \[(-?\d+)\]")


# Marks the assertion message of a caption id outside [0, vocab_size) (see caption_id_error).
_CAPTION_ID_MARKER = "im2txt: caption id outside [0, vocab_size)"
_CAPTION_ID_MESSAGE = _marker_message(_CAPTION_ID_MARKER)
_CONCEPT_ID_MARKER = "im2txt: concept id outside [0, num_concepts)"
_CONCEPT_ID_MESSAGE = _marker_message(_CONCEPT_ID_MARKER)


def _checked_ids(ids, filename, index, limit: int, marker: str) -> tf.Tensor:
  """ids, after an assertion that each is in [0, limit) naming the record (`marker` tells
  caption ids from concept ids in the error)."""
  in_range = tf.reduce_all((ids >= 0) & (ids < limit))
  worst = tf.where(tf.reduce_min(ids) < 0, tf.reduce_min(ids),
                   tf.reduce_max(ids))
  check = tf.debugging.Assert(in_range, [marker, filename, index, worst], summarize=1)
  with tf.control_dependencies([check]):
    return tf.identity(ids)


def _marked_record(message: re.Pattern, error: tf.errors.OpError
                   ) -> Optional[Tuple[str, int, int]]:
  """(file, record index, value) of an assertion's error made with its marker (see
  _checked_ids), or None for another error."""
  match = message.search(error.message or "")
  if not match:
    return None
  return match.group(1), int(match.group(2)), int(match.group(3))


def caption_id_error(error: tf.errors.OpError, vocab_size: int, config_source: str
                     ) -> Optional[ValueError]:
  """A ValueError naming the record, for the error of a caption id outside the vocabulary."""
  marked = _marked_record(_CAPTION_ID_MESSAGE, error)
  if not marked:
    return None
  filename, index, word_id = marked
  return ValueError(
      f"{filename}: record {index} has caption id {word_id}, outside the model's vocabulary "
      f"[0, {vocab_size}) (model.vocab_size in {config_source}). The records were built with "
      "another vocabulary: set model.vocab_size to the number of lines of their word_counts.txt "
      "+ 1 (for <UNK>), or rebuild them.")


def concept_id_error(error: tf.errors.OpError, config_source: str) -> Optional[ValueError]:
  """A ValueError naming the record, for the error of a concept id outside the model's head."""
  marked = _marked_record(_CONCEPT_ID_MESSAGE, error)
  if not marked:
    return None
  filename, index, concept_id = marked
  return ValueError(
      f"{filename}: record {index} has concept id {concept_id}, outside the model's concept "
      f"head (model.num_concepts in {config_source}). The records were built with another "
      "concepts.txt: set model.num_concepts to at least its number of lines, or rebuild them.")


_REFERENCES_MARKER = "im2txt: image id without references"
_REFERENCES_MESSAGE = _marker_message(_REFERENCES_MARKER)


def _references(image_id, filename, index, lookup) -> tf.Tensor:
  """The references [R, L] of the record's image (see cider_reward.ReferenceLookup), after an
  assertion that its image has some, naming the record."""
  row, found = lookup.row(image_id)
  check = tf.debugging.Assert(found, [_REFERENCES_MARKER, filename, index, image_id],
                              summarize=1)
  with tf.control_dependencies([check]):
    return lookup.references_of(row)


def references_error(error: tf.errors.OpError, references_file: str) -> Optional[ValueError]:
  """A ValueError naming the record whose image the references file lacks."""
  marked = _marked_record(_REFERENCES_MESSAGE, error)
  if not marked:
    return None
  filename, index, image_id = marked
  return ValueError(
      f"{filename}: record {index} is of image {image_id}, which {references_file} does not "
      "hold: the references file is of other data (build_mscoco_data writes both together; "
      "pass the matching --references_file, or rebuild)")


def _concept_targets(parsed, caption_ids, filename, index, num_concepts: int,
                     concept_table: Optional[Sequence[int]]) -> tf.Tensor:
  """The record's image/concept_ids as targets [num_concepts]; with a `concept_table` (word id ->
  concept id or -1, for records written without them) the concept words of its own caption."""
  if concept_table is None:
    ids = _checked_ids(parsed["concept_ids"], filename, index, num_concepts,
                       _CONCEPT_ID_MARKER)
  else:
    ids = tf.gather(tf.constant(concept_table, tf.int64), caption_ids)
  return concept_head.multi_hot(ids, num_concepts)


def _parse_and_split(filename, index, serialized, config: configuration.Config,
                     features: Optional[feature_cache.FeatureShape],
                     concept_table: Optional[Sequence[int]] = None, references=None):
  if features is None:
    parsed = sequence_example.parse_sequence_example(serialized)
    image = {"image_data": parsed["image_data"]}
  else:
    parsed = sequence_example.parse_feature_example(serialized, features.views, features.dim)
    image = {"image_features": parsed["image_features"]}
  caption_ids = _checked_ids(parsed["caption_ids"], filename, index, config.model.vocab_size,
                             _CAPTION_ID_MARKER)
  input_seq, target_seq, mask = split_caption(caption_ids)
  if config.model.num_concepts:
    image["concept_targets"] = _concept_targets(parsed, caption_ids, filename, index,
                                                config.model.num_concepts, concept_table)
  if references is not None:
    image["references"] = _references(parsed["image_id"], filename, index, references)
  return {
      **image,
      "input_seqs": input_seq,
      "target_seqs": target_seq,
      "input_mask": mask,
      "image_ids": parsed["image_id"],
      "record_file": filename,
      "record_index": index,
  }


def make_dataset(file_pattern: str, config: configuration.Config, is_training: bool,
                 batch_size: Optional[int] = None,
                 input_context: Optional[tf.distribute.InputContext] = None,
                 skip_bad_images: bool = False, seed: Optional[int] = None,
                 keep_record_keys: bool = False,
                 features: Union[feature_cache.FeatureShape, None, str] = DETECT,
                 concept_table: Optional[Sequence[int]] = None,
                 references=None) -> tf.data.Dataset:
  """Batches of (image, caption) pairs; see the module docstring for their layout.

  Training data is shuffled (files and records) and repeats forever; evaluation data is read
  once, in file order, with central crops. `batch_size` defaults to config.input.batch_size and
  is the global batch: with an input_context each replica gets its share. `seed` makes the
  order and the distortions reproducible (tests).

  Feature records (feature_cache) give `image_features` [B, dim] instead of `images`: the
  evaluation crop's features, or with several views a random training view of each record on
  each visit (one per epoch), as the distortions of the images would be. `features` is their
  shape (None: image records), read from the first record when not given.

  With a concept head (model.num_concepts), `concept_targets` come from each record's
  image/concept_ids, or, given a `concept_table` (word id -> concept id or -1, see
  concepts.ConceptVocabulary.word_to_concept_table), from the words of the record's own caption:
  for records written without concept ids, such as the original builder's.

  With `references` (a training.cider_reward.ReferenceLookup; self-critical training), each
  element also holds `references` int64 [B, R, L]: the CIDEr codes of all its image's reference
  captions, 0-padded.
  """
  files = file_io.expand_patterns(file_pattern, "--input_file_pattern")
  if features == DETECT:
    features = feature_cache.files_feature_shape(files)
  if features is not None and not is_training:
    raise ValueError(f"{file_pattern}: feature records (cached Inception features) hold no "
                     "images; evaluation reads the image records build_mscoco_data wrote")
  global_batch = batch_size or config.input.batch_size
  per_replica_batch = (input_context.get_per_replica_batch_size(global_batch)
                       if input_context is not None else global_batch)
  dataset = _read_records(files, is_training, config.input, input_context, seed)
  if is_training:
    # Shuffle serialized records (cheap to hold) before decoding, as the original's queue did.
    dataset = dataset.shuffle(config.input.shuffle_buffer_size, seed=seed)
  dataset = _map_records(
      dataset, lambda f, i, s: _parse_and_split(f, i, s, config, features, concept_table,
                                                references),
      skip_errors=skip_bad_images, deterministic=True)
  # Records need at least <S> and one more token to give one training target.
  dataset = dataset.filter(lambda e: tf.size(e["input_seqs"]) > 0)
  if config.input.max_caption_tokens:
    # Skipped whole, as the Beam job drops them: a truncated caption would teach a wrong ending.
    limit = config.input.max_caption_tokens
    dataset = dataset.filter(lambda e: tf.size(e["input_seqs"]) + 1 <= limit)

  if is_training:
    # One stateless seed per record, drawn in order: the crop and distortions of each image are
    # then fixed by `seed` whatever the map's parallelism (a fresh stream when seed is None).
    seeds = tf.data.Dataset.random(seed=seed).batch(2)
    dataset = tf.data.Dataset.zip((dataset, seeds)).map(
        lambda e, s: dict(e, distort_seed=s))

  def decode(element):
    element = dict(element)
    if features is None:
      element["images"] = image_processing.process_image(
          element.pop("image_data"), config.model, is_training=is_training,
          seed=element.pop("distort_seed", None))
    else:
      element["image_features"] = _training_view(element.pop("image_features"),
                                                 element.pop("distort_seed"))
    if not keep_record_keys:
      element.pop("record_file")
      element.pop("record_index")
    return element

  dataset = _map_records(dataset, decode, skip_errors=skip_bad_images,
                         deterministic=not is_training or seed is not None)
  dataset = dataset.padded_batch(per_replica_batch, drop_remainder=is_training)
  return dataset.prefetch(tf.data.AUTOTUNE)


def _map_records(dataset: tf.data.Dataset, fn, skip_errors: bool,
                 deterministic: bool) -> tf.data.Dataset:
  """dataset.map(fn) in parallel; with `skip_errors`, a record whose `fn` fails (an image that
  does not decode, a record that does not parse) is dropped with a warning. Each record then
  goes through `fn` in a dataset of its own whose errors are ignored, so that a read error of
  the files upstream (a corrupt shard) still stops the iteration, to be named: ignore_errors on
  the whole pipeline would swallow it, and with it the rest of the shard."""
  if not skip_errors:
    return dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)

  def alone(*element):
    single = tf.data.Dataset.from_tensors(element if len(element) > 1 else element[0])
    return single.map(fn).ignore_errors(log_warning=True)

  return dataset.interleave(alone, cycle_length=tf.data.AUTOTUNE, block_length=1,
                            num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)


def _training_view(views: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """One view [dim] of a record's cached features [views, dim]: the evaluation crop (view 0)
  when it is the only one, else one of the training distortions (views 1..), drawn by `seed`."""
  num_views = tf.shape(views)[0]
  if views.shape[0] == 1:
    return views[0]
  view = tf.random.stateless_uniform([], tf.cast(seed, tf.int64), minval=1, maxval=num_views,
                                     dtype=tf.int32)
  return views[view]


def find_undecodable_records(file_pattern: str, max_reported: int = 10,
                             features: Union[feature_cache.FeatureShape, None, str] = DETECT
                             ) -> Tuple[int, int, List[str]]:
  """Scans every record; returns (records, undecodable records, descriptions of the first few).

  Runs in parallel inside tf.data: records whose image decodes come through `ignore_errors`,
  the missing ones are the bad ones. A description names the file, the record's index in it, its
  image id and TensorFlow's reason.
  """
  files = file_io.expand_patterns(file_pattern, "--input_file_pattern")
  keys = tf.data.Dataset.from_tensor_slices(files).flat_map(_enumerated_records)
  if features == DETECT:
    features = feature_cache.files_feature_shape(files)
  if features is not None:
    # Feature records hold no image (the feature job skipped the undecodable ones).
    return sum(1 for _ in keys), 0, []

  def decoded_key(filename, index, serialized):
    parsed = sequence_example.parse_sequence_example(serialized)
    image = image_processing.check_decodes(parsed["image_data"])
    # Tie the output to the decoded image so the decode cannot be optimised away.
    return filename, index + tf.cast(tf.size(image) * 0, tf.int64)

  good = set()
  for filename, index in keys.map(decoded_key, num_parallel_calls=tf.data.AUTOTUNE,
                                  deterministic=False).ignore_errors():
    good.add((filename.numpy(), int(index.numpy())))
  total, bad = 0, []
  for filename, index, serialized in keys:
    total += 1
    if (filename.numpy(), int(index.numpy())) in good:
      continue
    if len(bad) < max_reported:
      bad.append(_describe_bad_record(filename.numpy().decode(), int(index.numpy()), serialized))
    else:
      bad.append(None)
  return total, len(bad), [b for b in bad if b is not None]


def _describe_bad_record(filename: str, index: int, serialized: tf.Tensor) -> str:
  try:
    parsed = sequence_example.parse_sequence_example(serialized)
  except tf.errors.InvalidArgumentError as e:
    return f"{filename} record {index}: not a SequenceExample ({file_io.tf_message(e)})"
  try:
    image_processing.check_decodes(parsed["image_data"])
    reason = "image decoded on its own (a transient failure?)"
  except tf.errors.InvalidArgumentError as e:
    reason = image_processing.decode_error_message(e)
  return (f"{filename} record {index} (image_id {int(parsed['image_id'])}): image does not "
          f"decode as JPEG: {reason}")


# --- what the trainer reports about bad records ------------------------------------------------


class BadInputError(ValueError):
  """Input records that cannot be decoded, named."""


def bad_input_error(pattern: str, error: tf.errors.InvalidArgumentError) -> Exception:
  """BadInputError naming the records of `pattern` whose image does not decode (scanned now), or
  `error` itself when every image decodes."""
  logging.error("An input record failed (%s); scanning %s for undecodable records...",
                file_io.tf_message(error), pattern)
  total, bad, descriptions = find_undecodable_records(pattern)
  if not bad:
    return error
  more = "\n  ..." if bad > len(descriptions) else ""
  return BadInputError(
      f"{bad} of {total} input records have an image that does not decode:\n  "
      + "\n  ".join(descriptions) + more
      + "\nRemove or rebuild them, or pass --skip_bad_images to skip such records.")


def input_error(error: tf.errors.InvalidArgumentError, pattern: str, vocab_size: int,
                config_source: str) -> Exception:
  """The error to report for an InvalidArgumentError of the input pipeline: the record with a
  caption id outside the vocabulary or a concept id outside the concept head, or the records
  whose image does not decode, named."""
  return (caption_id_error(error, vocab_size, config_source)
          or concept_id_error(error, config_source) or bad_input_error(pattern, error))


def next_batch(iterator, pattern: str, vocab_size: int, config_source: str):
  """next(iterator), with input_error's message for a bad record, corrupt_shard_error's for a
  corrupt shard."""
  try:
    return next(iterator)
  except tf.errors.InvalidArgumentError as e:
    raise input_error(e, pattern, vocab_size, config_source) from e
  except tf.errors.DataLossError as e:
    raise corrupt_shard_error(e, pattern) from e


def naming_corrupt_shards(dataset: tf.data.Dataset, pattern: str):
  """Iterates `dataset` (read from the files of `pattern`); a corrupt file is a BadInputError
  naming it (corrupt_shard_error) instead of TensorFlow's DataLossError, which names none."""
  iterator = iter(dataset)
  while True:
    try:
      element = next(iterator)
    except StopIteration:
      return
    except tf.errors.DataLossError as e:
      raise corrupt_shard_error(e, pattern) from e
    yield element


def shard_problem(path: str) -> Optional[str]:
  """Why the TFRecord file `path` does not read whole (TensorFlow's reason, with the byte offset
  of the bad record), or None if it does."""
  try:
    tf.data.TFRecordDataset(path, buffer_size=8 << 20).reduce(
        tf.constant(0, tf.int64), lambda count, _: count + 1)
    return None
  except tf.errors.DataLossError as e:
    message = file_io.tf_message(e)
    found = re.search(r"(truncated|corrupted) record at (\d+)", message)
    if not found:
      return message
    if found.group(1) == "truncated":
      return (f"truncated record at byte {found.group(2)}: the file ends inside it (cut short, "
              "e.g. by an interrupted copy)")
    return (f"corrupted record at byte {found.group(2)}: its checksum does not match (the bytes "
            "were changed after it was written)")


def corrupt_shard_error(error: tf.errors.DataLossError, pattern: str) -> "BadInputError":
  """BadInputError naming the files of `pattern` that do not read whole (scanned now, one by
  one: a read error of tf.data does not say which file it came from)."""
  files = file_io.expand_patterns(pattern, "--input_file_pattern")
  logging.info("A TFRecord file of %s is corrupt (%s); looking for it among %d file(s)",
               pattern, file_io.tf_message(error)[:200], len(files))
  problems = [(path, shard_problem(path)) for path in files]
  bad = [f"{path}: {problem}" for path, problem in problems if problem]
  if not bad:
    return BadInputError(f"Reading {pattern} failed ({error.message}), but every file reads "
                         "whole now: a transient storage error? Rerun the same command.")
  return BadInputError(
      f"{len(bad)} of the {len(files)} TFRecord files of {pattern} cannot be read whole:\n  " +
      "\n  ".join(bad) + "\nCopy them again from their source, or rebuild them with "
      "build_mscoco_data; a corrupt record is never skipped silently.")


def count_skipped_records(pattern: str,
                          features: Union[feature_cache.FeatureShape, None, str] = DETECT) -> int:
  """--skip_bad_images: scans the records once, reports and returns how many will be skipped."""
  total, skipped, descriptions = find_undecodable_records(pattern, features=features)
  if skipped == total:
    raise BadInputError(f"None of the {total} records of {pattern} has an image that decodes:"
                        "\n  " + "\n  ".join(descriptions))
  if skipped:
    logging.warning("--skip_bad_images: %d of %d records will be skipped:\n  %s", skipped, total,
                    "\n  ".join(descriptions))
  return skipped
