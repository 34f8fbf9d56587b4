"""Tests for im2txt.evaluation: perplexity, restore errors, references, a concept head's
metrics (captions: see evaluation_captions_test)."""

import dataclasses
import math
import os
import tempfile

import numpy as np
import tensorflow as tf

from im2txt import sequence_example
from im2txt import vocabulary
from im2txt.evaluation import checkpoint_evaluator
from im2txt.evaluation import concept_metrics
from im2txt.model import image_processing
from tests import evaluation_testdata as testdata


class EvaluationTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.TemporaryDirectory()
    root = cls.tmp.name
    cls.config = testdata.tiny_config()
    cls.pattern = testdata.write_val_split(os.path.join(root, "data"))
    # One evaluator (one model, compiled once) serves every test, as in the real loop; without
    # a vocabulary it computes the perplexity only.
    cls.evaluator = checkpoint_evaluator.CheckpointEvaluator(cls.config, cls.pattern)

  @classmethod
  def tearDownClass(cls):
    cls.tmp.cleanup()
    super().tearDownClass()

  def setUp(self):
    super().setUp()
    self.train_dir = tempfile.mkdtemp(dir=self.tmp.name)

  def _hand_perplexity(self, model, num_examples):
    """exp(mean token loss) from the model's logits, one example at a time, in numpy."""
    records = tf.data.TFRecordDataset(sorted(tf.io.gfile.glob(self.pattern)))
    loss_sum, num_tokens = 0.0, 0
    for serialized in records.take(num_examples):
      parsed = sequence_example.parse_sequence_example_proto(serialized.numpy())
      image = image_processing.process_image(parsed["image_data"], self.config.model,
                                             is_training=False)
      ids = parsed["caption_ids"]
      logits = model({"images": image[tf.newaxis],
                      "input_seqs": tf.constant([ids[:-1]], tf.int64)}, training=False)
      logits = logits.numpy()[0].astype(np.float64)
      log_probs = logits - np.log(np.sum(np.exp(logits), axis=-1, keepdims=True))
      for t, target in enumerate(ids[1:]):
        loss_sum -= log_probs[t, target]
        num_tokens += 1
    return math.exp(loss_sum / num_tokens), loss_sum / num_tokens, num_tokens

  def test_perplexity_equals_hand_computation_from_the_checkpoint_weights(self):
    model = self.evaluator.model
    testdata.perturb_weights(model, seed=1)
    path = testdata.save_checkpoint(self.train_dir, model, 10, self.config)
    testdata.perturb_weights(model, seed=2)  # the restore must bring seed 1's weights back
    step = self.evaluator.restore(checkpoint_evaluator.CheckpointRef(path, 10))
    self.assertEqual(step, 10)
    perplexity, loss, num_examples, num_tokens = self.evaluator.perplexity()
    # 5 of the 7 examples, in batches of 3 (the second one cut to 2).
    hand_perplexity, hand_loss, hand_tokens = self._hand_perplexity(model, 5)
    self.assertEqual(num_examples, 5)
    self.assertEqual(num_tokens, hand_tokens)
    self.assertEqual(num_tokens, 6 + 4 + 5 + 7 + 4)  # tokens after <S> of records 0-4
    self.assertAllClose(loss, hand_loss, rtol=1e-5)
    self.assertAllClose(perplexity, hand_perplexity, rtol=1e-5)
    self.assertGreater(perplexity, 1.5)  # seed 1's weights are far from a trained model

  def test_reference_captions_are_grouped_by_image_id(self):
    refs = checkpoint_evaluator.load_caption_references(self.pattern, num_images=2)
    self.assertEqual(refs.image_ids, [11, 12])
    self.assertEqual(refs.image_data, [testdata.jpeg(11), testdata.jpeg(12)])
    # All captions of an image, from both shards; tokens (not ids: "the" is not <UNK>).
    self.assertEqual(refs.references, {11: ["a dog on grass .", "dog on the grass", "a dog ."],
                                       12: ["a cat .", "cat on grass"]})
    everything = checkpoint_evaluator.load_caption_references(self.pattern, num_images=100)
    self.assertEqual(everything.image_ids, [11, 12, 13])
    self.assertEqual(everything.references[13], ["a cat on a dog .", "cat"])

  def test_undecodable_images_are_not_captioned(self):
    path = os.path.join(self.tmp.name, "bad-00000-of-00001")
    with tf.io.TFRecordWriter(path) as writer:
      for image_id, data in ((5, b"not a jpeg"), (6, testdata.jpeg(6)), (5, testdata.jpeg(5))):
        writer.write(sequence_example.make_sequence_example(
            image_id, data, ["<S>", "a", "</S>"], [0, 2, 1]).SerializeToString())
    refs = checkpoint_evaluator.load_caption_references(path, num_images=2)
    self.assertEqual(refs.image_ids, [6])
    self.assertEqual(refs.references, {6: ["a"]})

  def _write_records(self, name, records, with_tokens, with_image_id=True):
    """(shard, image id, caption) records in one file; with_tokens=False drops the token
    strings, with_image_id=False the image id: together, records holding only what the original's
    reader reads."""
    vocab = vocabulary.Vocabulary(testdata.VOCAB_WORDS)
    path = os.path.join(self.tmp.name, name)
    with tf.io.TFRecordWriter(path) as writer:
      for _, image_id, caption in records:
        tokens = vocabulary.caption_tokens(caption)
        example = sequence_example.make_sequence_example(
            image_id, testdata.jpeg(image_id), tokens, vocab.ids(tokens))
        if not with_tokens:
          del example.feature_lists.feature_list[sequence_example.CAPTION_FEATURE]
        if not with_image_id:
          del example.context.feature[sequence_example.IMAGE_ID_FEATURE]
        writer.write(example.SerializeToString())
    return path

  def test_references_of_records_without_tokens_come_from_the_ids(self):
    vocab = vocabulary.Vocabulary(testdata.VOCAB_WORDS)
    in_vocab = [r for r in testdata.RECORDS if "the" not in r[2].split()]
    with_tokens = checkpoint_evaluator.load_caption_references(
        self._write_records("tokens", in_vocab, with_tokens=True), 100)
    without = self._write_records("ids-only", in_vocab, with_tokens=False)
    self.assertEqual(checkpoint_evaluator.load_caption_references(without, 100, vocab), with_tokens)
    # A word missing from the vocabulary is <UNK> in the ids.
    unknown = self._write_records("unknown", [(0, 11, "dog on the grass")], with_tokens=False)
    self.assertEqual(checkpoint_evaluator.load_caption_references(unknown, 1, vocab).references,
                     {11: ["dog on <UNK> grass"]})
    # Without a vocabulary the ids cannot be read: an error, not empty references.
    with self.assertRaisesRegex(ValueError, "image 11 has a caption without token strings"):
      checkpoint_evaluator.load_caption_references(without, 100)

  def test_records_without_image_ids_are_grouped_by_image(self):
    vocab = vocabulary.Vocabulary(testdata.VOCAB_WORDS)
    in_vocab = [r for r in testdata.RECORDS if "the" not in r[2].split()]
    with_ids = checkpoint_evaluator.load_caption_references(
        self._write_records("ids", in_vocab, with_tokens=True), 100)
    without = checkpoint_evaluator.load_caption_references(
        self._write_records("no-ids", in_vocab, with_tokens=False, with_image_id=False), 100,
        vocab)
    # The same images, in the same order, under ids -1, -2, ..., with the same references.
    renamed = {image_id: -1 - i for i, image_id in enumerate(with_ids.image_ids)}
    self.assertGreater(len(renamed), 1)
    self.assertEqual(without.image_ids, [renamed[i] for i in with_ids.image_ids])
    self.assertEqual(without.image_data, with_ids.image_data)
    self.assertEqual(without.references,
                     {renamed[i]: refs for i, refs in with_ids.references.items()})

  def test_compiled_once_across_checkpoints(self):
    for step, seed in ((30, 4), (40, 5)):
      testdata.perturb_weights(self.evaluator.model, seed=seed)
      path = testdata.save_checkpoint(self.train_dir, self.evaluator.model, step, self.config)
      self.evaluator.restore(checkpoint_evaluator.CheckpointRef(path, step))
      self.evaluator.perplexity()
    # Nothing is retraced for a new checkpoint or a shorter last batch: memory does not grow.
    self.assertEqual(self.evaluator.loss_sums.experimental_get_tracing_count(), 1)

  def test_deleted_checkpoint_is_reported_as_deleted(self):
    path = testdata.save_checkpoint(self.train_dir, self.evaluator.model, 50, self.config)
    testdata.delete_checkpoint_files(path)
    with self.assertRaisesRegex(checkpoint_evaluator.CheckpointDeletedError,
                                "ckpt-50 was deleted before it could be evaluated"):
      self.evaluator.restore(checkpoint_evaluator.CheckpointRef(path, 50))

  def test_checkpoint_of_another_model_is_a_clear_error(self):
    # A vocabulary of 20 words where the config says 10: the embedding has the wrong shape.
    wrong = tf.train.Checkpoint(
        step=tf.Variable(60, dtype=tf.int64),
        model=tf.train.Checkpoint(seq_embedding=tf.train.Checkpoint(
            embeddings=tf.Variable(tf.zeros([20, 16])))))
    path = wrong.save(os.path.join(self.train_dir, "wrong_vocab"))
    with self.assertRaisesRegex(checkpoint_evaluator.CheckpointMismatchError,
                                r"wrong_vocab-1: its variables do not match the model of the "
                                r"configuration \(vocab_size 10, .*shape"):
      self.evaluator.restore(checkpoint_evaluator.CheckpointRef(path, 60))
    # A checkpoint without most of the model's variables.
    partial = tf.train.Checkpoint(step=tf.Variable(70, dtype=tf.int64),
                                  model=tf.train.Checkpoint(other=tf.Variable(1.0)))
    path = partial.save(os.path.join(self.train_dir, "partial"))
    with self.assertRaisesRegex(checkpoint_evaluator.CheckpointMismatchError,
                                "partial-1: its variables do not match"):
      self.evaluator.restore(checkpoint_evaluator.CheckpointRef(path, 70))

  def test_captions_markdown(self):
    text = checkpoint_evaluator.captions_markdown([(7, "a | b", ["x", "y"]), (8, "", ["z"])])
    self.assertEqual(text.splitlines(), [
        "| image id | generated caption | reference captions |",
        "|---|---|---|",
        "| 7 | a \\| b | x<br>y |",
        "| 8 |   | z |",
    ])


