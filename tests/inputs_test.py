"""Tests for im2txt.data.inputs: records in, exact padded batches out; bad records named or skipped."""

import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from im2txt.data import inputs
from tests import training_testdata as td

# image id -> caption words (ids), of different lengths; <S>=1 and </S>=2 are added.
CAPTIONS = {0: [3, 4, 5], 1: [6], 2: [7, 8, 9, 10, 11], 3: [12, 13], 4: [14, 15, 16],
            5: [17, 18, 19, 20], 6: [21]}


def _expected(image_id):
  ids = [td.START_ID] + CAPTIONS[image_id] + [td.END_ID]
  return ids[:-1], ids[1:]


class InputsTestBase(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.dir = tempfile.mkdtemp()
    cls.addClassCleanup(shutil.rmtree, cls.dir, True)
    cls.pattern = td.write_shards(cls.dir, td.colour_examples(CAPTIONS), num_shards=3)
    cls.config = td.tiny_config(batch_size=3, vocab_size=24)  # Caption ids go up to 21.


class EvalDatasetTest(InputsTestBase):

  def test_yields_exactly_the_records_written_with_correct_masks(self):
    batches = list(inputs.make_dataset(self.pattern, self.config, is_training=False))
    # Shards are written round-robin and read in file order; the last batch is partial.
    order = [0, 3, 6, 1, 4, 2, 5]
    self.assertEqual([b["image_ids"].shape[0] for b in batches], [3, 3, 1])
    self.assertEqual(np.concatenate([b["image_ids"] for b in batches]).tolist(), order)
    position = 0
    for batch in batches:
      longest = max(len(CAPTIONS[i]) + 1 for i in batch["image_ids"].numpy())
      self.assertEqual(batch["input_seqs"].shape[1], longest)
      self.assertEqual(batch["images"].shape[1:], (75, 75, 3))
      for row, image_id in enumerate(batch["image_ids"].numpy()):
        self.assertEqual(image_id, order[position])
        position += 1
        input_seq, target_seq = _expected(image_id)
        n = len(input_seq)
        pad = [0] * (longest - n)
        self.assertEqual(batch["input_seqs"][row].numpy().tolist(), input_seq + pad)
        self.assertEqual(batch["target_seqs"][row].numpy().tolist(), target_seq + pad)
        self.assertEqual(batch["input_mask"][row].numpy().tolist(), [1] * n + pad)
        # Eval images are central crops of the solid colour, unchanged.
        colour = (np.array(td.COLOURS[image_id]) / 255 - 0.5) * 2
        self.assertAllClose(tf.reduce_mean(batch["images"][row], axis=[0, 1]), colour,
                            atol=0.05)
    self.assertEqual(batches[0]["input_mask"].dtype, tf.int32)
    self.assertEqual(batches[0]["input_seqs"].dtype, tf.int64)

  def test_comma_separated_patterns(self):
    first = os.path.join(self.dir, "train-00000-of-00003")
    rest = os.path.join(self.dir, "train-0000[12]-of-00003")
    dataset = inputs.make_dataset(f"{first}, {rest}", self.config, is_training=False,
                                  batch_size=7)
    ids = next(iter(dataset))["image_ids"].numpy().tolist()
    self.assertEqual(ids, [0, 3, 6, 1, 4, 2, 5])

  def test_pattern_matching_nothing_is_an_error_naming_it(self):
    with self.assertRaisesRegex(FileNotFoundError, "nothing-here"):
      inputs.make_dataset(f"{self.pattern},{self.dir}/nothing-here*", self.config,
                          is_training=False)

  def test_max_caption_tokens_skips_longer_captions_whole(self):
    self.config.input.max_caption_tokens = 4
    try:
      batch = next(iter(inputs.make_dataset(self.pattern, self.config, is_training=False,
                                            batch_size=7)))
    finally:
      self.config.input.max_caption_tokens = 0
    # Kept: captions of at most 4 tokens with <S> and </S> (images 1, 3 and 6), in file order.
    self.assertEqual(batch["image_ids"].numpy().tolist(), [3, 6, 1])
    for row, image_id in enumerate(batch["image_ids"].numpy()):
      input_seq, target_seq = _expected(image_id)
      n = len(target_seq)
      self.assertEqual(batch["target_seqs"][row, :n].numpy().tolist(), target_seq)
      self.assertEqual(target_seq[-1], td.END_ID)  # Every target still ends with </S>.

  def test_split_caption_example(self):
    input_seq, target_seq, mask = inputs.split_caption(tf.constant([1, 5, 9, 2], tf.int64))
    self.assertEqual(input_seq.numpy().tolist(), [1, 5, 9])
    self.assertEqual(target_seq.numpy().tolist(), [5, 9, 2])
    self.assertEqual(mask.numpy().tolist(), [1, 1, 1])


class TrainDatasetTest(InputsTestBase):

  def test_repeats_shuffled_full_batches_of_every_record(self):
    dataset = inputs.make_dataset(self.pattern, self.config, is_training=True, seed=3)
    seen = []
    for batch in dataset.take(14):
      self.assertEqual(batch["image_ids"].shape[0], 3)
      for row, image_id in enumerate(batch["image_ids"].numpy()):
        seen.append(image_id)
        input_seq, target_seq = _expected(image_id)
        n = len(input_seq)
        self.assertEqual(batch["input_seqs"][row, :n].numpy().tolist(), input_seq)
        self.assertEqual(batch["target_seqs"][row, :n].numpy().tolist(), target_seq)
        self.assertEqual(int(tf.reduce_sum(batch["input_mask"][row])), n)
        self.assertAllEqual(batch["input_seqs"][row, n:], tf.zeros_like(
            batch["input_seqs"][row, n:]))
      self.assertBetween(float(tf.reduce_min(batch["images"])), -1.0, 1.0)
    # 42 examples of 7 records: every one appears, each about 6 times.
    counts = np.bincount(seen, minlength=7)
    self.assertEqual(len(seen), 42)
    self.assertTrue(all(counts >= 3), counts)
    self.assertNotEqual(seen[:7], [0, 3, 6, 1, 4, 2, 5])

  def test_seed_makes_order_and_distortions_reproducible(self):
    def first_batches(seed):
      dataset = inputs.make_dataset(self.pattern, self.config, is_training=True, seed=seed)
      return [(b["image_ids"].numpy(), b["images"].numpy()) for b in dataset.take(3)]
    a, b, c = first_batches(5), first_batches(5), first_batches(6)
    for (ids_a, images_a), (ids_b, images_b) in zip(a, b):
      self.assertAllEqual(ids_a, ids_b)
      self.assertAllEqual(images_a, images_b)
    self.assertNotAllClose(np.concatenate([x[1] for x in a]), np.concatenate([x[1] for x in c]))

  def test_input_context_shards_files_and_splits_the_global_batch(self):
    shards = []
    for pipeline_id in range(2):
      context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline_id,
                                           num_replicas_in_sync=2)
      dataset = inputs.make_dataset(self.pattern, self.config, is_training=True, batch_size=4,
                                    input_context=context, seed=1)
      ids = set()
      for batch in dataset.take(10):
        self.assertEqual(batch["image_ids"].shape[0], 2)
        ids.update(batch["image_ids"].numpy().tolist())
      shards.append(ids)
    # Three files over two pipelines: files 0 and 2 ({0,3,6} and {2,5}) go to the first.
    self.assertEqual(shards, [{0, 2, 3, 5, 6}, {1, 4}])


class BadRecordTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.dir = tempfile.mkdtemp()
    cls.addClassCleanup(shutil.rmtree, cls.dir, True)
    examples = td.colour_examples({0: [3], 1: [4, 5], 2: [6], 3: [7, 8]})
    examples.insert(2, (42, b"\xff\xd8 this is not a JPEG", [9, 9]))
    # 5 records over 2 shards: the bad one is record 1 of shard 0.
    cls.pattern = td.write_shards(cls.dir, examples, num_shards=2)
    cls.bad_file = os.path.join(cls.dir, "train-00000-of-00002")
    cls.config = td.tiny_config(batch_size=2)

  def test_iteration_stops_with_an_error(self):
    dataset = inputs.make_dataset(self.pattern, self.config, is_training=False)
    with self.assertRaises(tf.errors.InvalidArgumentError):
      for _ in dataset:
        pass

  def test_find_undecodable_records_names_the_record(self):
    total, bad, descriptions = inputs.find_undecodable_records(self.pattern)
    self.assertEqual((total, bad), (5, 1))
    self.assertLen(descriptions, 1)
    self.assertIn(f"{self.bad_file} record 1 (image_id 42)", descriptions[0])

  def test_skip_bad_images_yields_every_other_record(self):
    dataset = inputs.make_dataset(self.pattern, self.config, is_training=False,
                                  batch_size=5, skip_bad_images=True)
    ids = np.concatenate([b["image_ids"] for b in dataset]).tolist()
    self.assertEqual(sorted(ids), [0, 1, 2, 3])

  def test_skip_bad_images_in_training(self):
    dataset = inputs.make_dataset(self.pattern, self.config, is_training=True, batch_size=4,
                                  skip_bad_images=True, seed=2)
    ids = set()
    for batch in dataset.take(5):
      ids.update(batch["image_ids"].numpy().tolist())
    self.assertEqual(ids, {0, 1, 2, 3})


