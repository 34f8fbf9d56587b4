"""Tests for im2txt.evaluation.concept_metrics: every value computed by hand."""

import math

from absl.testing import absltest
import numpy as np

from im2txt.evaluation import concept_metrics as cm

# The module docstring's example: 2 images, 4 concepts.
PROBABILITIES = np.array([[0.9, 0.8, 0.1, 0.3],
                          [0.2, 0.6, 0.7, 0.1]])
TARGETS = np.array([[1, 0, 0, 1],
                    [0, 1, 1, 0]], np.float32)


class TopKTest(absltest.TestCase):

  def test_docstring_example(self):
    # Image 0's top 2 (concepts 0, 1) holds 1 of its 2 targets; image 1's (2, 1) both of its 2.
    self.assertEqual(cm.top_k_hits(PROBABILITIES, TARGETS, 2).tolist(), [1, 2])
    self.assertAlmostEqual(cm.precision_at_k(PROBABILITIES, TARGETS, 2), (1 / 2 + 2 / 2) / 2)
    self.assertAlmostEqual(cm.recall_at_k(PROBABILITIES, TARGETS, 2), (1 / 2 + 2 / 2) / 2)

  def test_ties_put_the_lower_concept_id_first(self):
    # Concepts 0, 1 and 2 are tied: the top 2 are 0 and 1, whatever the targets.
    probabilities = np.array([[0.5, 0.5, 0.5, 0.1]])
    self.assertEqual(cm.top_k_hits(probabilities, np.array([[0, 0, 1, 0]]), 2).tolist(), [0])
    self.assertEqual(cm.top_k_hits(probabilities, np.array([[0, 1, 0, 0]]), 2).tolist(), [1])
    self.assertEqual(cm.top_k_hits(probabilities, np.array([[1, 1, 1, 0]]), 2).tolist(), [2])

  def test_images_without_targets_count_in_precision_not_in_recall(self):
    probabilities = np.array([[0.9, 0.1, 0.2],
                              [0.3, 0.8, 0.4],
                              [0.5, 0.6, 0.7]])
    targets = np.array([[1, 0, 1],     # top 2 (0, 2): 2 hits of 2 targets
                        [1, 0, 0],     # top 2 (1, 2): 0 hits of 1 target
                        [0, 0, 0]])    # no target: 0 hits
    self.assertAlmostEqual(cm.precision_at_k(probabilities, targets, 2), (2 / 2 + 0 + 0) / 3)
    self.assertAlmostEqual(cm.recall_at_k(probabilities, targets, 2), (2 / 2 + 0 / 1) / 2)
    self.assertTrue(math.isnan(cm.recall_at_k(probabilities, np.zeros([3, 3]), 2)))

  def test_k_beyond_the_concepts_takes_them_all(self):
    # k = 5 with 3 concepts: all 3 are the top "5", and precision divides by 3.
    probabilities = np.array([[0.1, 0.2, 0.3]])
    targets = np.array([[1, 0, 1]])
    self.assertAlmostEqual(cm.precision_at_k(probabilities, targets, 5), 2 / 3)
    self.assertAlmostEqual(cm.recall_at_k(probabilities, targets, 5), 1.0)


def _precision_at_each_positive(scores, labels):
  """The textbook AP for distinct scores: the mean, over positives, of the precision at its
  rank. An independent formulation (sklearn is not in the venv) to check `average_precision`."""
  order = np.argsort(-scores)
  ranked = labels[order]
  ranks = np.flatnonzero(ranked) + 1
  return np.mean([np.sum(ranked[:r]) / r for r in ranks])


