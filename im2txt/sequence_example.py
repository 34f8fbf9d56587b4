"""The SequenceExample contract shared by the Beam job and the input pipeline.

One record per (image, caption) pair, compatible with the original im2txt:
  context:       image/image_id  int64   the COCO image id
                 image/data      bytes   the JPEG file's bytes
  feature_lists: image/caption      bytes per token  (<S> ... </S>)
                 image/caption_ids  int64 per token  (vocabulary ids of those tokens)
The original's reader reads only image/data and image/caption_ids, so parsing requires only
those two: a record without image/caption parses with an empty caption, one without
image/image_id with image_id -1.

Visual concepts (im2txt/concepts.py): the Beam job adds one more context feature, which the
original's reader ignores,
  image/concept_ids  int64 [K]  the sorted ids (lines of concepts.txt) of the concepts named in
                                any of the image's captions
A record without it (the original builder's) parses with concept_ids [] and has_concepts False.

Feature records (beam_jobs/extract_image_features, for phase 1 on cached Inception features) are
the same records without image/data and with two more context features:
  image/features       float   [views * dim]  InceptionV3's pooled features of `views` crops of
                                              the image, one after the other: view 0 is the
                                              evaluation (central) crop, views 1.. are seeded
                                              training distortions
  image/feature_views  int64   views
"""

from typing import Dict, Optional, Sequence

from google.protobuf import message
import tensorflow as tf

IMAGE_ID_FEATURE = "image/image_id"
IMAGE_DATA_FEATURE = "image/data"
CAPTION_FEATURE = "image/caption"
CAPTION_IDS_FEATURE = "image/caption_ids"
IMAGE_FEATURES_FEATURE = "image/features"
FEATURE_VIEWS_FEATURE = "image/feature_views"
CONCEPT_IDS_FEATURE = "image/concept_ids"


def make_sequence_example(image_id: int, image_data: bytes, tokens: Sequence[str],
                          caption_ids: Sequence[int],
                          concept_ids: Optional[Sequence[int]] = None) -> tf.train.SequenceExample:
  """Builds one record; pure protobuf, no TensorFlow ops (cheap inside Beam workers).
  `concept_ids` None writes no image/concept_ids (the original's records); [] writes it empty."""
  if len(tokens) != len(caption_ids):
    raise ValueError(f"image {image_id}: {len(tokens)} tokens but {len(caption_ids)} caption ids")
  example = tf.train.SequenceExample()
  context = example.context.feature
  context[IMAGE_ID_FEATURE].int64_list.value.append(int(image_id))
  context[IMAGE_DATA_FEATURE].bytes_list.value.append(bytes(image_data))
  if concept_ids is not None:
    context[CONCEPT_IDS_FEATURE].int64_list.value.extend(int(i) for i in concept_ids)
  lists = example.feature_lists.feature_list
  caption = lists[CAPTION_FEATURE]
  for token in tokens:
    caption.feature.add().bytes_list.value.append(token.encode("utf-8"))
  ids = lists[CAPTION_IDS_FEATURE]
  for word_id in caption_ids:
    ids.feature.add().int64_list.value.append(int(word_id))
  return example


def _parse(serialized: tf.Tensor, image_key: str,
           image_feature: tf.io.FixedLenFeature) -> Dict[str, tf.Tensor]:
  """Parses one record's image id, image feature (under `image_key`) and caption features."""
  context, sequence = tf.io.parse_single_sequence_example(
      serialized,
      context_features={
          IMAGE_ID_FEATURE: tf.io.FixedLenFeature([], dtype=tf.int64, default_value=-1),
          image_key: image_feature,
          CONCEPT_IDS_FEATURE: tf.io.VarLenFeature(dtype=tf.int64),
      },
      sequence_features={
          CAPTION_FEATURE: tf.io.FixedLenSequenceFeature([], dtype=tf.string,
                                                         allow_missing=True),
          CAPTION_IDS_FEATURE: tf.io.FixedLenSequenceFeature([], dtype=tf.int64),
      })
  return {
      "image_id": context[IMAGE_ID_FEATURE],
      image_key: context[image_key],
      "caption": sequence[CAPTION_FEATURE],
      "caption_ids": sequence[CAPTION_IDS_FEATURE],
      "concept_ids": context[CONCEPT_IDS_FEATURE].values,
  }


def parse_sequence_example(serialized: tf.Tensor) -> Dict[str, tf.Tensor]:
  """Parses one serialized record (a scalar string tensor) inside tf.data.

  Returns image_id (int64 scalar, -1 if missing), image_data (string scalar), caption (string
  [T], [0] if missing), caption_ids (int64 [T]) and concept_ids (int64 [K], [0] if missing).
  """
  parsed = _parse(serialized, IMAGE_DATA_FEATURE, tf.io.FixedLenFeature([], dtype=tf.string))
  parsed["image_data"] = parsed.pop(IMAGE_DATA_FEATURE)
  return parsed


