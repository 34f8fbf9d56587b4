"""Tests for im2txt.configuration: defaults, presets and the config.json round trip."""

import json
import os
import tempfile
import unittest

from im2txt import configuration


class ConfigurationTest(unittest.TestCase):

  def test_defaults_are_the_original_im2txt(self):
    c = configuration.default_config()
    self.assertEqual(c.model.vocab_size, 12000)
    self.assertEqual((c.model.image_height, c.model.image_width), (299, 299))
    self.assertEqual((c.model.resize_height, c.model.resize_width), (346, 346))
    self.assertEqual(c.model.embedding_size, 512)
    self.assertEqual(c.model.num_lstm_units, 512)
    self.assertAlmostEqual(c.model.lstm_dropout_keep_prob, 0.7)
    self.assertAlmostEqual(c.model.initializer_scale, 0.08)
    self.assertEqual(c.input.batch_size, 32)
    self.assertEqual(c.input.shuffle_buffer_size, 4600)
    self.assertEqual(c.training.num_examples_per_epoch, 586363)
    self.assertAlmostEqual(c.training.initial_learning_rate, 2.0)
    self.assertAlmostEqual(c.training.learning_rate_decay_factor, 0.5)
    self.assertAlmostEqual(c.training.num_epochs_per_decay, 8.0)
    self.assertAlmostEqual(c.training.train_inception_learning_rate, 0.0005)
    self.assertEqual((c.training.optimizer, c.training.train_inception_optimizer), ("SGD", "SGD"))
    self.assertTrue(c.model.distort_colors)
    self.assertFalse(c.model.image_embedding_batch_norm)
    self.assertAlmostEqual(c.model.inception_batch_norm_momentum, 0.99)
    self.assertAlmostEqual(c.training.clip_gradients, 5.0)
    self.assertEqual(c.training.max_checkpoints_to_keep, 5)
    self.assertEqual(c.eval.num_eval_examples, 10132)
    self.assertEqual(c.eval.min_global_step, 5000)
    self.assertEqual(c.inference.beam_size, 3)
    self.assertEqual(c.inference.max_caption_length, 20)

  def test_small_preset_is_small(self):
    c = configuration.small_config()
    self.assertEqual((c.model.image_height, c.model.image_width), (75, 75))
    self.assertLess(c.model.num_lstm_units, 512)
    self.assertIs(configuration.PRESETS["small"], configuration.small_config)
    # Settings for a randomly initialised Inception (the sample dataset); see small_config.
    self.assertFalse(c.model.distort_colors)
    self.assertTrue(c.model.image_embedding_batch_norm)
    self.assertAlmostEqual(c.model.inception_batch_norm_momentum, 0.9)
    self.assertEqual((c.model.lstm_dropout_keep_prob, c.model.inception_dropout_keep_prob),
                     (1.0, 1.0))
    self.assertEqual((c.training.optimizer, c.training.train_inception_optimizer),
                     ("SGD", "Adam"))
    # The concept head is on, its probabilities fed to the LSTM's first input (LSTM-A).
    self.assertEqual((c.model.num_concepts, c.model.concept_loss_weight, c.model.concept_input,
                      c.model.concept_targets), (32, 1.0, "start", "caption"))

  def test_without_concept_head_is_the_default_presets_decoder(self):
    default = configuration.default_config().model
    self.assertEqual(configuration.without_concept_head(default), default)
    small = configuration.without_concept_head(configuration.small_config().model)
    self.assertEqual(
        (small.num_concepts, small.concept_loss_weight, small.concept_input,
         small.concept_targets),
        (default.num_concepts, default.concept_loss_weight, default.concept_input,
         default.concept_targets))
    self.assertEqual(small.num_lstm_units, configuration.small_config().model.num_lstm_units)

  def test_json_round_trip(self):
    c = configuration.small_config()
    c.model.num_lstm_units = 17
    c.training.initial_learning_rate = 0.25
    c.inference.length_normalization_factor = 0.5
    with tempfile.TemporaryDirectory() as d:
      path = configuration.save_config(c, d)
      self.assertEqual(path, os.path.join(d, "config.json"))
      self.assertEqual(os.listdir(d), ["config.json"])
      self.assertEqual(configuration.load_config(d), c)
      self.assertEqual(configuration.load_config(path), c)

  def test_unknown_key_is_an_error_naming_it(self):
    with tempfile.TemporaryDirectory() as d:
      path = os.path.join(d, "config.json")
      with open(path, "w") as f:
        json.dump({"model": {"num_lstm_unit": 3}}, f)
      with self.assertRaisesRegex(ValueError, "num_lstm_unit"):
        configuration.load_config(path)
      with open(path, "w") as f:
        json.dump({"modle": {}}, f)
      with self.assertRaisesRegex(ValueError, "modle"):
        configuration.load_config(path)

  def test_missing_file_names_the_path(self):
    with tempfile.TemporaryDirectory() as d:
      with self.assertRaisesRegex(FileNotFoundError, "config.json"):
        configuration.load_config(d)

  def test_partial_file_keeps_defaults_for_missing_sections(self):
    c = configuration.config_from_dict({"model": {"vocab_size": 10}})
    self.assertEqual(c.model.vocab_size, 10)
    self.assertEqual(c.model.num_lstm_units, 512)
    self.assertEqual(c.training, configuration.TrainingConfig())


if __name__ == "__main__":
  unittest.main()
