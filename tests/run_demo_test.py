"""Tests for demo/run_demo.py's scoring of captions against the sample dataset's labels."""

import math
import os
import sys
import tempfile
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

  def test_concepts_of_run_inference(self):
    text = ('[{"file": "/d/a.jpg", "captions": ["a red circle"], "log_probs": [-0.5], '
            '"concepts": [{"word": "red", "probability": 0.98}, '
            '{"word": "circle", "probability": 0.5}]},\n'
            ' {"file": "/d/b.jpg", "captions": [], "log_probs": []}]')
    self.assertEqual(run_demo.parse_concepts(text),
                     {"/d/a.jpg": [("red", 0.98), ("circle", 0.5)], "/d/b.jpg": []})
    self.assertEqual(run_demo.parse_captions(text)["/d/a.jpg"][0], "a red circle")


# The child reports the niceness of its main thread and of a thread it starts (as TensorFlow's
# are), after a pause that leaves the parent time to have set it.
_REPORT_NICENESS = """
import os, threading, time
time.sleep(0.5)
seen = []
thread = threading.Thread(
    target=lambda: seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
thread.start()
thread.join()
print(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()), seen[0])
"""


class StartNicedTest(unittest.TestCase):

  def test_child_and_its_threads_run_below_this_process(self):
    own = os.getpriority(os.PRIO_PROCESS, 0)
    with tempfile.TemporaryFile("w+") as log:
      process = run_demo.start_niced([sys.executable, "-c", _REPORT_NICENESS],
                                     run_demo.EVALUATOR_NICENESS, log)
      self.assertEqual(os.getpriority(os.PRIO_PROCESS, process.pid),
                       min(19, own + run_demo.EVALUATOR_NICENESS))
      self.assertEqual(process.wait(timeout=60), 0)
      log.seek(0)
      expected = min(19, own + run_demo.EVALUATOR_NICENESS)
      self.assertEqual(log.read().split(), [str(expected), str(expected)])

  def test_a_command_that_cannot_start_raises(self):
    with tempfile.TemporaryFile("w+") as log:
      with self.assertRaises(OSError):
        run_demo.start_niced(["/nonexistent/evaluate"], 10, log)


if __name__ == "__main__":
  unittest.main()