def parse_sequence_example_proto(serialized: bytes) -> dict:
  """Pure-Python parse of one record into plain values (for tests and tools)."""
  example = tf.train.SequenceExample.FromString(serialized)
  context = example.context.feature
  lists = example.feature_lists.feature_list
  # parse_sequence_example's defaults; a missing image/caption reads as an empty list.
  image_id = (context[IMAGE_ID_FEATURE].int64_list.value[0]
              if IMAGE_ID_FEATURE in context else -1)
  return {
      "image_id": image_id,
      "image_data": context[IMAGE_DATA_FEATURE].bytes_list.value[0],
      "caption": [f.bytes_list.value[0].decode("utf-8") for f in lists[CAPTION_FEATURE].feature],
      "caption_ids": [f.int64_list.value[0] for f in lists[CAPTION_IDS_FEATURE].feature],
      # `in` first: indexing a protobuf map inserts the missing key.
      "concept_ids": (list(context[CONCEPT_IDS_FEATURE].int64_list.value)
                      if CONCEPT_IDS_FEATURE in context else []),
      "has_concepts": CONCEPT_IDS_FEATURE in context,
  }


def has_concept_ids(serialized: bytes) -> bool:
  """True for a record written with image/concept_ids (by this project's Beam job); False for
  the original builder's records and for bytes that are no SequenceExample."""
  try:
    context = tf.train.SequenceExample.FromString(serialized).context.feature
  except message.DecodeError:
    return False
  return CONCEPT_IDS_FEATURE in context


# --- feature records ----------------------------------------------------------------------------


def is_feature_record(serialized: bytes) -> bool:
  """True for a feature record, False for an image record (what the trainer reads it as) and
  for bytes that are no SequenceExample (which the input pipeline then reports)."""
  try:
    context = tf.train.SequenceExample.FromString(serialized).context.feature
  except message.DecodeError:
    return False
  return IMAGE_FEATURES_FEATURE in context


def feature_context_bytes(features: Sequence[Sequence[float]]) -> bytes:
  """The serialized context of a feature record's features ([views] lists of dim floats, view 0
  the evaluation crop): built once per image, appended to each of its records."""
  if not len(features) or len({len(view) for view in features}) != 1:
    raise ValueError("features must be a non-empty list of views of equal length")
  part = tf.train.SequenceExample()
  context = part.context.feature
  values = context[IMAGE_FEATURES_FEATURE].float_list.value
  for view in features:
    values.extend(view.tolist() if hasattr(view, "tolist") else view)
  context[FEATURE_VIEWS_FEATURE].int64_list.value.append(len(features))
  return part.SerializeToString(deterministic=True)


def to_feature_record(example: tf.train.SequenceExample, context: bytes) -> bytes:
  """The serialized feature record of an image record: the record without image/data, then
  `context` (feature_context_bytes). Protocol buffers merge concatenated messages (the context
  maps are merged by key), so the result parses as one SequenceExample holding both; every
  other feature of the record is kept as it is."""
  record = tf.train.SequenceExample()
  record.CopyFrom(example)
  del record.context.feature[IMAGE_DATA_FEATURE]
  return record.SerializeToString(deterministic=True) + context


def to_feature_example(example: tf.train.SequenceExample,
                       features: Sequence[Sequence[float]]) -> tf.train.SequenceExample:
  """to_feature_record, parsed."""
  return tf.train.SequenceExample.FromString(
      to_feature_record(example, feature_context_bytes(features)))


def feature_shape(serialized: bytes):
  """(views, dim) of a feature record."""
  context = tf.train.SequenceExample.FromString(serialized).context.feature
  views = context[FEATURE_VIEWS_FEATURE].int64_list.value[0]
  size = len(context[IMAGE_FEATURES_FEATURE].float_list.value)
  if views < 1 or size % views:
    raise ValueError(f"a feature record with {size} floats in {views} views")
  return int(views), size // int(views)


def parse_feature_example(serialized: tf.Tensor, views: int, dim: int) -> Dict[str, tf.Tensor]:
  """Parses one feature record inside tf.data: image_id, features [views, dim] float32,
  caption and caption_ids as parse_sequence_example. A record of another shape fails (an
  InvalidArgumentError), as a mix of feature shards from different jobs would."""
  parsed = _parse(serialized, IMAGE_FEATURES_FEATURE,
                  tf.io.FixedLenFeature([views * dim], dtype=tf.float32))
  parsed["image_features"] = tf.reshape(parsed.pop(IMAGE_FEATURES_FEATURE), [views, dim])
  return parsed