class OriginalReaderRecordsTest(tf.test.TestCase):
  """Records holding only what the original's reader reads: image/data and image/caption_ids."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.dir = tempfile.mkdtemp()
    cls.addClassCleanup(shutil.rmtree, cls.dir, True)
    examples = td.colour_examples(CAPTIONS, textured=True)
    cls.full = td.write_shards(os.path.join(cls.dir, "full"), examples, num_shards=2)
    cls.bare = cls._write_bare_shards(os.path.join(cls.dir, "bare"), examples, num_shards=2)
    cls.config = td.tiny_config(batch_size=3, vocab_size=24)  # Caption ids go up to 21.

  @staticmethod
  def _write_bare_shards(directory, examples, num_shards):
    """td.write_shards' records (same shards, same order) without tokens and image ids."""
    os.makedirs(directory)
    paths = [os.path.join(directory, f"train-{i:05d}-of-{num_shards:05d}")
             for i in range(num_shards)]
    writers = [tf.io.TFRecordWriter(p) for p in paths]
    for i, (_, jpeg, caption) in enumerate(examples):
      example = tf.train.SequenceExample()
      example.context.feature["image/data"].bytes_list.value.append(jpeg)
      ids = example.feature_lists.feature_list["image/caption_ids"]
      for word_id in [td.START_ID] + caption + [td.END_ID]:
        ids.feature.add().int64_list.value.append(word_id)
      writers[i % num_shards].write(example.SerializeToString())
    for writer in writers:
      writer.close()
    return os.path.join(directory, f"train-?????-of-{num_shards:05d}")

  def _assert_same_batches(self, full_batches, bare_batches, num_batches):
    self.assertLen(full_batches, num_batches)
    self.assertLen(bare_batches, num_batches)
    for full, bare in zip(full_batches, bare_batches):
      for key in ("input_seqs", "target_seqs", "input_mask", "images"):
        self.assertAllEqual(full[key], bare[key])
      self.assertAllEqual(bare["image_ids"], tf.fill(tf.shape(full["image_ids"]), -1))

  def test_training_batches_equal_those_of_full_records(self):
    def batches(pattern):
      dataset = inputs.make_dataset(pattern, self.config, is_training=True, seed=4)
      return list(dataset.take(5))
    self._assert_same_batches(batches(self.full), batches(self.bare), 5)

  def test_eval_batches_equal_those_of_full_records(self):
    def batches(pattern):
      return list(inputs.make_dataset(pattern, self.config, is_training=False))
    self._assert_same_batches(batches(self.full), batches(self.bare), 3)


if __name__ == "__main__":
  tf.test.main()
