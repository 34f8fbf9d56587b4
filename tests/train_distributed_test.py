"""MirroredStrategy over two logical CPU devices trains exactly like one device.

The process's CPU is split into two logical devices before TensorFlow initialises them, so this
file runs in its own process (its own py_test).
"""

from tests import distributed_testutil  # First: sets up the two logical devices.

import tensorflow as tf  # pylint: disable=g-import-not-at-top,g-bad-import-order

from tests import training_testdata as td  # pylint: disable=g-import-not-at-top


class MirroredTest(tf.test.TestCase):

  def test_two_replicas_match_one_device(self):
    # No dropout, so that both runs draw no random numbers in the model.
    config = td.tiny_config(lstm_keep=1.0, batch_size=6)
    distributed_testutil.assert_two_replicas_match_one_device(self, config, 7 + 94 * 4)


if __name__ == "__main__":
  tf.test.main()
