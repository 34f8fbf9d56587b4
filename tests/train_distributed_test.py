"""MirroredStrategy over two logical CPU devices trains exactly like one device.

The process's CPU is split into two logical devices before TensorFlow initialises them, so this
file runs in its own process (its own py_test).
"""

import os

import numpy as np
import tensorflow as tf

try:
  tf.config.set_logical_device_configuration(
      tf.config.list_physical_devices("CPU")[0],
      [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
  _SETUP_ERROR = None
except RuntimeError as e:  # TensorFlow already initialised by another test in this process.
  _SETUP_ERROR = str(e)

from im2txt import training  # pylint: disable=g-import-not-at-top
from tests import training_testdata as td  # pylint: disable=g-import-not-at-top

CAPTIONS = {0: [3, 4, 5], 1: [6, 7], 2: [8, 9, 10, 11], 3: [12, 5], 4: [3, 3, 3, 3, 3, 4],
            5: [5], 6: [13, 14], 7: [15, 4, 6]}


class MirroredTest(tf.test.TestCase):

  def _assert_two_replicas_match_one_device(self, config, num_model_variables: int):
    if _SETUP_ERROR:
      self.skipTest(f"needs its own process: {_SETUP_ERROR}")
    self.assertLen(tf.config.list_logical_devices("CPU"), 2)
    tmp = self.create_tempdir().full_path
    pattern = td.write_shards(os.path.join(tmp, "data"), td.colour_examples(CAPTIONS), 2)
    results, readers = {}, {}
    for name, strategy, devices in [("one", "default", None),
                                    ("two", "mirrored", ["/cpu:0", "/cpu:1"])]:
      options = training.TrainOptions(input_file_pattern=pattern,
                                      train_dir=os.path.join(tmp, name), number_of_steps=3,
                                      seed=7, strategy=strategy, devices=devices)
      results[name] = training.train(config, options)
      readers[name] = tf.train.load_checkpoint(results[name].last_checkpoint)

    # Each replica gets 3 of the 6 examples of a step (padded to its own longest caption);
    # losses are normalised by the global token count, so the sums are the same.
    self.assertAllClose(results["one"].first_loss, results["two"].first_loss, rtol=1e-5)
    self.assertAllClose(results["one"].last_loss, results["two"].last_loss, rtol=1e-4)
    self.assertNotAllClose(results["two"].first_loss, results["two"].last_loss)
    compared = 0
    for key in readers["one"].get_variable_to_shape_map():
      if not key.startswith("model/"):
        continue
      one, two = readers["one"].get_tensor(key), readers["two"].get_tensor(key)
      # Three steps at rate 2.0 amplify the float rounding of differently ordered sums a little.
      self.assertAllClose(one, two, atol=1e-3, rtol=1e-3, msg=key)
      compared += 1
    self.assertEqual(compared, num_model_variables)

  def test_two_replicas_match_one_device(self):
    # No dropout, so that both runs draw no random numbers in the model.
    config = td.tiny_config(lstm_keep=1.0, batch_size=6)
    self._assert_two_replicas_match_one_device(config, 7 + 94 * 4)

  def test_image_embedding_batch_norm_and_adam_match_one_device(self):
    # The small preset's batch norm on the image embedding is synchronised across replicas: its
    # statistics are the global batch's, as on one device. Its 4 variables are compared too
    # (and Adam's moments, which are saved beside them, by the losses).
    config = td.tiny_config(lstm_keep=1.0, batch_size=6, optimizer="Adam",
                            initial_learning_rate=0.001)
    config.model.image_embedding_batch_norm = True
    self._assert_two_replicas_match_one_device(config, 7 + 4 + 94 * 4)

if __name__ == "__main__":
  tf.test.main()