class AveragePrecisionTest(absltest.TestCase):

  def test_hand_computed(self):
    # Positives at ranks 1 and 3: (1/1 + 2/3) / 2.
    self.assertAlmostEqual(cm.average_precision(np.array([0.9, 0.8, 0.7, 0.6]),
                                                np.array([1, 0, 1, 0])), (1 + 2 / 3) / 2)
    # Positives at ranks 2 and 4: (1/2 + 2/4) / 2.
    self.assertAlmostEqual(cm.average_precision(np.array([0.9, 0.8, 0.7, 0.6]),
                                                np.array([0, 1, 0, 1])), 0.5)
    self.assertAlmostEqual(cm.average_precision(np.array([0.2, 0.1]), np.array([1, 1])), 1.0)
    self.assertTrue(math.isnan(cm.average_precision(np.array([0.2, 0.1]), np.array([0, 0]))))

  def test_a_tie_is_one_threshold_whatever_the_order(self):
    # Thresholds 0.9 (0 of 1 positive), 0.5 (1 positive among 3: precision 1/3, recall +1/2),
    # 0.1 (2 among 4: precision 2/4, recall +1/2).
    expected = 1 / 3 * 1 / 2 + 2 / 4 * 1 / 2
    self.assertAlmostEqual(cm.average_precision(np.array([0.9, 0.5, 0.5, 0.1]),
                                                np.array([0, 1, 0, 1])), expected)
    self.assertAlmostEqual(cm.average_precision(np.array([0.9, 0.5, 0.5, 0.1]),
                                                np.array([0, 0, 1, 1])), expected)
    # All tied: precision = the share of positives, at recall 1.
    self.assertAlmostEqual(cm.average_precision(np.full(4, 0.3), np.array([1, 0, 0, 0])), 0.25)

  def test_equals_the_textbook_definition_without_ties(self):
    rng = np.random.RandomState(0)
    for _ in range(20):
      scores = rng.permutation(30) / 30.0  # distinct
      labels = (rng.uniform(size=30) < 0.3).astype(np.int64)
      labels[rng.randint(30)] = 1
      self.assertAlmostEqual(cm.average_precision(scores, labels),
                             _precision_at_each_positive(scores, labels))


class MeanAveragePrecisionTest(absltest.TestCase):

  def test_docstring_example(self):
    # Concepts 0, 2 and 3 rank their positive image first (AP 1); concept 1 second (AP 1/2).
    self.assertAlmostEqual(cm.mean_average_precision(PROBABILITIES, TARGETS), 3.5 / 4)

  def test_concepts_without_a_positive_are_left_out(self):
    # Two more columns that no target names (the head's unused columns): nothing changes,
    # although their AP against all-zero targets would be undefined.
    probabilities = np.concatenate([PROBABILITIES, [[0.99, 0.0], [0.0, 0.99]]], axis=1)
    targets = np.concatenate([TARGETS, np.zeros([2, 2], np.float32)], axis=1)
    self.assertAlmostEqual(cm.mean_average_precision(probabilities, targets), 3.5 / 4)
    self.assertTrue(math.isnan(cm.mean_average_precision(PROBABILITIES, np.zeros([2, 4]))))

  def test_concept_metrics_names_the_four_scalars(self):
    # k = 5 with 4 concepts: every concept is in each image's top "5".
    metrics = cm.concept_metrics(PROBABILITIES, TARGETS, np.array([1.0, 2.5]))
    self.assertEqual(list(metrics), ["concepts/loss", "concepts/precision_at_5",
                                     "concepts/recall_at_5", "concepts/mAP"])
    self.assertAlmostEqual(metrics["concepts/loss"], 1.75)
    self.assertAlmostEqual(metrics["concepts/precision_at_5"], (2 / 4 + 2 / 4) / 2)
    self.assertAlmostEqual(metrics["concepts/recall_at_5"], 1.0)
    self.assertAlmostEqual(metrics["concepts/mAP"], 0.875)


class ConceptRowsTest(absltest.TestCase):

  def test_one_row_per_image_the_first_record_kept(self):
    rows = cm.ConceptRows()
    # Records of images 11, 12, 11 | 13, 12, and two without an image id (-1).
    rows.add(np.array([11, 12, 11]), TARGETS[[0, 1, 0]], np.array([1.0, 2.0, 9.0]),
             PROBABILITIES[[0, 1, 0]])
    rows.add(np.array([13, 12, -1, -1]), TARGETS[[1, 1, 0, 1]], np.array([3.0, 9.0, 4.0, 5.0]),
             PROBABILITIES[[1, 1, 0, 1]])
    # Images 11, 12, 13 and each record without an id: 5 rows, the repeated records dropped.
    self.assertEqual(rows.losses, [1.0, 2.0, 3.0, 4.0, 5.0])
    self.assertEqual(np.stack(rows.targets).tolist(), TARGETS[[0, 1, 1, 0, 1]].tolist())
    self.assertAlmostEqual(rows.metrics()["concepts/loss"], 3.0)


if __name__ == "__main__":
  absltest.main()
