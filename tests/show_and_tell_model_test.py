"""Tests for im2txt.show_and_tell_model: sizes, shapes, inference == training, Inception setup."""

import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from im2txt import configuration
from im2txt.model import show_and_tell_model
from tests import training_testdata as td


def _count(layer) -> int:
  return int(sum(np.prod(v.shape) for v in layer.weights))


class DefaultSizesTest(tf.test.TestCase):

  def test_parameter_counts_match_the_original(self):
    model = show_and_tell_model.ShowAndTellModel(configuration.default_config().model)
    model.build_all()
    self.assertEqual(_count(model.inception), 21802784)
    self.assertEqual(_count(model.image_embedding), 1048576)  # 2048 x 512, no bias
    self.assertEqual(_count(model.seq_embedding), 6144000)  # 12000 x 512
    self.assertEqual(_count(model.lstm_cell), 2099200)  # 4 x (1024 x 512 + 512)
    self.assertEqual(_count(model.logits_layer), 6156000)  # 512 x 12000 + 12000
    # The RNN layer shares the cell: no variables of its own.
    self.assertEqual(_count(model), 21802784 + 1048576 + 6144000 + 2099200 + 6156000)
    self.assertEqual(model.image_embedding.bias, None)


class ImageEmbeddingBatchNormTest(tf.test.TestCase):
  """The small preset's (optional) batch norm on the image embedding."""

  def test_normalises_in_training_and_learns_statistics_while_inception_is_frozen(self):
    tf.keras.utils.set_random_seed(2)
    config = td.tiny_config(vocab_size=20, units=16).model
    config.image_embedding_batch_norm = True
    model = show_and_tell_model.ShowAndTellModel(config, train_inception=False)
    model.build_all()
    norm = model.image_embedding_norm
    self.assertEqual([v.name.split("/")[-1] for v in norm.weights],
                     ["gamma:0", "beta:0", "moving_mean:0", "moving_variance:0"])
    self.assertEqual([v.shape for v in norm.weights], [(16,)] * 4)
    # Phase 1 trains it (gamma, beta) with the decoder; Inception stays frozen.
    self.assertIn(norm.gamma.ref(), {v.ref() for v in model.trainable_variables})
    images = tf.random.stateless_uniform([8, 75, 75, 3], seed=[3, 4], minval=-1, maxval=1)
    model.calibrate_inception_batch_norm(images)
    inception_before = [v.numpy() for v in model.inception.non_trainable_weights]
    embeddings = model.embed_images(images, training=True)
    self.assertAllClose(tf.reduce_mean(embeddings, 0), tf.zeros([16]), atol=1e-4)
    self.assertAllClose(tf.math.reduce_std(embeddings, 0), tf.ones([16]), atol=0.01)
    # The training pass moved its statistics (not Inception's) towards the batch's.
    self.assertGreater(float(tf.reduce_max(tf.abs(norm.moving_mean))), 0.0)
    for before, after in zip(inception_before, model.inception.non_trainable_weights):
      self.assertAllEqual(before, after)
    # Inference uses the moving statistics: the image still changes the initial state.
    h0, _ = model.initial_state(images[:1])
    h1, _ = model.initial_state(images[1:2])
    self.assertGreater(float(tf.reduce_max(tf.abs(h0 - h1))), 1e-4)


class InceptionBatchNormMomentumTest(tf.test.TestCase):
  """model.inception_batch_norm_momentum: how fast phase 2 moves Inception's statistics."""

  def _first_moving_mean_after_a_training_pass(self, momentum):
    tf.keras.utils.set_random_seed(5)
    config = td.tiny_config(vocab_size=20, units=16).model
    config.inception_batch_norm_momentum = momentum
    model = show_and_tell_model.ShowAndTellModel(config, train_inception=True)
    model.build_all()
    norms = [l for l in model.inception.layers
             if isinstance(l, tf.keras.layers.BatchNormalization)]
    self.assertLen(norms, 94)
    self.assertEqual({l.momentum for l in norms}, {momentum})
    self.assertAllEqual(norms[0].moving_mean, tf.zeros_like(norms[0].moving_mean))
    images = tf.random.stateless_uniform([4, 75, 75, 3], seed=[1, 2], minval=-1, maxval=1)
    model.image_features(images, training=True)
    return norms[0].moving_mean.numpy()

  def test_moving_statistics_follow_the_configured_momentum(self):
    # From 0, one update gives (1 - momentum) x the batch mean: 10x more at 0.9 than at 0.99.
    fast = self._first_moving_mean_after_a_training_pass(0.9)
    slow = self._first_moving_mean_after_a_training_pass(0.99)
    self.assertGreater(float(abs(fast).max()), 0.0)
    self.assertAllClose(fast, 10.0 * slow, rtol=1e-3, atol=1e-6)

  def test_calibration_keeps_the_configured_momentum(self):
    config = td.tiny_config(vocab_size=20, units=16).model
    config.inception_batch_norm_momentum = 0.9
    model = show_and_tell_model.ShowAndTellModel(config)
    model.calibrate_inception_batch_norm(
        tf.random.stateless_uniform([4, 75, 75, 3], seed=[1, 2], minval=-1, maxval=1))
    self.assertEqual({l.momentum for l in model.inception.layers
                      if isinstance(l, tf.keras.layers.BatchNormalization)}, {0.9})

  def test_out_of_range_momentum_is_named(self):
    config = td.tiny_config().model
    config.inception_batch_norm_momentum = 1.5
    with self.assertRaisesRegex(ValueError, "inception_batch_norm_momentum"):
      show_and_tell_model.ShowAndTellModel(config)


class TinyModelTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    tf.keras.utils.set_random_seed(1)
    cls.config = td.tiny_config(vocab_size=20, units=16).model
    cls.model = show_and_tell_model.ShowAndTellModel(cls.config)
    cls.model.build_all()
    cls.images = tf.random.stateless_uniform([3, 75, 75, 3], seed=[1, 2], minval=-1, maxval=1)
    cls.model.calibrate_inception_batch_norm(cls.images)

  def test_uniform_initialisation(self):
    for layer in (self.model.image_embedding, self.model.seq_embedding, self.model.logits_layer):
      kernel = layer.weights[0]
      self.assertLessEqual(float(tf.reduce_max(tf.abs(kernel))), 0.08)
      self.assertGreater(float(tf.reduce_max(tf.abs(kernel))), 0.07)
    self.assertAllEqual(self.model.logits_layer.bias, tf.zeros([20]))

  def test_training_output_shapes(self):
    seqs = tf.constant([[1, 5, 9, 4], [1, 7, 0, 0], [1, 3, 3, 0]], tf.int64)
    logits = self.model({"images": self.images, "input_seqs": seqs}, training=True)
    self.assertEqual(logits.shape, (3, 4, 20))
    mask = tf.constant([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]])
    losses = self.model.token_losses(logits, tf.constant([[5, 9, 4, 2], [7, 2, 0, 0],
                                                          [3, 3, 2, 0]]), mask)
    self.assertEqual(losses.shape, (3, 4))
    self.assertEqual(losses.dtype, tf.float32)
    self.assertAllEqual(losses * (1 - tf.cast(mask, tf.float32)), tf.zeros([3, 4]))
    self.assertAllGreater(tf.boolean_mask(losses, mask > 0), 0.0)

  def test_token_losses_are_cross_entropy(self):
    logits = tf.math.log(tf.constant([[[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]]))
    losses = self.model.token_losses(logits, tf.constant([[1, 2]]), tf.constant([[1, 0]]))
    self.assertAllClose(losses, [[-np.log(0.25), 0.0]])

  def test_inference_steps_reproduce_teacher_forced_logits(self):
    seqs = tf.constant([[1, 5, 9, 4], [1, 7, 3, 2], [1, 3, 3, 8]], tf.int64)
    logits = self.model({"images": self.images, "input_seqs": seqs}, training=False)
    state = self.model.initial_state(self.images)
    self.assertEqual([s.shape for s in state], [(3, 16), (3, 16)])
    for t in range(4):
      log_probs, state = self.model.step(seqs[:, t], state)
      self.assertEqual(log_probs.shape, (3, 20))
      self.assertEqual(log_probs.dtype, tf.float32)
      self.assertAllClose(log_probs, tf.nn.log_softmax(logits[:, t]), atol=1e-5)

  def test_images_change_the_initial_state(self):
    h, _ = self.model.initial_state(self.images)
    self.assertGreater(float(tf.reduce_max(tf.abs(h[0] - h[1]))), 1e-4)

  def test_calibrated_random_inception_gives_order_one_features(self):
    features = self.model.image_features(self.images)
    self.assertEqual(features.shape, (3, 2048))
    self.assertBetween(float(tf.math.reduce_std(features)), 0.05, 50.0)

  def test_train_inception_switches_trainable_variables(self):
    model = self.model
    self.assertLen(model.trainable_variables, 7)
    try:
      model.set_train_inception(True)
      # + 94 conv kernels and 94 batch-norm betas (Keras' InceptionV3 has no BN scale).
      self.assertLen(model.trainable_variables, 7 + 188)
    finally:
      model.set_train_inception(False)
    self.assertLen(model.trainable_variables, 7)

  def test_phase1_features_pass_no_gradient(self):
    with tf.GradientTape() as tape:
      tape.watch(self.images)
      features = self.model.image_features(self.images, training=True)
    self.assertIsNone(tape.gradient(features, self.images))


class InceptionWeightsTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.model = show_and_tell_model.ShowAndTellModel(td.tiny_config().model)
    cls.dir = tempfile.mkdtemp()
    cls.addClassCleanup(shutil.rmtree, cls.dir, True)

  def test_load_h5_weights(self):
    source = tf.keras.applications.InceptionV3(include_top=False, weights=None,
                                               input_shape=(75, 75, 3))
    path = os.path.join(self.dir, "inception_v3_notop.h5")
    source.save_weights(path)
    self.model.load_inception_weights(path)
    self.assertLen(self.model.inception.weights, len(source.weights))
    for expected, actual in zip(source.weights, self.model.inception.weights):
      self.assertAllEqual(expected, actual)

  def test_missing_file_is_named(self):
    with self.assertRaisesRegex(FileNotFoundError, "no/such/weights.h5"):
      self.model.load_inception_weights("/no/such/weights.h5")

  def test_wrong_file_is_named(self):
    path = os.path.join(self.dir, "other.h5")
    tf.keras.Sequential([tf.keras.layers.Dense(3, input_shape=(2,))]).save_weights(path)
    with self.assertRaisesRegex(ValueError, "other.h5: not a Keras InceptionV3"):
      self.model.load_inception_weights(path)


if __name__ == "__main__":
  tf.test.main()
