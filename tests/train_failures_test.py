"""The trainer on bad input records and on a diverging loss."""

import glob
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from im2txt.data import inputs
from im2txt.training import train_state
from im2txt.training import trainer
from tests import training_testdata as td

CAPTIONS = {0: [3, 4], 1: [5, 6, 7], 2: [8], 3: [9, 10]}


class BadImageTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.addClassCleanup(shutil.rmtree, cls.tmp, True)
    examples = td.colour_examples(CAPTIONS)
    examples.insert(3, (77, b"GIF89a definitely not a JPEG", [11, 12]))
    # Five records round-robin over two shards: the bad one is record 1 of shard 1.
    cls.pattern = td.write_shards(os.path.join(cls.tmp, "data"), examples, 2)
    cls.bad_file = os.path.join(cls.tmp, "data", "train-00001-of-00002")

  def test_undecodable_image_is_named(self):
    options = trainer.TrainOptions(input_file_pattern=self.pattern,
                                   train_dir=os.path.join(self.tmp, "fails"),
                                   number_of_steps=20, seed=1)
    with self.assertRaises(inputs.BadInputError) as raised:
      trainer.train(td.tiny_config(), options)
    message = str(raised.exception)
    self.assertIn("1 of 5 input records", message)
    self.assertIn(f"{self.bad_file} record 1 (image_id 77)", message)
    self.assertIn("--skip_bad_images", message)
    self.assertIsNone(tf.train.latest_checkpoint(options.train_dir))

  def test_skip_bad_images_counts_and_trains(self):
    options = trainer.TrainOptions(input_file_pattern=self.pattern,
                                   train_dir=os.path.join(self.tmp, "skips"),
                                   number_of_steps=4, seed=1, skip_bad_images=True)
    result = trainer.train(td.tiny_config(), options)
    self.assertEqual(result.skipped_records, 1)
    self.assertEqual(result.global_step, 4)
    self.assertEqual(tf.train.latest_checkpoint(options.train_dir),
                     os.path.join(options.train_dir, "ckpt-4"))


class VocabularySizeTest(tf.test.TestCase):
  """Caption ids the model cannot predict: a raw error on CPU, silent NaNs on GPU, unless named."""

  def setUp(self):
    super().setUp()
    self.tmp = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.tmp, True)

  def test_record_with_an_id_beyond_vocab_size_is_named(self):
    # tiny_config's vocab_size is 16; record 1 of shard 0 (image 2) holds id 16.
    captions = {**CAPTIONS, 2: [8, 16]}
    pattern = td.write_shards(os.path.join(self.tmp, "data"), td.colour_examples(captions), 2)
    options = trainer.TrainOptions(input_file_pattern=pattern,
                                   train_dir=os.path.join(self.tmp, "train"),
                                   number_of_steps=3, seed=1)
    with self.assertRaises(ValueError) as raised:
      trainer.train(td.tiny_config(batch_size=4), options)
    self.assertEqual(
        str(raised.exception).split(". ")[0],
        f"{self.tmp}/data/train-00000-of-00002: record 1 has caption id 16, outside the model's "
        f"vocabulary [0, 16) (model.vocab_size in {options.train_dir}/config.json)")
    self.assertIsNone(tf.train.latest_checkpoint(options.train_dir))

  def test_vocabulary_beside_the_shards_larger_than_the_model_stops_before_any_step(self):
    pattern = td.write_shards(os.path.join(self.tmp, "data"), td.colour_examples(CAPTIONS), 2)
    vocab_file = os.path.join(self.tmp, "data", "word_counts.txt")
    with open(vocab_file, "w") as f:
      f.write("\n".join(["<S> 9", "</S> 9"] + [f"w{i} 5" for i in range(14)]))  # 17 with <UNK>
    options = trainer.TrainOptions(input_file_pattern=pattern,
                                   train_dir=os.path.join(self.tmp, "train"), number_of_steps=3)
    with self.assertRaisesRegex(ValueError, f"{vocab_file} \\(beside the input shards\\) has "
                                "17 words with <UNK>, more than the model's vocab_size 16"):
      trainer.train(td.tiny_config(), options)
    self.assertFalse(os.path.exists(options.train_dir))  # Nothing written.
    with open(vocab_file, "w") as f:
      f.write("\n".join(["<S> 9", "</S> 9"] + [f"w{i} 5" for i in range(13)]))  # 16: fits.
    train_state.check_vocabulary_fits(td.tiny_config(), options)


class DivergenceTest(tf.test.TestCase):

  def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(self):
    tmp = self.create_tempdir().full_path
    pattern = td.write_shards(os.path.join(tmp, "data"), td.colour_examples(CAPTIONS), 2)
    # Two good steps at rate 1, then (a "decay" by 1e37 every 2 steps, no clipping) the weights
    # overflow within a couple of steps.
    config = td.tiny_config(initial_learning_rate=1.0, learning_rate_decay_factor=1e37,
                            num_examples_per_epoch=8, num_epochs_per_decay=1.0,
                            clip_gradients=0.0, save_checkpoint_steps=1)
    options = trainer.TrainOptions(input_file_pattern=pattern,
                                   train_dir=os.path.join(tmp, "train"), number_of_steps=10,
                                   seed=2)
    with self.assertRaisesRegex(FloatingPointError, "training stopped without saving") as raised:
      trainer.train(config, options)
    last = tf.train.latest_checkpoint(options.train_dir)
    self.assertIn(f"The last good checkpoint is {last}", str(raised.exception))
    failed_step = int(str(raised.exception).split()[1].rstrip(":"))
    saved = sorted(int(p.split("-")[-1].split(".")[0])
                   for p in glob.glob(os.path.join(options.train_dir, "ckpt-*.index")))
    # Every step before the failing one was saved (up to the 5 kept), none after.
    self.assertBetween(failed_step, 3, 6)
    self.assertEqual(saved, list(range(1, failed_step)))
    for step in saved:
      reader = tf.train.load_checkpoint(os.path.join(options.train_dir, f"ckpt-{step}"))
      for key in reader.get_variable_to_shape_map():
        value = reader.get_tensor(key)
        if key.startswith("model/") and value.dtype == np.float32:
          self.assertTrue(np.all(np.isfinite(value)), f"ckpt-{step} {key}")


if __name__ == "__main__":
  tf.test.main()
