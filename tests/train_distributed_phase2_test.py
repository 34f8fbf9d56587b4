"""Phase 2 under MirroredStrategy: Inception's batch norms synchronised across the replicas.

Fine-tuned InceptionV3 normalises each layer with the batch's statistics. Per replica, two
replicas would each normalise 3 of the 6 images of a step (measured: the step's loss then differs
from one device's by 8.5e-4, relative); synchronised, they use all 6, so one step on two logical
CPU devices gives one device's loss, moving statistics and weights. One step: over several, the
float rounding of differently ordered sums is amplified by a random Inception's nearly constant
channels (even one device's fused and unfused batch norms drift apart by 1.5e-4 in 3 steps).
The one-device run uses the synchronised (unfused) kernel too: the fused kernel folds the unbiased
variance n/(n-1) into the moving variance, 20% more here with 6 images of 1x1 activations.
Its own process (py_test), like train_distributed_test.
"""

from tests import distributed_testutil  # First: sets up the two logical devices.

import os  # pylint: disable=g-import-not-at-top,g-bad-import-order
import types  # pylint: disable=g-import-not-at-top,g-bad-import-order
from unittest import mock  # pylint: disable=g-import-not-at-top,g-bad-import-order

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

from im2txt.training import train_state  # pylint: disable=g-import-not-at-top
from im2txt.training import trainer  # pylint: disable=g-import-not-at-top
from tests import training_testdata as td  # pylint: disable=g-import-not-at-top


class MirroredPhase2Test(tf.test.TestCase):

  def test_synchronised_only_in_phase_2_on_several_replicas(self):
    options = lambda phase2: trainer.TrainOptions("data/train-*", "train", train_inception=phase2)
    replicas = lambda n: types.SimpleNamespace(num_replicas_in_sync=n)
    self.assertTrue(train_state.synchronized_batch_norm(options(True), replicas(2)))
    self.assertFalse(train_state.synchronized_batch_norm(options(False), replicas(2)))
    self.assertFalse(train_state.synchronized_batch_norm(options(True), replicas(1)))

  def test_synchronised_inception_batch_norm_matches_one_device(self):
    if distributed_testutil.SETUP_ERROR:
      self.skipTest(f"needs its own process: {distributed_testutil.SETUP_ERROR}")
    config = td.tiny_config(lstm_keep=1.0, batch_size=6)
    config.model.inception_dropout_keep_prob = 1.0
    tmp = self.create_tempdir().full_path
    pattern = td.write_shards(os.path.join(tmp, "data"),
                              td.colour_examples(distributed_testutil.CAPTIONS), 2)
    results, readers = {}, {}
    for name, strategy, devices in [("one", "default", None),
                                    ("two", "mirrored", ["/cpu:0", "/cpu:1"])]:
      options = trainer.TrainOptions(
          input_file_pattern=pattern, train_dir=os.path.join(tmp, name), number_of_steps=1,
          seed=7, strategy=strategy, devices=devices, train_inception=True, steps_per_loop=1)
      with mock.patch.object(train_state, "synchronized_batch_norm",
                             lambda options, strategy: True):
        results[name] = trainer.train(config, options)
      readers[name] = tf.train.load_checkpoint(results[name].last_checkpoint)

    # Both runs synchronise (the decision is tested above); the step's loss: normalised per
    # replica it would differ by 8.5e-4 (measured).
    self.assertAllClose(results["one"].first_loss, results["two"].first_loss, rtol=1e-5)
    statistics = weights = 0
    for key in readers["one"].get_variable_to_shape_map():
      if not key.startswith("model/"):
        continue
      one, two = readers["one"].get_tensor(key), readers["two"].get_tensor(key)
      if "/moving_mean/" in key or "/moving_variance/" in key:
        # The step's global batch statistics, folded into the calibrated ones (momentum 0.99);
        # float rounding through 94 layers moves them by up to 2e-4 of the layer's largest.
        self.assertAllClose(one, two, rtol=5e-4, atol=2e-3 * np.max(np.abs(one)), msg=key)
        statistics += 1
      elif key.startswith("model/inception/"):
        # One SGD step at 0.0005 moves Inception's weights by ~1e-4 at most; their gradients
        # through a random Inception's nearly constant channels carry float noise of up to half
        # of that (measured 5.4e-5 on the first conv), as between fused and unfused kernels on
        # one device.
        self.assertAllClose(one, two, rtol=1e-4, atol=1e-4, msg=key)
        weights += 1
      else:
        self.assertAllClose(one, two, rtol=1e-4, atol=1e-6, msg=key)  # The decoder.
        weights += 1
      self.assertTrue(np.all(np.isfinite(two)), key)
    self.assertEqual((statistics, weights), (94 * 2, 7 + 94 * 2))


if __name__ == "__main__":
  tf.test.main()
