"""The concept head's evaluation metrics, in plain numpy: precision@k, recall@k and mAP.

Inputs are one row per evaluated image: `probabilities` [N, C] (the head's sigmoid outputs) and
`targets` [N, C] (1 for each concept the image's captions name, else 0). For 2 images, 4
concepts and k = 2:

    probabilities [[0.9, 0.8, 0.1, 0.3],     top 2: concepts 0, 1
                   [0.2, 0.6, 0.7, 0.1]]     top 2: concepts 2, 1
    targets       [[1, 0, 0, 1],
                   [0, 1, 1, 0]]
    precision@2 = mean(1/2, 2/2) = 0.75      recall@2 = mean(1/2, 2/2) = 0.75
    AP per concept, ranking the 2 images by its column:
      concept 0: [0.9, 0.2], positive image 0 ranked 1st -> 1.0;  concept 3 likewise -> 1.0
      concept 2: [0.1, 0.7], positive image 1 ranked 1st -> 1.0
      concept 1: [0.8, 0.6], positive image 1 ranked 2nd -> 1/2
    mAP = (1 + 1/2 + 1 + 1) / 4 = 0.875

Ties are broken deterministically:
- in the top k of an image, among equal probabilities the lower concept id comes first;
- in average precision, images with equal scores form one threshold (as in
  sklearn.metrics.average_precision_score): each positive of a tie counts with the precision of
  the whole tie, so the order of tied images never changes the result.
"""

from typing import Dict

import numpy as np

# The summary tags of `concept_metrics`, written beside the evaluator's perplexity.
LOSS_TAG = "concepts/loss"
PRECISION_TAG = "concepts/precision_at_5"
RECALL_TAG = "concepts/recall_at_5"
MAP_TAG = "concepts/mAP"
# The k of the tags above.
TOP_K = 5


def top_k_hits(probabilities: np.ndarray, targets: np.ndarray, k: int) -> np.ndarray:
  """[N] the number of each image's k most probable concepts that are among its targets.

  With fewer than k concepts, all of them are the top k."""
  k = min(k, probabilities.shape[1])
  # A stable sort on the negated probabilities: ties keep the lower concept id first.
  top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
  return np.take_along_axis(targets > 0, top, axis=1).sum(axis=1)


def precision_at_k(probabilities: np.ndarray, targets: np.ndarray, k: int) -> float:
  """Mean over images of (targets among the top k) / k; images without targets count (as 0)."""
  k = min(k, probabilities.shape[1])
  return float(np.mean(top_k_hits(probabilities, targets, k) / k))


def recall_at_k(probabilities: np.ndarray, targets: np.ndarray, k: int) -> float:
  """Mean over images with at least one target of (targets among the top k) / targets; NaN when
  no image has a target."""
  num_targets = (targets > 0).sum(axis=1)
  named = num_targets > 0
  if not named.any():
    return float("nan")
  hits = top_k_hits(probabilities, targets, k)
  return float(np.mean(hits[named] / num_targets[named]))


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
  """AP of ranking items by `scores` [N] for binary `labels` [N]: sum over the distinct score
  thresholds, highest first, of precision x the recall gained there. NaN without a positive.

      scores [0.9, 0.8, 0.7, 0.6], labels [1, 0, 1, 0] -> (1/1 + 2/3) / 2 = 0.8333
      scores [0.9, 0.5, 0.5, 0.1], labels [0, 1, 0, 1] -> 1/3 * 1/2 + 2/4 * 1/2 = 0.4167
      (the tie at 0.5 is one threshold: 1 positive among the first 3 images)
  """
  labels = np.asarray(labels) > 0
  num_positives = labels.sum()
  if not num_positives:
    return float("nan")
  order = np.argsort(-np.asarray(scores), kind="stable")
  sorted_scores = np.asarray(scores)[order]
  true_positives = np.cumsum(labels[order])
  # The last item of each run of equal scores closes one threshold.
  last = np.append(sorted_scores[1:] != sorted_scores[:-1], True)
  positives_at = true_positives[last]
  precision = positives_at / (np.flatnonzero(last) + 1)
  recall_gain = np.diff(positives_at, prepend=0) / num_positives
  return float(np.sum(precision * recall_gain))


def mean_average_precision(probabilities: np.ndarray, targets: np.ndarray) -> float:
  """Mean over the concepts with at least one positive image of the AP of ranking the images by
  that concept's probability; NaN when no concept has one.

  Concepts without a positive are left out: their AP is undefined, and they include the head's
  columns beyond concepts.txt (model.num_concepts may be larger), which no target ever names.
  """
  aps = [average_precision(probabilities[:, c], targets[:, c])
         for c in np.flatnonzero((targets > 0).any(axis=0))]
  return float(np.mean(aps)) if aps else float("nan")


class ConceptRows:
  """Collects the concept loss, targets and probabilities of the first record of each image.

  Concepts belong to an image, not to a caption: all records of an image have the same targets
  and (central crop, inference mode) the same probabilities. One row per record would weight
  images by their number of captions and rank an image's copies side by side in every concept's
  AP; one row per distinct image is what the metrics define.
  """

  def __init__(self):
    self._seen = set()
    self.losses, self.targets, self.probabilities = [], [], []

  def add(self, image_ids: np.ndarray, targets: np.ndarray, losses: np.ndarray,
          probabilities: np.ndarray) -> None:
    """One batch of records: image ids [B], targets [B, C], losses [B], probabilities [B, C]."""
    for i, image_id in enumerate(image_ids.tolist()):
      # A record without an image id (-1) cannot be matched with others: its own image.
      if image_id != -1 and image_id in self._seen:
        continue
      self._seen.add(image_id)
      self.losses.append(losses[i])
      self.targets.append(targets[i])
      self.probabilities.append(probabilities[i])

  def metrics(self) -> Dict[str, float]:
    """concept_metrics of the rows collected so far (at least one)."""
    return concept_metrics(np.stack(self.probabilities), np.stack(self.targets),
                           np.array(self.losses))


def concept_metrics(probabilities: np.ndarray, targets: np.ndarray,
                    losses: np.ndarray) -> Dict[str, float]:
  """{tag: value} of the four concept scalars; `losses` [N]: each image's concept loss
  (concept_head.concept_losses)."""
  return {
      LOSS_TAG: float(np.mean(losses)),
      PRECISION_TAG: precision_at_k(probabilities, targets, TOP_K),
      RECALL_TAG: recall_at_k(probabilities, targets, TOP_K),
      MAP_TAG: mean_average_precision(probabilities, targets),
  }
