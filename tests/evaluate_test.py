"""Tests for the //im2txt:evaluate binary: once as the demo runs it (a subprocess), and its
main() in this process for exit codes and signals."""

import logging as std_logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from absl import logging

from im2txt import evaluate
from im2txt.evaluation import caption_metrics
from im2txt.evaluation import checkpoint_evaluator
from im2txt.model import show_and_tell_model
from tests import evaluation_testdata as testdata


def _start(*flags):
  env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2",
             PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
  return subprocess.Popen([sys.executable, "-m", "im2txt.evaluate", *flags], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class _LogLines(std_logging.Handler):
  """Collects absl log messages."""

  def __init__(self):
    super().__init__(level=std_logging.INFO)
    self.lines = []

  def emit(self, record):
    self.lines.append(record.getMessage())

  def wait_for(self, fragment, timeout):
    deadline = time.monotonic() + timeout
    while not any(fragment in line for line in self.lines):
      if time.monotonic() > deadline:
        raise AssertionError(f"No {fragment!r} in {timeout} s:\n" + "\n".join(self.lines))
      time.sleep(0.05)


class EvaluateBinaryTest(unittest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.TemporaryDirectory()
    root = cls.tmp.name
    cls.pattern = testdata.write_val_split(os.path.join(root, "data"))
    cls.vocab_file = testdata.write_vocab(os.path.join(root, "data"))
    cls.train_dir = os.path.join(root, "train")
    cls.eval_dir = os.path.join(root, "eval")
    config = testdata.tiny_config()
    model = show_and_tell_model.ShowAndTellModel(config.model)
    model.build_all()
    testdata.perturb_weights(model, seed=1)
    testdata.save_checkpoint(cls.train_dir, model, 10, config)
    cls.once = _start("--once", f"--input_file_pattern={cls.pattern}",
                      f"--checkpoint_dir={cls.train_dir}", f"--eval_dir={cls.eval_dir}",
                      f"--vocab_file={cls.vocab_file}", "--num_eval_examples=4")

  @classmethod
  def tearDownClass(cls):
    if cls.once.poll() is None:
      cls.once.kill()
      cls.once.communicate()
    cls.tmp.cleanup()
    super().tearDownClass()

  def _main(self, *flags):
    """Runs the binary's main() in this process (cheaper than a new TensorFlow process)."""
    evaluate.FLAGS(["evaluate", *flags])
    self.addCleanup(evaluate.FLAGS.unparse_flags)
    logs = _LogLines()
    logging.get_absl_logger().addHandler(logs)
    self.addCleanup(logging.get_absl_logger().removeHandler, logs)
    logging.set_verbosity(logging.INFO)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    self.addCleanup(lambda: [signal.signal(k, v) for k, v in handlers.items()])
    return logs, lambda: evaluate.main(["evaluate"])

  def test_subprocess_once_evaluates_the_checkpoint_with_every_metric(self):
    _, stderr = self.once.communicate(timeout=600)
    self.assertEqual(self.once.returncode, 0, stderr)
    # --num_eval_examples overrides config.json's 5.
    self.assertIn(f"Evaluated {self.train_dir}/ckpt-10 (step 10)", stderr)
    self.assertIn("(4 examples, 22 tokens)", stderr)
    scalars, texts = testdata.read_events(self.eval_dir)
    self.assertEqual(set(scalars), {"Perplexity", "Loss", *caption_metrics.METRIC_NAMES})
    for tag, events in scalars.items():
      self.assertEqual([step for step, _ in events], [10], tag)
    self.assertGreater(scalars["Perplexity"][0][1], 1.0)
    self.assertEqual(list(texts), ["Captions"])
    step, table = texts["Captions"][0]
    self.assertEqual(step, 10)
    table, note = table.split("\n\n")
    self.assertEqual(note, checkpoint_evaluator.MONITORING_NOTE)
    rows = table.splitlines()
    self.assertEqual(rows[0], "| image id | generated caption | reference captions |")
    self.assertEqual(len(rows), 4)  # header, separator, images 11 and 12
    self.assertTrue(rows[2].startswith("| 11 | "))
    self.assertTrue(rows[2].endswith(" | a dog on grass .<br>dog on the grass<br>a dog . |"))

  def test_main_once_without_checkpoint_returns_1(self):
    missing = os.path.join(self.tmp.name, "no_train_dir")
    logs, main = self._main("--once", f"--input_file_pattern={self.pattern}",
                            f"--checkpoint_dir={missing}",
                            f"--eval_dir={self.tmp.name}/eval_missing")
    self.assertEqual(main(), 1)
    self.assertIn(f"No checkpoint in {missing}", "\n".join(logs.lines))

  def test_main_without_vocab_file_uses_the_one_beside_the_shards(self):
    eval_dir = os.path.join(self.tmp.name, "eval_beside")
    logs, main = self._main("--once", f"--input_file_pattern={self.pattern}",
                            f"--checkpoint_dir={self.train_dir}", f"--eval_dir={eval_dir}",
                            "--num_eval_examples=4")
    self.assertEqual(main(), 0)
    self.assertIn(f"No --vocab_file: using {self.vocab_file}, beside the input shards",
                  "\n".join(logs.lines))
    scalars, _ = testdata.read_events(eval_dir)
    self.assertIn("CIDEr", scalars)

  def test_main_sigterm_while_waiting_returns_0(self):
    missing = os.path.join(self.tmp.name, "no_train_dir")
    logs, main = self._main(f"--input_file_pattern={self.pattern}",
                            f"--checkpoint_dir={missing}",
                            f"--eval_dir={self.tmp.name}/eval_waiting", "--eval_interval_secs=60")

    def terminate_when_waiting():
      logs.wait_for("does not exist yet; waiting", timeout=60)
      os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=terminate_when_waiting, daemon=True)
    killer.start()
    start = time.monotonic()
    self.assertEqual(main(), 0)
    self.assertLess(time.monotonic() - start, 30)  # not the 60 s poll interval
    killer.join()
    text = "\n".join(logs.lines)
    self.assertIn("Received SIGTERM: stopping", text)
    self.assertIn("Stop requested; the evaluator stops after 0 evaluation(s)", text)


if __name__ == "__main__":
  unittest.main()
