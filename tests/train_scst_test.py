"""Phase 3, self-critical training (train --objective=scst), through the trainer: it continues a
cross-entropy checkpoint, stops on SIGTERM with a checkpoint and resumes exactly, honours
--train_inception, writes its reward to TensorBoard, and names what is missing."""

import dataclasses
import os
import shutil
import signal
import tempfile
import time
from unittest import mock

import numpy as np
import tensorflow as tf

from im2txt import file_io
from im2txt.training import cider_reward
from im2txt.training import lease
from im2txt.training import trainer
from im2txt.training import training_summaries
from tests import training_testdata as td

# One image (image 0, solid red) with four captions: every batch holds the same pixels whatever
# the input order (no colour distortions; crops and flips of a solid image are alike), so a
# resumed run's batches equal the uninterrupted run's. The references file holds two more
# images, for the document frequencies.
RECORDS = [(0, [3, 4, 5]), (0, [3, 6]), (0, [7, 4, 5, 8]), (0, [3, 4])]
REFERENCES = {0: [[3, 4, 5], [3, 6], [7, 4, 5, 8], [3, 4]], 1: [[9, 10], [9, 11, 12]],
              2: [[13, 14, 5], [13, 3]]}


class ScstTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    data = os.path.join(cls.tmp, "data")
    red = td.solid_jpeg(td.COLOURS[0])
    cls.pattern = td.write_shards(data, [(i, red, c) for i, c in RECORDS], 2)
    td.write_scst_files(data, REFERENCES)
    config = td.tiny_config(lstm_keep=1.0, save_checkpoint_steps=0, summary_every_n_steps=1,
                            max_checkpoints_to_keep=10)
    config.model = dataclasses.replace(config.model, distort_colors=False)
    # Larger than self-critical.pytorch's 5e-5, for a few steps to move the weights visibly.
    config.training.scst_learning_rate = 0.002
    cls.config = config
    cls.phase1 = os.path.join(cls.tmp, "phase1")
    trainer.train(config, cls._options(cls.phase1, 2, objective="cross_entropy"))

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  @classmethod
  def _options(cls, train_dir, steps, **kwargs):
    defaults = dict(objective="scst", seed=5, steps_per_loop=1, scst_samples=3)
    defaults.update(kwargs)
    return trainer.TrainOptions(input_file_pattern=cls.pattern, train_dir=train_dir,
                                number_of_steps=steps, **defaults)

  def _copy_of_phase1(self, name):
    path = os.path.join(self.tmp, name)
    shutil.copytree(self.phase1, path)
    return path

  def test_continues_stops_on_sigterm_and_resumes_exactly(self):
    straight_dir, resumed_dir = self._copy_of_phase1("straight"), self._copy_of_phase1("resumed")
    straight = trainer.train(self.config, self._options(straight_dir, 6))
    self.assertEqual((straight.start_step, straight.global_step), (2, 6))

    # SIGTERM during the loop that ends at step 4: the next loop votes to stop, saves, stops.
    after_loop = training_summaries.TrainingSummaries.after_loop

    def signalling(summaries, step, *args):
      after_loop(summaries, step, *args)
      if step == 4:
        os.kill(os.getpid(), signal.SIGTERM)

    with mock.patch.object(cider_reward, "document_frequencies",
                           wraps=cider_reward.document_frequencies) as computed:
      with mock.patch.object(training_summaries.TrainingSummaries, "after_loop", signalling):
        stopped = trainer.train(self.config, self._options(resumed_dir, 6))
      self.assertTrue(stopped.stopped_by_signal)
      self.assertEqual((stopped.global_step, stopped.last_checkpoint),
                       (5, os.path.join(resumed_dir, "ckpt-5")))
      resumed = trainer.train(self.config, self._options(resumed_dir, 6))
    # The document frequencies were computed once, then read from train_dir's cache.
    self.assertEqual(computed.call_count, 1)
    self.assertTrue(os.path.exists(os.path.join(resumed_dir, cider_reward.CACHE_FILENAME)))
    self.assertEqual((resumed.start_step, resumed.global_step), (5, 6))
    self.assertAllClose(resumed.last_loss, straight.last_loss, rtol=1e-5)

    readers = [tf.train.load_checkpoint(os.path.join(d, "ckpt-6"))
               for d in (straight_dir, resumed_dir)]
    keys = sorted(k for k in readers[0].get_variable_to_shape_map()
                  if k != "_CHECKPOINTABLE_OBJECT_GRAPH")
    self.assertEqual(keys, sorted(k for k in readers[1].get_variable_to_shape_map()
                                  if k != "_CHECKPOINTABLE_OBJECT_GRAPH"))
    moments = [k for k in keys if "/m/.ATTRIBUTES" in k]
    self.assertNotEmpty(moments)  # Adam's, checkpointed with the model.
    for key in keys:
      self.assertAllClose(readers[0].get_tensor(key), readers[1].get_tensor(key), rtol=1e-5,
                          atol=1e-7, msg=key)
    # SCST trained the decoder (Inception frozen: unchanged).
    before = tf.train.load_checkpoint(os.path.join(self.phase1, "ckpt-2"))
    lstm = "model/lstm_cell/kernel/.ATTRIBUTES/VARIABLE_VALUE"
    self.assertNotAllClose(before.get_tensor(lstm), readers[0].get_tensor(lstm))
    for key, value in td.inception_values(os.path.join(straight_dir, "ckpt-6")).items():
      self.assertAllEqual(value, before.get_tensor(key), msg=key)

    # TensorBoard: the same values at every step, interrupted or not.
    scalars = [td.read_scalars(d) for d in (straight_dir, resumed_dir)]
    for tag in ("losses/batch_loss", "scst/sample_reward", "scst/baseline", "scst/greedy_cider",
                "scst/beat_baseline", "learning_rate"):
      for step in range(3, 7):
        self.assertAllClose(scalars[0][tag][step], scalars[1][tag][step], rtol=1e-5,
                            msg=f"{tag} at {step}")
    rewards = [scalars[0]["scst/sample_reward"][s] for s in range(3, 7)]
    self.assertTrue(all(0.0 <= r <= 10.0 for r in rewards), rewards)
    self.assertGreater(max(rewards), 0.0)
    self.assertAllClose([scalars[0]["learning_rate"][s] for s in range(3, 7)], [0.002] * 4)

    # --train_inception is honoured: Inception's weights move too.
    inception = trainer.train(self.config, self._options(straight_dir, 7, train_inception=True,
                                                         scst_baseline="greedy"))
    self.assertEqual(inception.global_step, 7)
    changed = td.inception_values(os.path.join(straight_dir, "ckpt-7"))
    self.assertTrue(any(not np.allclose(v, before.get_tensor(k)) for k, v in changed.items()))

  def test_errors_name_what_is_missing(self):
    fresh = os.path.join(self.tmp, "fresh")
    with self.assertRaisesRegex(ValueError, "has no checkpoint: train phase 1"):
      trainer.train(self.config, self._options(fresh, 3))
    self.assertFalse(os.path.exists(fresh))
    with self.assertRaisesRegex(ValueError, "at least 2 samples per image"):
      trainer.train(self.config, self._options(self.phase1, 3, scst_samples=1))

    # Records of the original builder: no references file beside them.
    original = os.path.join(self.tmp, "original")
    pattern = td.write_shards(original, [(0, td.solid_jpeg(td.COLOURS[0]), [3, 4])], 1)
    with self.assertRaisesRegex(ValueError, "train_references.json .beside the input shards.*"
                                "rebuild the data with build_mscoco_data.*cross_entropy"):
      trainer.train(self.config, dataclasses.replace(self._options(self.phase1, 3),
                                                     input_file_pattern=pattern))

    # A references file of other data: the record whose image it lacks is named.
    other = os.path.join(self.tmp, "other_refs")
    os.makedirs(other)
    td.write_scst_files(other, {1: REFERENCES[1], 2: REFERENCES[2]})
    train_dir = self._copy_of_phase1("other")
    with self.assertRaisesRegex(ValueError, r"train-0000[01]-of-00002: record \d is of image 0, "
                                "which .*other_refs/train_references.json does not hold"):
      trainer.train(self.config, self._options(
          train_dir, 3, references_file=os.path.join(other, "train_references.json")))
    self.assertEqual(tf.train.latest_checkpoint(train_dir), os.path.join(train_dir, "ckpt-2"))

    # A train_dir another trainer holds: refused before anything is written there, even the
    # document frequencies' cache.
    held = self._copy_of_phase1("held")
    before = sorted(os.listdir(held))
    file_io.write_json(os.path.join(held, lease.LEASE_FILENAME), {
        "host": "gpu-node-7", "pid": 4242, "token": "other", "heartbeat": time.time()})
    with self.assertRaisesRegex(lease.LeaseError, "is in use by the trainer on host gpu-node-7"):
      trainer.train(self.config, self._options(held, 3))
    self.assertEqual(sorted(os.listdir(held)), sorted(before + [lease.LEASE_FILENAME]))


if __name__ == "__main__":
  tf.test.main()
