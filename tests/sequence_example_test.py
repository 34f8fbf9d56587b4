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
                      "caption_ids": ids})

  def test_token_and_id_counts_must_agree(self):
    with self.assertRaisesRegex(ValueError, "image 5: 2 tokens but 3 caption ids"):
      sequence_example.make_sequence_example(5, b"x", ["<S>", "</S>"], [1, 2, 3])


if __name__ == "__main__":
  tf.test.main()
