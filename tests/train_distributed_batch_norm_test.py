"""The small preset's batch norm on the image embedding and Adam under MirroredStrategy.

The batch norm is synchronised across replicas: its statistics are the global batch's, so two
logical CPU devices train exactly like one device. Its own process (py_test), like
train_distributed_test.
"""

from tests import distributed_testutil  # First: sets up the two logical devices.

import tensorflow as tf  # pylint: disable=g-import-not-at-top,g-bad-import-order

from tests import training_testdata as td  # pylint: disable=g-import-not-at-top


class MirroredBatchNormTest(tf.test.TestCase):

  def test_image_embedding_batch_norm_and_adam_match_one_device(self):
    config = td.tiny_config(lstm_keep=1.0, batch_size=6, optimizer="Adam",
                            initial_learning_rate=0.001)
    config.model.image_embedding_batch_norm = True
    # The 7 decoder weights, the batch norm's 4, Inception's 94 x 4, and Adam's two moments
    # of each of the 9 trained ones.
    distributed_testutil.assert_two_replicas_match_one_device(
        self, config, 7 + 4 + 94 * 4 + 2 * 9)


if __name__ == "__main__":
  tf.test.main()
