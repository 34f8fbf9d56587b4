"""Tests for im2txt.evaluation's caption metrics: beam-search captions of the val images."""

import os
import tempfile
from unittest import mock

import numpy as np
import tensorflow as tf

from im2txt import vocabulary
from im2txt.evaluation import caption_metrics
from im2txt.evaluation import checkpoint_evaluator
from im2txt.model import image_processing
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


def _model_view(jpeg: bytes, config) -> np.ndarray:
  """The model's eval-mode view of a JPEG as uint8, computed here from the definition: decode,
  TF1's bilinear resize (no half-pixel centres) to resize_height x resize_width, central crop."""
  image = tf.io.decode_jpeg(jpeg, channels=3).numpy().astype(np.float32) / 255.0
  resized = tf.raw_ops.ResizeBilinear(
      images=image[np.newaxis], size=[config.resize_height, config.resize_width],
      align_corners=False, half_pixel_centers=False)[0].numpy()
  top = (config.resize_height - config.image_height) // 2
  left = (config.resize_width - config.image_width) // 2
  crop = resized[top:top + config.image_height, left:left + config.image_width]
  return np.round(crop * 255.0).astype(np.uint8)


class EvaluationCaptionsTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.TemporaryDirectory()
    root = cls.tmp.name
    cls.config = testdata.tiny_config()
    cls.pattern = testdata.write_val_split(os.path.join(root, "data"))
    cls.vocab = vocabulary.Vocabulary.from_file(testdata.write_vocab(root))
    cls.evaluator = checkpoint_evaluator.CheckpointEvaluator(cls.config, cls.pattern, cls.vocab)

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
      result = self.evaluator.evaluate(checkpoint_evaluator.CheckpointRef(path, 20))
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

  def test_summaries_show_each_sample_image_with_its_caption(self):
    results = []
    for step, seed in ((70, 6), (80, 4)):
      testdata.perturb_weights(self.evaluator.model, seed=seed)
      path = testdata.save_checkpoint(self.train_dir, self.evaluator.model, step, self.config)
      with mock.patch.object(caption_metrics, "CaptionScorer", _FakeScorer):
        results.append(self.evaluator.evaluate(checkpoint_evaluator.CheckpointRef(path, step)))
    eval_dir = tempfile.mkdtemp(dir=self.tmp.name)
    writer = tf.summary.create_file_writer(eval_dir)
    for result in results:
      checkpoint_evaluator.write_summaries(writer, result)
    writer.close()

    captions = [{i: caption for i, caption, _ in r.caption_examples} for r in results]
    # Non-empty and different at the two steps, so a caption shown at the wrong step would show.
    self.assertTrue(all(c for step_captions in captions for c in step_captions.values()))
    self.assertNotEqual(captions[0], captions[1])
    references = {11: ["a dog on grass .", "dog on the grass", "a dog ."],
                  12: ["a cat .", "cat on grass"]}
    images = testdata.read_images(eval_dir)
    # One card per sample image (num_text_summary_images = 2 of the val images 11, 12, 13).
    self.assertEqual(sorted(images), ["captions/image_11", "captions/image_12"])
    for image_id in (11, 12):
      expected = _model_view(testdata.jpeg(image_id), self.config.model).astype(np.int32)
      events = images[f"captions/image_{image_id}"]
      self.assertEqual([step for step, _, _ in events], [70, 80])
      for (step, pngs, description), step_captions in zip(events, captions):
        self.assertLen(pngs, 1)
        pixels = tf.io.decode_png(pngs[0]).numpy().astype(np.int32)
        self.assertEqual(pixels.shape, (75, 75, 3))
        # Equal up to the rounding of a float computed in another order (the JPEG is noise:
        # another crop or resize would differ by far more).
        self.assertLessEqual(np.abs(pixels - expected).max(), 1)
        self.assertIn(f"**Generated at step {step}:** {step_captions[image_id]}\n", description)
        for reference in references[image_id]:
          self.assertIn(f"\n- {reference}\n", description)
    # The caption table is at the same steps, with the same captions.
    _, texts = testdata.read_events(eval_dir)
    self.assertEqual([step for step, _ in texts["Captions"]], [70, 80])
    for (_, table), step_captions in zip(texts["Captions"], captions):
      for image_id, caption in step_captions.items():
        self.assertIn(f"\n| {image_id} | {caption} | ", table)

  def test_scorer_failure_leaves_the_caption_metrics_out(self):
    path = testdata.save_checkpoint(self.train_dir, self.evaluator.model, 60, self.config)

    class BrokenScorer(_FakeScorer):
      def score(self, references, candidates):
        raise RuntimeError("METEOR's Java process exited with code 137")

    with mock.patch.object(caption_metrics, "CaptionScorer", BrokenScorer):
      result = self.evaluator.evaluate(checkpoint_evaluator.CheckpointRef(path, 60))
    self.assertTrue(_FakeScorer.instances[-1].closed)
    self.assertEqual(set(result.scalars()), {"Perplexity", "Loss"})
    self.assertEqual([i for i, _, _ in result.caption_examples], [11, 12])

  def test_compiled_once_across_checkpoints(self):
    for step, seed in ((30, 4), (40, 5)):
      testdata.perturb_weights(self.evaluator.model, seed=seed)
      path = testdata.save_checkpoint(self.train_dir, self.evaluator.model, step, self.config)
      self.evaluator.restore(checkpoint_evaluator.CheckpointRef(path, step))
      self.evaluator.generate_captions()
    # Nothing is retraced for a new checkpoint or a smaller last batch: memory does not grow.
    self.assertEqual(self.evaluator.search._compiled.experimental_get_tracing_count(), 1)

  def test_vocabulary_larger_than_the_model_is_a_clear_error(self):
    words = testdata.VOCAB_WORDS + ["w%d" % i for i in range(5)]
    with self.assertRaisesRegex(checkpoint_evaluator.EvaluationError,
                                "has 14 words .* but the model predicts 10"):
      checkpoint_evaluator.CheckpointEvaluator(self.config, self.pattern,
                                               vocabulary.Vocabulary(words))


if __name__ == "__main__":
  tf.test.main()
