"""Tests for im2txt/training/training_summaries.py: what is written when, between training loops."""

import shutil
import tempfile
from unittest import mock

import tensorflow as tf

from im2txt import configuration
from im2txt.training import training_summaries
from tests import training_testdata as td

_OUT = {"batch_loss": 2.5, "total_loss": 2.75, "learning_rate": 0.5, "grad_norm": 1.25}


class TrainingSummariesTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.logdir = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.logdir, True)
    self.batch = {"input_mask": tf.constant([[1, 1, 1, 0], [1, 1, 0, 0]]),
                  "images": tf.zeros([2, 8, 8, 3])}

  def _run(self, loop_ends, seconds, summary_every=10, image_secs=600):
    """Calls after_loop at each global step of loop_ends, at the given wall-clock seconds."""
    config = configuration.TrainingConfig(summary_every_n_steps=summary_every,
                                          image_summary_secs=image_secs)
    summaries = training_summaries.TrainingSummaries(self.logdir, config, global_batch=2,
                                                     number_of_steps=1000, log_every_n_steps=50)
    strategy = tf.distribute.get_strategy()
    for step, now in zip(loop_ends, seconds):
      with mock.patch.object(training_summaries.time, "time", return_value=now):
        summaries.after_loop(step, _OUT, self.batch, strategy)
    summaries.close()
    return td.read_scalars(self.logdir)

  def test_scalars_when_a_multiple_of_summary_every_is_crossed(self):
    # A first loop of 1 step, then loops of 20 and 4 steps, one second each.
    ends = [1, 21, 41, 45, 61]
    events = self._run(ends, seconds=[0, 1, 2, 3, 4])
    self.assertEqual(sorted(events["losses/batch_loss"]), [21, 41, 61])  # 45 crossed no 10.
    self.assertEqual(events["losses/total_loss"][41], 2.75)
    self.assertEqual(events["caption_length/mean"][21], 2.5)  # (3 + 2) / 2 target tokens.
    self.assertAllClose(events["examples_per_sec"][21], 21 * 2 / 1.0)  # Steps 1-21 in 1 s.
    self.assertAllClose(events["examples_per_sec"][61], 20 * 2 / 2.0)  # Steps 42-61 in 2 s.

  def test_images_and_histogram_by_time(self):
    ends = list(range(10, 130, 10))
    seconds = [0, 100, 200, 300, 400, 500, 600, 700, 800, 1300, 1400, 1500]
    events = self._run(ends, seconds)
    self.assertLen(events["losses/batch_loss"], 12)
    # At the first summary, then at the first summaries 600 s after the last image write.
    self.assertEqual(sorted(events["input_images"]), [10, 70, 100])
    self.assertEqual(sorted(events["caption_length"]), [10, 70, 100])
    self.assertEqual(self._run([130, 140], [2000, 3000], image_secs=0)["input_images"].keys(),
                     {10, 70, 100, 130})  # 0: only at a run's first summary.


if __name__ == "__main__":
  tf.test.main()
