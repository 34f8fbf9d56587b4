"""Phase 1 then phase 2 on the same train_dir: from an .h5 file (bf16), and with Adam in phase 2."""

import os

import numpy as np
import tensorflow as tf

from im2txt.training import optimization
from im2txt.training import trainer
from tests import training_testdata as td

CAPTIONS = {0: [3, 4, 5], 1: [6, 7], 2: [8, 9, 10, 11], 3: [12, 5], 4: [13, 14, 4]}


class TwoPhasesTest(tf.test.TestCase):

  def test_phase1_then_phase2(self):
    tmp = self.create_tempdir().full_path
    pattern = td.write_shards(os.path.join(tmp, "data"),
                              td.colour_examples(CAPTIONS), 2)
    train_dir = os.path.join(tmp, "train")
    weights_file = os.path.join(tmp, "inception_v3_notop.h5")
    tf.keras.utils.set_random_seed(11)
    source = tf.keras.applications.InceptionV3(include_top=False, weights=None,
                                               input_shape=(75, 75, 3), pooling="avg")
    source.save_weights(weights_file)
    config = td.tiny_config(summary_every_n_steps=1)
    options = trainer.TrainOptions(input_file_pattern=pattern, train_dir=train_dir,
                                   number_of_steps=2, seed=3,
                                   inception_checkpoint_file=weights_file)

    phase1 = trainer.train(config, options)
    self.assertEqual((phase1.start_step, phase1.global_step), (0, 2))
    phase1_values = td.inception_values(phase1.last_checkpoint)
    # Phase 1 started from the weights file and changed none of its values (as the statistics
    # come from the file, no calibration either).
    layers = [layer for layer in source.layers if layer.weights]
    self.assertLen(phase1_values, sum(len(layer.weights) for layer in layers))
    for i, layer in enumerate(layers):
      for weight in layer.weights:
        name = weight.name.split("/")[-1].split(":")[0]
        key = f"model/inception/layer_with_weights-{i}/{name}/.ATTRIBUTES/VARIABLE_VALUE"
        self.assertAllEqual(phase1_values[key], weight.numpy(), msg=key)
    stored = [k for k in phase1_values if k.endswith("/kernel/.ATTRIBUTES/VARIABLE_VALUE")]
    self.assertLen(stored, 94)

    # Phase 2 on the same train_dir, in bf16: the weights file is not read again (a checkpoint
    # exists), the global step continues, everything trains.
    options.train_inception, options.number_of_steps = True, 4
    options.inception_checkpoint_file = os.path.join(tmp, "no-such-file.h5")
    options.mixed_precision = "bf16"
    phase2 = trainer.train(config, options)
    self.assertEqual(tf.keras.mixed_precision.global_policy().name, "float32")
    self.assertEqual((phase2.start_step, phase2.global_step), (2, 4))
    self.assertTrue(np.isfinite(phase2.last_loss))
    phase2_values = td.inception_values(phase2.last_checkpoint)
    changed = [k for k in phase1_values if not np.array_equal(phase1_values[k], phase2_values[k])]
    self.assertLen(changed, len(phase1_values))
    for key in stored:
      self.assertEqual(phase2_values[key].dtype, np.float32)
      # Two steps at 0.0005 move the weights a little, not to another initialisation.
      self.assertAllClose(phase2_values[key], phase1_values[key], atol=0.01)

    scalars = td.read_scalars(train_dir)
    self.assertAllClose([scalars["learning_rate"][s] for s in (1, 2, 3, 4)],
                        [2.0, 2.0, 0.0005, 0.0005])
    for s in (1, 2):
      self.assertEqual(scalars["losses/total_loss"][s], scalars["losses/batch_loss"][s])
    # Phase 2 adds 4e-5 * sum(w^2)/2 over Inception's conv kernels to the loss.
    l2 = 4e-5 * sum(float(np.sum(phase1_values[k].astype(np.float64) ** 2)) / 2 for k in stored)
    for s in (3, 4):
      self.assertAllClose(scalars["losses/total_loss"][s] - scalars["losses/batch_loss"][s], l2,
                          rtol=0.02)

  def test_phase2_with_adam_after_sgd_and_its_resume(self):
    # The small preset's optimizers: SGD in phase 1, Adam in phase 2 (training a random
    # Inception), with batch norm on the image embedding.
    tmp = self.create_tempdir().full_path
    pattern = td.write_shards(os.path.join(tmp, "data"), td.colour_examples(CAPTIONS), 2)
    train_dir = os.path.join(tmp, "train")
    config = td.tiny_config(summary_every_n_steps=1, train_inception_optimizer="Adam",
                            train_inception_learning_rate=0.0003)
    config.model.image_embedding_batch_norm = True
    options = trainer.TrainOptions(input_file_pattern=pattern, train_dir=train_dir,
                                   number_of_steps=2, seed=3)
    phase1 = trainer.train(config, options)
    reader = tf.train.load_checkpoint(phase1.last_checkpoint)
    slots = [k for k in reader.get_variable_to_shape_map() if ".OPTIMIZER_SLOT" in k]
    self.assertEqual(slots, [])  # Plain SGD keeps none.

    options.train_inception, options.number_of_steps = True, 4
    phase2 = trainer.train(config, options)
    self.assertEqual((phase2.start_step, phase2.global_step), (2, 4))
    reader = tf.train.load_checkpoint(phase2.last_checkpoint)
    names = reader.get_variable_to_shape_map()
    kernel = "model/inception/layer_with_weights-0/kernel"
    for slot in ("m", "v"):
      self.assertIn(f"{kernel}/.OPTIMIZER_SLOT/optimizer/{slot}/.ATTRIBUTES/VARIABLE_VALUE",
                    names)
      self.assertIn("model/image_embedding_norm/gamma/.OPTIMIZER_SLOT/optimizer/"
                    f"{slot}/.ATTRIBUTES/VARIABLE_VALUE", names)
    m_after_phase2 = reader.get_tensor(
        f"{kernel}/.OPTIMIZER_SLOT/optimizer/m/.ATTRIBUTES/VARIABLE_VALUE")
    self.assertGreater(float(np.max(np.abs(m_after_phase2))), 0.0)
    # Adam started afresh after SGD (its bias correction counts from 0), not at SGD's count.
    iterations = "optimizer/iter/.ATTRIBUTES/VARIABLE_VALUE"
    self.assertEqual(int(reader.get_tensor(iterations)), 2)

    # A restart of phase 2 continues from its checkpoint (step, weights, Adam state).
    options.number_of_steps = 6
    resumed = trainer.train(config, options)
    self.assertEqual((resumed.start_step, resumed.global_step), (4, 6))
    self.assertTrue(np.isfinite(resumed.last_loss))
    reader = tf.train.load_checkpoint(resumed.last_checkpoint)
    self.assertEqual(int(reader.get_tensor(iterations)), 4)
    scalars = td.read_scalars(train_dir)
    self.assertAllClose([scalars["learning_rate"][s] for s in range(1, 7)],
                        [2.0, 2.0, 0.0003, 0.0003, 0.0003, 0.0003])

  def test_config_errors_are_named_before_anything_is_written(self):
    config = td.tiny_config(train_inception_optimizer="Adagrad")
    with self.assertRaisesRegex(ValueError, "train_inception_optimizer 'Adagrad'"):
      optimization.make_optimizer(config.training, False, 0.1)
    tmp = self.create_tempdir().full_path
    pattern = td.write_shards(os.path.join(tmp, "data"), td.colour_examples(CAPTIONS), 1)
    train_dir = os.path.join(tmp, "train")
    # Phase 1 itself would use SGD, but the phase-2 typo is reported before anything is written.
    with self.assertRaisesRegex(ValueError, "train_inception_optimizer 'Adagrad'"):
      trainer.train(config, trainer.TrainOptions(
          input_file_pattern=pattern, train_dir=train_dir, number_of_steps=2))
    self.assertFalse(tf.io.gfile.exists(train_dir))
    config = td.tiny_config(optimizer="Momentum")
    with self.assertRaisesRegex(ValueError, "training.optimizer 'Momentum'"):
      optimization.make_optimizer(config.training, True, 0.1)
    config = td.tiny_config()
    config.model.inception_batch_norm_momentum = -0.1
    with self.assertRaisesRegex(ValueError, "inception_batch_norm_momentum"):
      trainer.train(config, trainer.TrainOptions(
          input_file_pattern=pattern, train_dir=train_dir, number_of_steps=2))
    self.assertFalse(tf.io.gfile.exists(train_dir))


if __name__ == "__main__":
  tf.test.main()
