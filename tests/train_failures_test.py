"""The trainer on bad input records and on a diverging loss."""

import glob
import os
import shutil
import tempfile
from unittest import mock

import numpy as np
import tensorflow as tf

from im2txt import checkpoint_files
from im2txt.data import inputs
from im2txt.evaluation import checkpoint_evaluator
from im2txt.training import cluster
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


class AcceleratorTest(tf.test.TestCase):
  """This CPU-only machine: the trainer says what it trains on, and why there is no GPU."""

  def test_no_accelerator_is_a_warning_naming_the_cause(self):
    strategy = tf.distribute.MirroredStrategy()
    with self.assertLogs(level="INFO") as logs:
      cluster.check_accelerators(strategy, require_accelerator=False)
    self.assertIn("Training on /job:localhost/replica:0/task:0/device:CPU:0 (TensorFlow sees no "
                  "GPU or TPU)", logs.output[0])
    self.assertTrue(logs.output[1].startswith("WARNING:"))
    self.assertIn("training runs on the CPU", logs.output[1])
    self.assertIn("pip install '.[gpu]'", logs.output[1])
    self.assertIn("6.8 images/s", logs.output[1])

  def test_require_accelerator_stops_before_anything_is_written(self):
    data = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, data, True)
    pattern = td.write_shards(os.path.join(data, "data"), td.colour_examples(CAPTIONS), 1)
    train_dir = os.path.join(data, "train")
    options = trainer.TrainOptions(input_file_pattern=pattern, train_dir=train_dir,
                                   number_of_steps=2, seed=1, require_accelerator=True)
    with self.assertRaisesRegex(ValueError, r"^--require_accelerator: TensorFlow sees no GPU or "
                                r"TPU, so training runs on the CPU\. If this machine has a GPU"):
      trainer.train(td.tiny_config(), options)
    self.assertFalse(os.path.exists(train_dir))

  def test_a_visible_gpu_is_named_and_not_warned_about(self):
    gpu = tf.config.LogicalDevice(name="/device:GPU:0", device_type="GPU")
    visible = lambda kind: [gpu] if kind == "GPU" else []  # pylint: disable=unnecessary-lambda-assignment
    strategy = tf.distribute.get_strategy()
    with mock.patch.object(tf.config, "list_logical_devices", visible), \
         self.assertLogs(level="INFO") as logs:
      cluster.check_accelerators(strategy, require_accelerator=True)
    self.assertEqual(len(logs.output), 1)
    self.assertIn("(TensorFlow sees /device:GPU:0 (GPU))", logs.output[0])


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


def _record_offsets(path):
  """Byte offset of each record of a TFRecord file (12 header bytes, the data, 4 CRC bytes)."""
  offsets, offset = [], 0
  for record in tf.data.TFRecordDataset(path):
    offsets.append(offset)
    offset += 12 + len(record.numpy()) + 4
  return offsets


class CorruptShardTest(tf.test.TestCase):
  """A shard cut short (an interrupted copy) or with changed bytes: named with the bad record's
  byte offset; the trainer stops with its last checkpoint intact, and resumes once it is whole."""

  def test_truncated_shard_stops_training_naming_it_and_resumes_when_whole(self):
    tmp = self.create_tempdir().full_path
    examples = td.colour_examples({i: [3 + i, 4] for i in range(len(td.COLOURS))})
    pattern = td.write_shards(os.path.join(tmp, "data"), examples, 2)  # 4 records each.
    shard = os.path.join(tmp, "data", "train-00001-of-00002")
    self.assertIsNone(inputs.shard_problem(shard))
    train_dir = os.path.join(tmp, "train")
    config = td.tiny_config()
    options = trainer.TrainOptions(input_file_pattern=pattern, train_dir=train_dir,
                                   number_of_steps=2, seed=1)
    trainer.train(config, options)
    with open(shard, "rb") as f:
      whole = f.read()
    cut_record = _record_offsets(shard)[3]
    with open(shard, "wb") as f:
      f.write(whole[:cut_record + 100])  # Inside record 3's data.

    options.number_of_steps = 40
    with self.assertRaises(inputs.BadInputError) as raised:
      trainer.train(config, options)
    message = str(raised.exception)
    self.assertEqual(message.splitlines()[:3], [
        f"1 of the 2 TFRecord files of {pattern} cannot be read whole:",
        f"  {shard}: truncated record at byte {cut_record}: the file ends inside it (cut short, "
        "e.g. by an interrupted copy)",
        "Copy them again from their source, or rebuild them with build_mscoco_data; a corrupt "
        "record is never skipped silently."])
    self.assertRegex(message.splitlines()[3], r"^Training stopped at step \d+ without saving; "
                     f"the last checkpoint, {train_dir}/ckpt-2, is intact: rerun the same "
                     "command once the files are whole, and training resumes from it.$")
    self.assertEqual(tf.train.latest_checkpoint(train_dir), os.path.join(train_dir, "ckpt-2"))

    with open(shard, "wb") as f:  # Copied again: the same command resumes.
      f.write(whole)
    options.number_of_steps = 4
    result = trainer.train(config, options)
    self.assertEqual((result.start_step, result.global_step), (2, 4))

  def test_changed_bytes_are_named_by_the_evaluator(self):
    tmp = self.create_tempdir().full_path
    pattern = td.write_shards(os.path.join(tmp, "data"), td.colour_examples(CAPTIONS), 1,
                              name="val")
    shard = os.path.join(tmp, "data", "val-00000-of-00001")
    offset = _record_offsets(shard)[2]
    with open(shard, "r+b") as f:
      f.seek(offset + 12 + 50)  # A byte of record 2's data.
      byte = f.read(1)
      f.seek(offset + 12 + 50)
      f.write(bytes([byte[0] ^ 0xFF]))
    # (TensorFlow names the offset of the part whose checksum failed: here the data, after the
    # record's 12-byte header.)
    expected = (f"1 of the 1 TFRecord files of {pattern} cannot be read whole:\n  {shard}: "
                f"corrupted record at byte {offset + 12}: its checksum does not match (the bytes "
                "were changed after it was written)")
    with self.assertRaises(inputs.BadInputError) as raised:
      checkpoint_evaluator.load_caption_references(pattern, num_images=10)
    self.assertEqual(str(raised.exception)[:len(expected)], expected)
    evaluator = checkpoint_evaluator.CheckpointEvaluator(td.tiny_config(), pattern)
    with self.assertRaises(inputs.BadInputError) as raised:
      evaluator.perplexity()
    self.assertTrue(str(raised.exception).startswith(expected), str(raised.exception))


