"""Tests for the visual-concept head (im2txt.model.concept_head and its use in the model, the
input pipeline and the trainer)."""

import dataclasses
import math
import os
import tempfile

import numpy as np
import tensorflow as tf

from im2txt import concepts
from im2txt import configuration
from im2txt import sequence_example
from im2txt import vocabulary
from im2txt.data import inputs
from im2txt.inference import captioning
from im2txt.model import concept_head
from im2txt.model import image_processing
from im2txt.model import show_and_tell_model
from im2txt.training import train_state
from im2txt.training import trainer
from tests import training_testdata as td


def _concept_config(num_concepts=6, weight=1.0, concept_input="start", **kwargs):
  config = td.tiny_config(vocab_size=20, units=16, **kwargs)
  config.model = dataclasses.replace(config.model, num_concepts=num_concepts,
                                     concept_loss_weight=weight, concept_input=concept_input)
  return config


class TargetsAndLossTest(tf.test.TestCase):

  def test_multi_hot(self):
    ids = tf.constant([[0, 2, -1], [1, 1, -1], [-1, -1, -1]])
    self.assertAllEqual(concept_head.multi_hot(ids, 3), [[1, 0, 1], [0, 1, 0], [0, 0, 0]])
    self.assertAllEqual(concept_head.multi_hot(tf.zeros([2, 0], tf.int32), 3), tf.zeros([2, 3]))

  def test_loss_is_summed_sigmoid_cross_entropy(self):
    # The module docstring's worked example, by hand: log(1 + e^-x) for a named concept,
    # log(1 + e^x) for one not named.
    loss = concept_head.concept_losses(tf.constant([[2.0, -1.0, 0.0]]),
                                       tf.constant([[1.0, 0.0, 1.0]]))
    expected = math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1)) + math.log(2)
    self.assertAllClose(loss, [expected], rtol=1e-6)
    self.assertAllClose(expected, 1.1333, atol=1e-4)

  def test_bad_settings_are_named(self):
    config = td.tiny_config().model
    for change, field in ((dict(num_concepts=-1), "num_concepts"),
                          (dict(num_concepts=4, concept_input="end"), "concept_input"),
                          (dict(num_concepts=4, concept_targets="any"), "concept_targets"),
                          (dict(concept_loss_weight=1.0), "num_concepts"),
                          (dict(concept_input="start"), "num_concepts")):
      with self.assertRaisesRegex(ValueError, field):
        show_and_tell_model.ShowAndTellModel(dataclasses.replace(config, **change))


class ModelTest(tf.test.TestCase):

  def test_default_model_has_no_concept_variable(self):
    # With num_concepts 0 (the default preset) the model is the original's: the same variables
    # (show_and_tell_model_test counts them at the default sizes).
    model = show_and_tell_model.ShowAndTellModel(td.tiny_config().model)
    model.build_all()
    self.assertIsNone(model.concept_head)
    self.assertIsNone(model.concept_embedding)
    self.assertFalse([v.name for v in model.weights if "concept" in v.name])

  def test_head_and_projection_sizes(self):
    model = show_and_tell_model.ShowAndTellModel(_concept_config(num_concepts=7).model)
    model.build_all()
    self.assertEqual(model.concept_head.kernel.shape, (2048, 7))
    self.assertEqual(model.concept_embedding.kernel.shape, (7, 16))
    self.assertIsNone(model.concept_embedding.bias)

  def test_inference_steps_reproduce_teacher_forced_logits(self):
    # For each way of feeding the concepts, beam search's two methods compute what training
    # computes: the same log-probabilities after the same prefix.
    images = tf.random.stateless_uniform([3, 75, 75, 3], seed=[1, 2], minval=-1, maxval=1)
    seqs = tf.constant([[1, 5, 9, 4], [1, 7, 3, 2], [1, 3, 3, 8]], tf.int64)
    for concept_input in concept_head.CONCEPT_INPUTS:
      tf.keras.utils.set_random_seed(3)
      model = show_and_tell_model.ShowAndTellModel(
          _concept_config(concept_input=concept_input).model)
      model.build_all()
      model.calibrate_inception_batch_norm(images)
      logits, concept_logits = model.caption_and_concept_logits(
          {"images": images, "input_seqs": seqs}, training=False)
      self.assertAllClose(tf.sigmoid(concept_logits), model.concept_probabilities(images))
      state = model.initial_state(images)
      self.assertLen(state, 3 if concept_input == "every_step" else 2)
      for t in range(4):
        log_probs, state = model.step(seqs[:, t], state)
        self.assertAllClose(log_probs, tf.nn.log_softmax(logits[:, t]), atol=1e-5,
                            msg=concept_input)

  def test_concepts_reach_the_decoder_but_caption_gradient_stops_at_the_head(self):
    images = tf.random.stateless_uniform([2, 75, 75, 3], seed=[4, 5], minval=-1, maxval=1)
    seqs = tf.constant([[1, 5, 9], [1, 7, 3]], tf.int64)
    model = show_and_tell_model.ShowAndTellModel(_concept_config(concept_input="start").model)
    model.build_all()
    with tf.GradientTape() as tape:
      logits = model({"images": images, "input_seqs": seqs}, training=True)
    grads = tape.gradient(logits, [model.concept_head.kernel, model.concept_embedding.kernel])
    self.assertIsNone(grads[0])
    self.assertGreater(float(tf.reduce_max(tf.abs(grads[1]))), 0.0)


