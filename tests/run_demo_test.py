"""Tests for demo/run_demo.py's scoring of captions against the sample dataset's labels."""

import math
import unittest

from beam_jobs import make_sample_dataset as sample
from demo import run_demo


def _image(path, colour, shape):
  return sample.LabelledImage(1, path, sample.Label(colour, shape, "white"))


class CaptionAccuracyTest(unittest.TestCase):

  def test_counts_by_hand(self):
    images = [_image("/a.jpg", "red", "circle"), _image("/b.jpg", "blue", "star"),
              _image("/c.jpg", "green", "cross"), _image("/d.jpg", "orange", "square"),
              _image("/e.jpg", "purple", "triangle")]
    captions = {
        "/a.jpg": "a red circle on a white background",  # Right.
        "/b.jpg": "the star is red",  # Right shape, wrong colour.
        "/c.jpg": "a single green square",  # Right colour, wrong shape.
        "/d.jpg": "a picture of",  # Neither named.
        # /e.jpg: no caption (its file failed): wrong.
    }
    self.assertEqual(run_demo.caption_accuracy(images, captions),
                     run_demo.Accuracy(images=5, correct=1, colours=2, shapes=2, complete=3))

  def test_first_colour_and_shape_words_count(self):
    # "a yellow square ... a blue circle" names yellow and square first.
    images = [_image("/x.jpg", "yellow", "square")]
    score = run_demo.caption_accuracy(images, {"/x.jpg": "a yellow square and a blue circle"})
    self.assertEqual((score.correct, score.fraction(score.correct)), (1, 1.0))


class ParseCaptionsTest(unittest.TestCase):

  def test_json_lines_of_run_inference(self):
    text = ('{"file": "/d/a.jpg", "captions": ["a red circle", "a red square"], '
            '"log_probs": [-0.5, -2.0]}\n'
            '{"file": "/d/b.jpg", "captions": [], "log_probs": []}\n')
    parsed = run_demo.parse_captions(text)
    self.assertEqual(sorted(parsed), ["/d/a.jpg", "/d/b.jpg"])
    self.assertEqual(parsed["/d/a.jpg"][0], "a red circle")
    self.assertAlmostEqual(parsed["/d/a.jpg"][1], math.exp(-0.5))
    self.assertEqual(parsed["/d/b.jpg"], ("", 0.0))


if __name__ == "__main__":
  unittest.main()