class DiskFullTest(tf.test.TestCase):
  """A save that fails as on a full disk (simulated: TensorFlow's saver raising its error after
  writing part of the checkpoint's temporary folder; no test machine lets a test fill a disk)."""

  def _train(self, steps, save_effect=None):
    options = trainer.TrainOptions(input_file_pattern=self.pattern, train_dir=self.train_dir,
                                   number_of_steps=steps, seed=1)
    if save_effect is None:
      return trainer.train(td.tiny_config(save_checkpoint_steps=2), options)
    with mock.patch.object(tf.train.CheckpointManager, "save", autospec=True,
                           side_effect=save_effect):
      return trainer.train(td.tiny_config(save_checkpoint_steps=2), options)

  def setUp(self):
    super().setUp()
    tmp = self.create_tempdir().full_path
    self.pattern = td.write_shards(os.path.join(tmp, "data"), td.colour_examples(CAPTIONS), 2)
    self.train_dir = os.path.join(tmp, "train")

  def test_a_full_disk_is_named_cleaned_up_and_resumed_from(self):
    # The first run's one save, at step 2, with little free space: warned about, then saved.
    with mock.patch.object(checkpoint_files, "free_bytes", return_value=3 * 2**20), \
         self.assertLogs(level="WARNING") as logs:
      self._train(2)
    warnings = [line for line in logs.output if "free on" in line]
    self.assertLen(warnings, 1)  # The one save, at step 2.
    self.assertRegex(warnings[0], f"Only 3.0 MiB free on {self.train_dir}, and a checkpoint "
                     r"takes about [\d,.]+ MiB: the next saves may fail")
    real_save = tf.train.CheckpointManager.save

    def disk_full(manager, checkpoint_number=None, **kwargs):
      if checkpoint_number < 4:
        return real_save(manager, checkpoint_number=checkpoint_number, **kwargs)
      temp = os.path.join(manager.directory, f"ckpt-{checkpoint_number}_temp")
      os.makedirs(temp)
      with open(os.path.join(temp, "part-00000-of-00001.data-00000-of-00001"), "wb") as f:
        f.write(b"\0" * 1000)
      raise tf.errors.ResourceExhaustedError(
          None, None, f"{temp}/part-00000-of-00001.data-00000-of-00001; No space left on device")

    with self.assertRaises(checkpoint_files.CheckpointSaveError) as raised:
      self._train(4, disk_full)
    size = sum(os.path.getsize(p) for p in glob.glob(os.path.join(self.train_dir, "ckpt-2.*")))
    self.assertRegex(
        str(raised.exception),
        f"^Saving checkpoint {self.train_dir}/ckpt-4 failed: {self.train_dir}/ckpt-4_temp/"
        f"part-00000-of-00001.data-00000-of-00001; No space left on device\\. It needs about "
        f"{size / 2**20:,.1f} MiB, and [\\d,.]+ MiB are free there; the partial files were "
        f"removed\\. The last checkpoint, {self.train_dir}/ckpt-2, is intact: free some space "
        "and rerun the same command, and training resumes from it\\.$")
    self.assertEqual(sorted(n for n in os.listdir(self.train_dir) if n.startswith("ckpt-")),
                     ["ckpt-2.data-00000-of-00001", "ckpt-2.index"])
    self.assertEqual(tf.train.latest_checkpoint(self.train_dir),
                     os.path.join(self.train_dir, "ckpt-2"))
    # Space freed: the same command resumes from step 2.
    result = self._train(4)
    self.assertEqual((result.start_step, result.global_step), (2, 4))

  def test_a_failure_after_the_files_are_written_keeps_them(self):
    # E.g. the manager's bookkeeping (its state file, deleting old checkpoints) fails after the
    # checkpoint's files are complete: they are kept, and a rerun resumes from them.
    real_save = tf.train.CheckpointManager.save

    def written_then_fails(manager, checkpoint_number=None, **kwargs):
      path = real_save(manager, checkpoint_number=checkpoint_number, **kwargs)
      if checkpoint_number == 4:
        raise OSError(28, "No space left on device", os.path.join(manager.directory, "checkpoint"))
      return path

    with self.assertRaises(checkpoint_files.CheckpointSaveError) as raised:
      self._train(4, written_then_fails)
    self.assertIn("its files were written, the failure came after them. The last checkpoint, "
                  f"{self.train_dir}/ckpt-4, is intact", str(raised.exception))
    self.assertEqual(tf.train.latest_checkpoint(self.train_dir),
                     os.path.join(self.train_dir, "ckpt-4"))
    self.assertIsNone(checkpoint_files.checkpoint_problem(os.path.join(self.train_dir, "ckpt-4")))


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