def _write_records(directory, examples, concept_ids=None):
  """examples: (image_id, jpeg, caption word ids); concept_ids: per example, or None."""
  tf.io.gfile.makedirs(directory)
  path = os.path.join(directory, "train-00000-of-00001")
  with tf.io.TFRecordWriter(path) as writer:
    for k, (image_id, jpeg, caption) in enumerate(examples):
      ids = [td.START_ID] + list(caption) + [td.END_ID]
      record = sequence_example.make_sequence_example(
          image_id, jpeg, [f"w{t}" for t in ids], ids,
          concept_ids=None if concept_ids is None else concept_ids[k])
      writer.write(record.SerializeToString())
  return path


class InputsTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.tmp = tempfile.mkdtemp()
    self.examples = td.colour_examples({0: [3, 4], 1: [5, 6, 7], 2: [8]})

  def _targets(self, pattern, config, concept_table=None):
    dataset = inputs.make_dataset(pattern, config, is_training=False, batch_size=3,
                                  concept_table=concept_table)
    return next(iter(dataset))["concept_targets"].numpy()

  def test_targets_from_the_records_concept_ids(self):
    pattern = _write_records(self.tmp, self.examples, [[0, 3], [], [5, 1, 3]])
    self.assertAllEqual(self._targets(pattern, _concept_config()),
                        [[1, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 0], [0, 1, 0, 1, 0, 1]])

  def test_targets_from_the_caption_through_the_table(self):
    pattern = _write_records(self.tmp, self.examples)
    table = [-1] * 20
    table[4], table[6], table[8] = 2, 0, 5  # words 4, 6 and 8 are concepts 2, 0 and 5
    self.assertAllEqual(self._targets(pattern, _concept_config(), table),
                        [[0, 0, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1]])

  def test_concept_id_outside_the_head_is_named(self):
    pattern = _write_records(self.tmp, self.examples, [[0], [6], [1]])
    dataset = inputs.make_dataset(pattern, _concept_config(), is_training=False, batch_size=3)
    with self.assertRaises(tf.errors.InvalidArgumentError) as raised:
      next(iter(dataset))
    error = inputs.input_error(raised.exception, pattern, 20, "cfg.json")
    self.assertRegex(str(error), r"train-00000-of-00001: record 1 has concept id 6, outside "
                                 r"the model's concept head \(model.num_concepts in cfg.json\)")


