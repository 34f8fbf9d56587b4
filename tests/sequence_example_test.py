"""Tests for im2txt.sequence_example: build -> serialize -> parse round trips."""

import unittest

import tensorflow as tf

from im2txt import sequence_example


class SequenceExampleTest(tf.test.TestCase):

  def _record(self):
    jpeg = tf.io.encode_jpeg(tf.fill([4, 6, 3], tf.constant(200, tf.uint8))).numpy()
    tokens = ["<S>", "a", "café", ".", "</S>"]
    ids = [1, 7, 42, 3, 2]
    return 123456, jpeg, tokens, ids

  def test_feature_names_are_the_originals(self):
    image_id, jpeg, tokens, ids = self._record()
    example = sequence_example.make_sequence_example(image_id, jpeg, tokens, ids)
    self.assertEqual(set(example.context.feature), {"image/image_id", "image/data"})
    self.assertEqual(set(example.feature_lists.feature_list),
                     {"image/caption", "image/caption_ids"})

  def test_round_trip_in_tf_data(self):
    image_id, jpeg, tokens, ids = self._record()
    serialized = sequence_example.make_sequence_example(
        image_id, jpeg, tokens, ids).SerializeToString()
    dataset = tf.data.Dataset.from_tensors(serialized).map(
        sequence_example.parse_sequence_example)
    parsed = next(iter(dataset))
    self.assertEqual(parsed["image_id"].dtype, tf.int64)
    self.assertEqual(int(parsed["image_id"]), image_id)
    self.assertEqual(parsed["image_data"].numpy(), jpeg)
    self.assertEqual([t.decode("utf-8") for t in parsed["caption"].numpy()], tokens)
    self.assertEqual(parsed["caption_ids"].dtype, tf.int64)
    self.assertEqual(parsed["caption_ids"].numpy().tolist(), ids)

  def test_round_trip_pure_python(self):
    image_id, jpeg, tokens, ids = self._record()
    serialized = sequence_example.make_sequence_example(
        image_id, jpeg, tokens, ids).SerializeToString()
    self.assertEqual(sequence_example.parse_sequence_example_proto(serialized),
                     {"image_id": image_id, "image_data": jpeg, "caption": tokens,
                      "caption_ids": ids, "concept_ids": [], "has_concepts": False})
    self.assertFalse(sequence_example.has_concept_ids(serialized))

  def test_concept_ids_round_trip(self):
    image_id, jpeg, tokens, ids = self._record()
    example = sequence_example.make_sequence_example(image_id, jpeg, tokens, ids, [3, 17, 998])
    self.assertEqual(set(example.context.feature),
                     {"image/image_id", "image/data", "image/concept_ids"})
    serialized = example.SerializeToString()
    self.assertTrue(sequence_example.has_concept_ids(serialized))
    self.assertEqual(sequence_example.parse_sequence_example_proto(serialized),
                     {"image_id": image_id, "image_data": jpeg, "caption": tokens,
                      "caption_ids": ids, "concept_ids": [3, 17, 998], "has_concepts": True})
    parsed = sequence_example.parse_sequence_example(tf.constant(serialized))
    self.assertEqual(parsed["concept_ids"].dtype, tf.int64)
    self.assertEqual(parsed["concept_ids"].numpy().tolist(), [3, 17, 998])
    self.assertEqual(parsed["caption_ids"].numpy().tolist(), ids)

  def test_empty_concept_ids_are_written(self):
    # An image that names no concept: the feature is there, empty (unlike the original's).
    image_id, jpeg, tokens, ids = self._record()
    serialized = sequence_example.make_sequence_example(
        image_id, jpeg, tokens, ids, []).SerializeToString()
    self.assertTrue(sequence_example.has_concept_ids(serialized))
    parsed = sequence_example.parse_sequence_example_proto(serialized)
    self.assertEqual((parsed["concept_ids"], parsed["has_concepts"]), ([], True))
    self.assertEqual(
        sequence_example.parse_sequence_example(tf.constant(serialized))["concept_ids"].shape,
        (0,))

  def test_has_concept_ids_of_bytes_that_are_no_record(self):
    self.assertFalse(sequence_example.has_concept_ids(b"\xff\xff not a proto"))

  def test_token_and_id_counts_must_agree(self):
    with self.assertRaisesRegex(ValueError, "image 5: 2 tokens but 3 caption ids"):
      sequence_example.make_sequence_example(5, b"x", ["<S>", "</S>"], [1, 2, 3])

  def _original_reader_only_record(self, with_ids=True):
    """What the original's reader reads, built by hand: image/data and image/caption_ids."""
    example = tf.train.SequenceExample()
    example.context.feature["image/data"].bytes_list.value.append(b"jpeg bytes")
    if with_ids:
      ids = example.feature_lists.feature_list["image/caption_ids"]
      for word_id in (1, 7, 42, 2):
        ids.feature.add().int64_list.value.append(word_id)
    return example.SerializeToString()

  def test_record_without_tokens_or_image_id_parses_in_tf_data(self):
    dataset = tf.data.Dataset.from_tensors(self._original_reader_only_record()).map(
        sequence_example.parse_sequence_example)
    parsed = next(iter(dataset))
    self.assertEqual(int(parsed["image_id"]), -1)
    self.assertEqual(parsed["image_data"].numpy(), b"jpeg bytes")
    self.assertEqual(parsed["caption"].dtype, tf.string)
    self.assertEqual(parsed["caption"].shape, (0,))
    self.assertEqual(parsed["caption_ids"].numpy().tolist(), [1, 7, 42, 2])
    self.assertEqual(parsed["concept_ids"].dtype, tf.int64)
    self.assertEqual(parsed["concept_ids"].shape, (0,))

  def test_record_without_tokens_or_image_id_parses_pure_python(self):
    self.assertEqual(
        sequence_example.parse_sequence_example_proto(self._original_reader_only_record()),
        {"image_id": -1, "image_data": b"jpeg bytes", "caption": [],
         "caption_ids": [1, 7, 42, 2], "concept_ids": [], "has_concepts": False})

  def test_caption_ids_are_still_required(self):
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "image/caption_ids"):
      sequence_example.parse_sequence_example(self._original_reader_only_record(with_ids=False))


if __name__ == "__main__":
  tf.test.main()
