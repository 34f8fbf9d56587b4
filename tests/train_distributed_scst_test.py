"""Self-critical training on two mirrored replicas (two logical CPU devices) gives the losses and
weights of one device on the same global batch: each replica samples its rows of the step's
random numbers and divides by the global batch's word count.

Its own py_test: the process's CPU is split into two logical devices before TensorFlow starts.
"""

from tests import distributed_testutil  # First: sets up the two logical devices.

import os  # pylint: disable=g-import-not-at-top,g-bad-import-order
import shutil

import tensorflow as tf

from im2txt.training import trainer
from tests import training_testdata as td

CAPTIONS = {0: [3, 4, 5], 1: [6, 7], 2: [8, 9, 10, 11], 3: [12, 5], 4: [3, 3, 3, 3, 3, 4],
            5: [5], 6: [13, 14], 7: [14, 4, 6]}


class MirroredScstTest(tf.test.TestCase):

  def test_two_replicas_match_one_device(self):
    if distributed_testutil.SETUP_ERROR:
      self.skipTest(f"needs its own process: {distributed_testutil.SETUP_ERROR}")
    tmp = self.create_tempdir().full_path
    data = os.path.join(tmp, "data")
    pattern = td.write_shards(data, td.colour_examples(CAPTIONS), 2)
    td.write_scst_files(data, {i: [c, c[:1] + [5]] for i, c in CAPTIONS.items()})
    # No dropout, so that both runs draw no random numbers in the model.
    config = td.tiny_config(lstm_keep=1.0, batch_size=6, summary_every_n_steps=1)
    config.training.scst_learning_rate = 0.002
    phase1 = os.path.join(tmp, "phase1")
    trainer.train(config, trainer.TrainOptions(input_file_pattern=pattern, train_dir=phase1,
                                               number_of_steps=1, seed=3, strategy="default"))
    results, readers = {}, {}
    for name, strategy, devices in [("one", "default", None),
                                    ("two", "mirrored", ["/cpu:0", "/cpu:1"])]:
      train_dir = os.path.join(tmp, name)
      shutil.copytree(phase1, train_dir)
      options = trainer.TrainOptions(input_file_pattern=pattern, train_dir=train_dir,
                                     number_of_steps=3, seed=7, strategy=strategy,
                                     devices=devices, objective="scst", steps_per_loop=1)
      results[name] = trainer.train(config, options)
      readers[name] = tf.train.load_checkpoint(results[name].last_checkpoint)
    one, two = results["one"], results["two"]
    self.assertEqual((two.start_step, two.global_step), (1, 3))
    self.assertAllClose(one.first_loss, two.first_loss, rtol=1e-4)
    self.assertAllClose(one.last_loss, two.last_loss, rtol=1e-4)
    self.assertNotAllClose(one.first_loss, one.last_loss)
    scalars = [td.read_scalars(os.path.join(tmp, n)) for n in ("one", "two")]
    for tag in ("scst/sample_reward", "scst/baseline", "scst/greedy_cider"):
      for step in (2, 3):
        self.assertAllClose(scalars[0][tag][step], scalars[1][tag][step], rtol=1e-5,
                            msg=f"{tag} at {step}")
    self.assertGreater(scalars[0]["scst/sample_reward"][2], 0.0)
    compared = 0
    for key in readers["one"].get_variable_to_shape_map():
      if key.startswith("model/") and "inception" not in key:
        self.assertAllClose(readers["one"].get_tensor(key), readers["two"].get_tensor(key),
                            rtol=1e-3, atol=1e-5, msg=key)
        compared += 1
    self.assertEqual(compared, 7 * 3)  # Seven decoder weights, each with Adam's two moments.


if __name__ == "__main__":
  tf.test.main()
