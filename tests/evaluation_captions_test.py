"""Tests for im2txt.evaluation's caption metrics: beam-search captions of the val images."""

import os
import tempfile
from unittest import mock

import tensorflow as tf

from im2txt import caption_metrics
from im2txt import evaluation
from im2txt import image_processing
from im2txt import vocabulary
from tests import evaluation_testdata as testdata


class _FakeScorer:
  """Stands in for caption_metrics.CaptionScorer: records its input, returns fixed values."""

  METRICS = {name: 0.1 * (i + 1) for i, name in enumerate(caption_metrics.METRIC_NAMES)}
  instances = []

  def __init__(self):
    self.calls, self.closed = [], False
    _FakeScorer.instances.append(self)

  def score(self, references, candidates):
    self.calls.append(({k: list(v) for k, v in references.items()}, dict(candidates)))
    return dict(self.METRICS)

  def close(self):
    self.closed = True


class EvaluationCaptionsTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.TemporaryDirectory()
    root = cls.tmp.name
    cls.config = testdata.tiny_config()
    cls.pattern = testdata.write_val_split(os.path.join(root, "data"))
    cls.vocab = vocabulary.Vocabulary.from_file(testdata.write_vocab(root))
    cls.evaluator = evaluation.CheckpointEvaluator(cls.config, cls.pattern, cls.vocab)

  @classmethod
  def tearDownClass(cls):
    cls.tmp.cleanup()
    super().tearDownClass()

  def setUp(self):
    super().setUp()
    self.train_dir = tempfile.mkdtemp(dir=self.tmp.name)

  def test_evaluate_scores_the_beam_search_captions_with_the_coco_metrics(self):
    testdata.perturb_weights(self.evaluator.model, seed=3)
    path = testdata.save_checkpoint(self.train_dir, self.evaluator.model, 20, self.config)
    # The real scorer (Java) is tested in caption_metrics_test and evaluate_test; this one
    # records what it is given.
    with mock.patch.object(caption_metrics, "CaptionScorer", _FakeScorer):
      result = self.evaluator.evaluate(evaluation.CheckpointRef(path, 20))
    scorer = _FakeScorer.instances[-1]
    # The captions are the beam search's best, of images 11 and 12 in this order.
    images = tf.stack([image_processing.process_image(testdata.jpeg(i), self.config.model,
                                                      is_training=False) for i in (11, 12)])
    search = self.evaluator.search(images)
    expected = {
        image_id: self.vocab.sentence(
            search.word_ids[i, 0, :search.lengths[i, 0]].numpy().tolist())
        for i, image_id in enumerate((11, 12))}
    references = {11: ["a dog on grass .", "dog on the grass", "a dog ."],
                  12: ["a cat .", "cat on grass"]}
    self.assertEqual(scorer.calls, [(references, expected)])
    self.assertTrue(scorer.closed)
    self.assertEqual(result.caption_metrics, _FakeScorer.METRICS)
    self.assertEqual(result.caption_examples,
                     [(11, expected[11], references[11]), (12, expected[12], references[12])])
    self.assertEqual(result.step, 20)
    self.assertEqual(set(result.scalars()),
                     {"Perplexity", "Loss"} | set(caption_metrics.METRIC_NAMES))

  def test_scorer_failure_leaves_the_caption_metrics_out(self):
    path = testdata.save_checkpoint(self.train_dir, self.evaluator.model, 60, self.config)

    class BrokenScorer(_FakeScorer):
      def score(self, references, candidates):
        raise RuntimeError("METEOR's Java process exited with code 137")

    with mock.patch.object(caption_metrics, "CaptionScorer", BrokenScorer):
      result = self.evaluator.evaluate(evaluation.CheckpointRef(path, 60))
    self.assertTrue(_FakeScorer.instances[-1].closed)
    self.assertEqual(set(result.scalars()), {"Perplexity", "Loss"})
    self.assertEqual([i for i, _, _ in result.caption_examples], [11, 12])

  def test_compiled_once_across_checkpoints(self):
    for step, seed in ((30, 4), (40, 5)):
      testdata.perturb_weights(self.evaluator.model, seed=seed)
      path = testdata.save_checkpoint(self.train_dir, self.evaluator.model, step, self.config)
      self.evaluator.restore(evaluation.CheckpointRef(path, step))
      self.evaluator.generate_captions()
    # Nothing is retraced for a new checkpoint or a smaller last batch: memory does not grow.
    self.assertEqual(self.evaluator.search._compiled.experimental_get_tracing_count(), 1)

  def test_vocabulary_larger_than_the_model_is_a_clear_error(self):
    words = testdata.VOCAB_WORDS + ["w%d" % i for i in range(5)]
    with self.assertRaisesRegex(evaluation.EvaluationError,
                                "has 14 words .* but the model predicts 10"):
      evaluation.CheckpointEvaluator(self.config, self.pattern, vocabulary.Vocabulary(words))


if __name__ == "__main__":
  tf.test.main()