class ConceptEvaluationTest(tf.test.TestCase):
  """A model with a concept head, evaluated on records with image/concept_ids."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.TemporaryDirectory()
    config = testdata.tiny_config()
    # 12 outputs for the records' 3 concepts: 9 columns no target names, as when num_concepts is
    # larger than concepts.txt.
    cls.config = dataclasses.replace(config, model=dataclasses.replace(
        config.model, num_concepts=12, concept_loss_weight=1.0, concept_input="start"))
    cls.pattern = testdata.write_val_split(os.path.join(cls.tmp.name, "data"),
                                           testdata.CONCEPT_WORDS)
    cls.evaluator = checkpoint_evaluator.CheckpointEvaluator(cls.config, cls.pattern)

  @classmethod
  def tearDownClass(cls):
    cls.tmp.cleanup()
    super().tearDownClass()

  def test_records_with_and_without_concept_ids_are_told_apart(self):
    self.assertEqual(testdata.image_concept_ids(testdata.CONCEPT_WORDS),
                     {11: [0, 2], 12: [1, 2], 13: [0, 1]})
    self.assertTrue(self.evaluator.evaluates_concepts)
    self.assertTrue(checkpoint_evaluator.records_carry_concept_ids(self.pattern))
    original = testdata.write_val_split(os.path.join(self.tmp.name, "original"))
    self.assertFalse(checkpoint_evaluator.records_carry_concept_ids(original))

  def _central_crops(self, image_ids):
    return tf.stack([image_processing.process_image(testdata.jpeg(i), self.config.model,
                                                    is_training=False) for i in image_ids])

  def _spread_concept_head(self, model, image_ids, seed):
    """Random concept head weights under which the images' logits differ widely (std 2):
    Inception's random features share a large common component, which the bias cancels."""
    features = model.image_features(self._central_crops(image_ids)).numpy().astype(np.float64)
    mean = features.mean(axis=0)
    kernel = np.random.RandomState(seed).normal(size=[features.shape[1], 12])
    kernel *= 2.0 / np.std((features - mean) @ kernel)
    model.concept_head.kernel.assign(kernel.astype(np.float32))
    model.concept_head.bias.assign((-mean @ kernel).astype(np.float32))

  def test_concept_scalars_equal_the_metrics_of_the_checkpoints_probabilities(self):
    model = self.evaluator.model
    image_ids = [11, 12, 13]
    testdata.perturb_weights(model, seed=1)
    self._spread_concept_head(model, image_ids, seed=1)
    path = testdata.save_checkpoint(os.path.join(self.tmp.name, "train"), model, 10, self.config)
    testdata.perturb_weights(model, seed=2)  # the restore must bring those weights back
    result = self.evaluator.evaluate(checkpoint_evaluator.CheckpointRef(path, 10))
    eval_dir = os.path.join(self.tmp.name, "eval")
    checkpoint_evaluator.write_summaries(tf.summary.create_file_writer(eval_dir), result)
    scalars, _ = testdata.read_events(eval_dir)

    # Independently: the checkpoint restored again, and the distinct images of the first 5
    # records (images 11, 12, 11, 13, 12), centrally cropped.
    testdata.perturb_weights(model, seed=3)
    tf.train.Checkpoint(model=model).restore(path).expect_partial()
    images = self._central_crops(image_ids)
    probabilities = model.concept_probabilities(images).numpy()
    logits = model.concept_logits({"images": images}).numpy().astype(np.float64)
    targets = np.zeros([3, 12])
    for row, concepts in enumerate([[0, 2], [1, 2], [0, 1]]):
      targets[row, concepts] = 1.0
    # Sigmoid cross-entropy, summed over the 12 concepts: log(1 + e^-x) on a target, else
    # log(1 + e^x).
    losses = np.sum(np.log1p(np.exp(np.where(targets > 0, -logits, logits))), axis=1)
    expected = {
        "concepts/loss": np.mean(losses),
        "concepts/precision_at_5": concept_metrics.precision_at_k(probabilities, targets, 5),
        "concepts/recall_at_5": concept_metrics.recall_at_k(probabilities, targets, 5),
        "concepts/mAP": concept_metrics.mean_average_precision(probabilities, targets),
    }
    self.assertEqual(result.step, 10)
    self.assertEqual(result.concept_metrics.keys(), expected.keys())
    self.assertEqual(set(scalars), {"Perplexity", "Loss", *expected})
    # atol: float32 logits that cancel a bias of about +-40, in batches of other sizes.
    for tag, value in expected.items():
      self.assertAllClose(result.concept_metrics[tag], value, rtol=1e-5, atol=1e-4)
      self.assertEqual([step for step, _ in scalars[tag]], [10])
      self.assertAllClose(scalars[tag][0][1], value, rtol=1e-5, atol=1e-4)
      self.assertIn(f"{tag} {result.concept_metrics[tag]:.4f}", result.summary_line())
    # The perplexity is still that of the 5 examples.
    self.assertEqual(result.num_examples, 5)
    # The test has teeth: the images' probabilities differ, and a mean over the 5 records
    # (images 11, 12, 11, 13, 12) would be another loss.
    self.assertGreater(np.ptp(probabilities, axis=0).max(), 0.3)
    self.assertNotAllClose(np.mean(losses[[0, 1, 0, 2, 1]]), expected["concepts/loss"],
                           rtol=1e-3)


if __name__ == "__main__":
  tf.test.main()
