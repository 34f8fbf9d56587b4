"""Shared by the MirroredStrategy tests: two logical CPU devices, and the comparison of a run on
them with a run on one device.

Import this module first in a test file: it splits the process's CPU into two logical devices
before TensorFlow initialises them. Two mirrored runs in one process trip over each other's
collectives, so each comparison has its own test file (its own py_test, its own process).
"""

import os

import tensorflow as tf

try:
  tf.config.set_logical_device_configuration(
      tf.config.list_physical_devices("CPU")[0],
      [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
  SETUP_ERROR = None
except RuntimeError as e:  # TensorFlow already initialised by another test in this process.
  SETUP_ERROR = str(e)

from im2txt.training import trainer  # pylint: disable=g-import-not-at-top
from tests import training_testdata as td  # pylint: disable=g-import-not-at-top

CAPTIONS = {0: [3, 4, 5], 1: [6, 7], 2: [8, 9, 10, 11], 3: [12, 5], 4: [3, 3, 3, 3, 3, 4],
            5: [5], 6: [13, 14], 7: [15, 4, 6]}


def assert_two_replicas_match_one_device(test: tf.test.TestCase, config,
                                         num_model_variables: int,
                                         train_inception: bool = False) -> dict:
  """Trains 3 steps on one device and on two mirrored replicas; losses and weights must agree.

  num_model_variables: the checkpoint's values under model/ (weights, batch-norm statistics and
  optimizer slots). Returns the two checkpoint readers ("one", "two").
  """
  if SETUP_ERROR:
    test.skipTest(f"needs its own process: {SETUP_ERROR}")
  test.assertLen(tf.config.list_logical_devices("CPU"), 2)
  tmp = test.create_tempdir().full_path
  pattern = td.write_shards(os.path.join(tmp, "data"), td.colour_examples(CAPTIONS), 2)
  results, readers = {}, {}
  for name, strategy, devices in [("one", "default", None),
                                  ("two", "mirrored", ["/cpu:0", "/cpu:1"])]:
    options = trainer.TrainOptions(input_file_pattern=pattern,
                                   train_dir=os.path.join(tmp, name), number_of_steps=3,
                                   seed=7, strategy=strategy, devices=devices,
                                   train_inception=train_inception, steps_per_loop=1)
    results[name] = trainer.train(config, options)
    readers[name] = tf.train.load_checkpoint(results[name].last_checkpoint)

  # Each replica gets 3 of the 6 examples of a step (padded to its own longest caption);
  # losses are normalised by the global token count, so the sums are the same.
  test.assertAllClose(results["one"].first_loss, results["two"].first_loss, rtol=1e-5)
  test.assertAllClose(results["one"].last_loss, results["two"].last_loss, rtol=1e-4)
  test.assertNotAllClose(results["two"].first_loss, results["two"].last_loss)
  compared = 0
  for key in readers["one"].get_variable_to_shape_map():
    if not key.startswith("model/"):
      continue
    one, two = readers["one"].get_tensor(key), readers["two"].get_tensor(key)
    # Three steps at rate 2.0 amplify the float rounding of differently ordered sums a little.
    test.assertAllClose(one, two, atol=1e-3, rtol=1e-3, msg=key)
    compared += 1
  test.assertEqual(compared, num_model_variables)
  return readers