class TrainTest(tf.test.TestCase):
  """The trainer with a concept head, on records with and without image/concept_ids."""

  def setUp(self):
    super().setUp()
    self.tmp = tempfile.mkdtemp()
    # Colour i is named by caption word 3 + i; the concepts are those words, in that order.
    self.captions = {i: [3 + i, 10] for i in range(4)}
    self.examples = td.colour_examples(self.captions)
    words = ["w0", "<S>", "</S>"] + [f"colour{i}" for i in range(4)] + ["w7", "w8", "w9", "the"]
    self.vocab_words = words

  def _train(self, data_dir, steps, concept_targets="image", **kwargs):
    # Phase 1: the random Inception (batch norm calibrated) stays frozen, the head learns.
    config = _concept_config(num_concepts=4, concept_input="none", batch_size=4,
                             optimizer="Adam", initial_learning_rate=0.0001)
    config.model.distort_colors = False  # The concepts are colours.
    config.model.concept_targets = concept_targets
    options = trainer.TrainOptions(
        input_file_pattern=os.path.join(data_dir, "train-*"),
        train_dir=os.path.join(data_dir, "model"), number_of_steps=steps,
        inception_checkpoint_file="random", seed=2, **kwargs)
    result = trainer.train(config, options)
    model, _, _ = captioning.load_model(options.train_dir)
    images = tf.stack([image_processing.process_image(jpeg, config.model, is_training=False)
                       for _, jpeg, _ in self.examples])
    return result, model.concept_probabilities(images).numpy()

  def _write_vocabulary(self, data_dir, with_concepts=True):
    vocabulary.write_word_counts(os.path.join(data_dir, "word_counts.txt"),
                                 [(w, 10) for w in self.vocab_words[:3]] +
                                 [(w, 5) for w in self.vocab_words[3:]])
    if with_concepts:
      concepts.write_concepts(os.path.join(data_dir, concepts.CONCEPTS_FILENAME),
                              [(f"colour{i}", 5) for i in range(4)])

  def test_head_learns_each_images_concept(self):
    data = os.path.join(self.tmp, "with_ids")
    _write_records(data, self.examples, [[i] for i in range(4)])
    self._write_vocabulary(data)
    result, probs = self._train(data, 60)
    self.assertTrue(np.isfinite(result.last_loss))
    # Each image's own concept is its most probable one.
    self.assertAllEqual(np.argmax(probs, axis=1), [0, 1, 2, 3])
    scalars = td.read_scalars(os.path.join(data, "model"))
    self.assertIn("losses/concept_loss", scalars)
    curve = scalars["losses/concept_loss"]
    self.assertLess(curve[max(curve)], curve[min(curve)] / 2)

  def test_head_has_its_own_optimizer_under_phase_1s_sgd_and_resumes_it(self):
    # The original's phase 1 (SGD at 2.0, clipping at 5) with the concept loss at weight 1: the
    # head learns with its own Adam (train_inception_learning_rate), its gradient clipped apart.
    data = os.path.join(self.tmp, "own_optimizer")
    _write_records(data, self.examples, [[i] for i in range(4)])
    self._write_vocabulary(data)
    config = _concept_config(num_concepts=4, concept_input="start", batch_size=4,
                             train_inception_learning_rate=0.001)
    config.model.distort_colors = False
    self.assertEqual((config.training.optimizer, config.training.initial_learning_rate),
                     ("SGD", 2.0))

    def train(train_dir, steps):
      options = trainer.TrainOptions(input_file_pattern=os.path.join(data, "train-*"),
                                     train_dir=train_dir, number_of_steps=steps,
                                     inception_checkpoint_file="random", seed=2)
      return trainer.train(config, options)

    straight = os.path.join(data, "straight")
    train(straight, 40)
    curve = td.read_scalars(straight)["losses/concept_loss"]
    self.assertLess(curve[max(curve)], curve[min(curve)] / 2)
    names = [name for name, _ in tf.train.list_variables(tf.train.latest_checkpoint(straight))]
    self.assertTrue(any(n.startswith("concept_optimizer/") for n in names))
    # Interrupted at step 20 and resumed: the head's optimizer goes on from its state (its
    # iteration count 40 at step 40, not 20; its moments restored).
    resumed = os.path.join(data, "resumed")
    train(resumed, 20)
    self.assertEqual(train(resumed, 40).start_step, 20)
    iterations = "concept_optimizer/iter/.ATTRIBUTES/VARIABLE_VALUE"
    self.assertIn(iterations, names)
    self.assertEqual(tf.train.load_variable(resumed, iterations), 40)
    self.assertEqual(tf.train.load_variable(straight, iterations), 40)

  def test_records_without_concept_ids_use_their_captions(self):
    data = os.path.join(self.tmp, "without_ids")
    _write_records(data, self.examples)
    self._write_vocabulary(data)
    with self.assertLogs(level="INFO") as logs:
      _, probs = self._train(data, 60)
    self.assertTrue(any("carry no image/concept_ids" in line for line in logs.output))
    self.assertAllEqual(np.argmax(probs, axis=1), [0, 1, 2, 3])

  def test_caption_targets_come_from_each_records_own_caption(self):
    # Every record's image/concept_ids name all four concepts: as targets they teach nothing.
    # With model.concept_targets "caption" each record's own caption names its image's colour.
    data = os.path.join(self.tmp, "caption_targets")
    _write_records(data, self.examples, [[0, 1, 2, 3]] * len(self.examples))
    self._write_vocabulary(data)
    config = _concept_config(num_concepts=4)
    config.model.concept_targets = "caption"
    options = trainer.TrainOptions(input_file_pattern=os.path.join(data, "train-*"),
                                   train_dir=os.path.join(data, "model"), number_of_steps=1)
    table = train_state.concept_table(config, options)
    self.assertEqual(table[3:7], [0, 1, 2, 3])  # Words colour0..colour3 are concepts 0..3.
    self.assertEqual(set(table[:3] + table[7:]), {-1})
    config.model.concept_targets = "image"
    self.assertIsNone(train_state.concept_table(config, options))
    with self.assertLogs(level="INFO") as logs:
      _, probs = self._train(data, 60, concept_targets="caption")
    self.assertTrue(any("concept_targets=caption" in line for line in logs.output))
    self.assertAllEqual(np.argmax(probs, axis=1), [0, 1, 2, 3])

  def test_without_concepts_file_is_an_error_before_anything_is_written(self):
    data = os.path.join(self.tmp, "no_concepts")
    _write_records(data, self.examples)
    self._write_vocabulary(data, with_concepts=False)
    with self.assertRaisesRegex(ValueError, "carry no image/concept_ids and there is no "
                                            "concepts.txt"):
      self._train(data, 2)
    self.assertFalse(tf.io.gfile.exists(os.path.join(data, "model")))

  def test_concept_objective_trains_inception_and_the_head_only(self):
    data = os.path.join(self.tmp, "pretrain")
    _write_records(data, self.examples, [[i] for i in range(4)])
    self._write_vocabulary(data)
    config = _concept_config(num_concepts=4, weight=0.0, concept_input="none",
                             train_inception_optimizer="Adam")
    train_dir = os.path.join(data, "model")
    options = trainer.TrainOptions(input_file_pattern=os.path.join(data, "train-*"),
                                   train_dir=train_dir, number_of_steps=0,
                                   inception_checkpoint_file="random", seed=2)
    start = trainer.train(config, options).last_checkpoint
    options = dataclasses.replace(options, number_of_steps=3, train_inception=True,
                                  objective="concepts")
    with self.assertLogs(level="INFO") as logs:
      result = trainer.train(config, options)
    self.assertEqual((result.start_step, result.global_step), (0, 3))
    self.assertTrue(any("Training the concept head and Inception on the concept loss" in line
                        for line in logs.output))
    before, after = tf.train.load_checkpoint(start), tf.train.load_checkpoint(
        result.last_checkpoint)
    changed = {name: not np.array_equal(before.get_tensor(name), after.get_tensor(name))
               for name in before.get_variable_to_shape_map()
               if name.startswith("model/") and "OPTIMIZER_SLOT" not in name}
    trained = {name for name, differs in changed.items() if differs}
    self.assertTrue(any(name.startswith("model/concept_head/") for name in trained))
    self.assertTrue(any(name.startswith("model/inception/") for name in trained))
    decoder = ("model/lstm", "model/logits", "model/seq_embedding", "model/image_embedding")
    self.assertTrue(any(name.startswith(decoder) for name in changed))
    self.assertFalse([name for name in trained if name.startswith(decoder)])
    # Then phase 1 with concept_loss_weight 0: the decoder learns to caption, the pretrained
    # head is left as it is (the caption loss does not reach it).
    options = dataclasses.replace(options, number_of_steps=5, train_inception=False,
                                  objective="cross_entropy")
    phase1 = tf.train.load_checkpoint(trainer.train(config, options).last_checkpoint)
    for name in changed:
      differs = not np.array_equal(after.get_tensor(name), phase1.get_tensor(name))
      self.assertEqual(differs, name.startswith(("model/lstm", "model/logits",
                                                 "model/seq_embedding", "model/image_embedding")),
                       name)

  def test_concept_objective_needs_a_head(self):
    data = os.path.join(self.tmp, "no_head")
    _write_records(data, self.examples)
    options = trainer.TrainOptions(input_file_pattern=os.path.join(data, "train-*"),
                                   train_dir=os.path.join(data, "model"), number_of_steps=2,
                                   objective="concepts", inception_checkpoint_file="random")
    with self.assertRaisesRegex(ValueError, "--objective=concepts trains the concept head, but "
                                            "the model has none"):
      trainer.train(td.tiny_config(), options)
    self.assertFalse(tf.io.gfile.exists(options.train_dir))

  def test_more_concepts_than_the_head_is_an_error(self):
    data = os.path.join(self.tmp, "too_many")
    _write_records(data, self.examples, [[0]] * 4)
    self._write_vocabulary(data)
    concepts.write_concepts(os.path.join(data, concepts.CONCEPTS_FILENAME),
                            [(f"c{i}", 1) for i in range(5)])
    with self.assertRaisesRegex(ValueError, "has 5 concepts, more than the model's concept "
                                            "head predicts"):
      self._train(data, 2)


if __name__ == "__main__":
  tf.test.main()
