"""Tests for im2txt.caption_metrics: the wrapper gives pycocoevalcap's own numbers."""

import math
import os
import shutil
import tempfile
import unittest
from unittest import mock

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer import ptbtokenizer
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from im2txt.evaluation import caption_metrics

# Captions as the evaluator passes them: our tokenizer's tokens joined by spaces.
REFERENCES = {
    101: ["a man riding a wave on top of a surfboard .",
          "a surfer rides a large wave in the ocean .",
          "a person on a surf board riding a wave ."],
    102: ["two dogs playing with a frisbee in the grass .",
          "a couple of dogs running on a field ."],
    103: ["a plate of food with broccoli and rice .",
          "a white plate topped with meat , rice and vegetables .",
          "food on a plate , on a wooden table ."],
    104: ["a red double decker bus driving down a street ."],
}
CANDIDATES = {
    101: "a man riding a wave on a surfboard .",
    102: "a dog running in the grass .",
    103: "a plate of food with rice and broccoli .",
    104: "",  # beam search may produce an empty caption
}


def _direct_scores(references, candidates, meteor_scorer, tokenizer_dir):
  """pycocoevalcap run directly, as its COCOEvalCap.evaluate does (minus SPICE).

  Its PTBTokenizer writes a temporary file next to its jar, which fails where the package is
  read-only (Bazel's sandbox): it runs unchanged from a writable copy of its directory.
  """
  tokenizer = PTBTokenizer()
  with mock.patch.object(ptbtokenizer, "__file__",
                         os.path.join(tokenizer_dir, "ptbtokenizer.py")):
    gts = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in references.items()})
    res = tokenizer.tokenize({k: [{"caption": candidates[k]}] for k in references})
  bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
  meteor, _ = meteor_scorer.compute_score(gts, res)
  rouge, _ = Rouge().compute_score(gts, res)
  cider, _ = Cider().compute_score(gts, res)
  return gts, res, dict(zip(caption_metrics.METRIC_NAMES, list(bleu) + [meteor, rouge, cider]))


class CaptionMetricsTest(unittest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    # Each METEOR process loads its paraphrase table for several seconds: start both now, in
    # parallel, and share them between the tests.
    cls.scorer = caption_metrics.CaptionScorer()
    cls.direct_meteor = Meteor()
    cls.tmp = tempfile.TemporaryDirectory()
    cls.tokenizer_dir = shutil.copytree(os.path.dirname(ptbtokenizer.__file__),
                                        os.path.join(cls.tmp.name, "tokenizer"))

  @classmethod
  def tearDownClass(cls):
    cls.scorer.close()
    cls.direct_meteor.__del__()
    cls.tmp.cleanup()
    super().tearDownClass()

  def test_scores_match_pycocoevalcap_run_directly(self):
    ours = self.scorer.score(REFERENCES, CANDIDATES)
    # The same scorer (one Java process) serves several evaluations.
    again = self.scorer.score(REFERENCES, CANDIDATES)
    gts, res, direct = _direct_scores(REFERENCES, CANDIDATES, self.direct_meteor,
                                      self.tokenizer_dir)
    self.assertEqual(list(ours), list(caption_metrics.METRIC_NAMES))
    for name in caption_metrics.METRIC_NAMES:
      self.assertAlmostEqual(ours[name], direct[name], places=12, msg=name)
      self.assertEqual(ours[name], again[name], msg=name)
    # Sanity of the fixture: the metrics are not degenerate.
    for name in caption_metrics.METRIC_NAMES:
      self.assertGreater(ours[name], 0.0, msg=name)
      self.assertTrue(math.isfinite(ours[name]), msg=name)
    # Our tokenizer gives the same tokens as pycocoevalcap's (punctuation dropped).
    self.assertEqual(caption_metrics.ptb_tokenize({k: v for k, v in REFERENCES.items()}), gts)
    self.assertEqual(res[101], ["a man riding a wave on a surfboard"])
    self.assertEqual(res[104], [""])

  def test_exact_captions_score_one(self):
    refs = {1: ["a cat sitting on a red couch ."], 2: ["two people walking on a beach ."]}
    cands = {1: "a cat sitting on a red couch .", 2: "two people walking on a beach ."}
    metrics = self.scorer.score(refs, cands)
    for name in caption_metrics.BLEU_NAMES + ("ROUGE-L",):
      self.assertAlmostEqual(metrics[name], 1.0, places=6, msg=name)

  def test_mismatched_ids_are_clear_errors(self):
    scorer = self.scorer
    with self.assertRaisesRegex(ValueError, r"No generated caption for image id\(s\) \[2\]"):
      scorer.score({1: ["a b"], 2: ["c d"]}, {1: "a b"})
    with self.assertRaisesRegex(ValueError, r"No references for image id\(s\) \[3\]"):
      scorer.score({1: ["a b"]}, {1: "a b", 3: "x"})
    with self.assertRaisesRegex(ValueError, "Image id 1: references must be a non-empty"):
      scorer.score({1: []}, {1: "a b"})

  def test_dead_meteor_process_is_a_clear_error(self):
    # Killed at once, this process never loads its paraphrase table (no waiting).
    scorer = caption_metrics.CaptionScorer(tokenize=False)
    try:
      scorer._meteor.meteor_p.kill()
      scorer._meteor.meteor_p.wait()
      with self.assertRaisesRegex(RuntimeError, "METEOR's Java process .* exited with code"):
        scorer.score({1: ["a b c"]}, {1: "a b"})
    finally:
      scorer.close()  # must not block although pycocoevalcap's lock is still held
    self.assertIsNone(scorer._meteor)
    with self.assertRaisesRegex(ValueError, "after close"):
      scorer.score({1: ["a b"]}, {1: "a b"})


if __name__ == "__main__":
  unittest.main()
