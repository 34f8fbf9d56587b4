"""Tests for demo/console_output.py, the demo's console: which of a binary's output lines are
shown, and where this process's own stderr goes. (The whole demo is demo_test.)"""

import os
import subprocess
import sys
import tempfile
import unittest

from demo import console_output


class ShownTextTest(unittest.TestCase):

  def test_own_progress_lines_are_shown_without_their_log_prefix(self):
    lines = {
        # absl, from the product's own modules.
        "I1203 05:03:17.973429 139694710709120 trainer.py:334] Training phase 1 (Inception "
        "frozen) from step 0 to 30\n": "Training phase 1 (Inception frozen) from step 0 to 30",
        "W1203 05:03:17.961249 139694710709120 train_state.py:152] Inception starts from random "
        "weights; calibrated on 64 training images\n":
            "Inception starts from random weights; calibrated on 64 training images",
        # Python logging in Beam's workers, from the product's own modules.
        "INFO:beam_jobs.shard_writer:Wrote data/val-00000-of-00001: 50 records\n":
            "Wrote data/val-00000-of-00001: 50 records",
        # Plain prints of the binaries.
        "      train    1850    370    2\n": "      train    1850    370    2",
    }
    for line, shown in lines.items():
      self.assertEqual(console_output.shown_text(line), shown, line)

  def test_library_lines_and_warnings_are_not_shown(self):
    lines = [
        # TensorFlow's C++ logs, in TF's and in abseil's format.
        "2026-12-03 05:02:48.712775: E external/local_xla/xla/stream_executor/cuda/"
        "cuda_dnn.cc:9261] Unable to register cuDNN factory: ... step ",
        "2026-12-03 05:02:48.7: I tensorflow/core/util/port.cc:113] oneDNN custom operations "
        "are on; to train ",
        "I0000 00:00:1700000000.123456   12345 cpu_feature_guard.cc:182] This TensorFlow binary "
        "is optimized ... train ",
        # absl lines of libraries, though they name a progress key ("step ").
        "W1203 05:03:48.084370 139788019612544 ag_logging.py:142] AutoGraph could not transform "
        "<function train_step at 0x7f22905e59e0> and will run it as-is.",
        # Python logging of libraries and of Beam's worker main.
        "WARNING:apache_beam.runners.worker:Discarding 2 records",
        "WARNING:__main__:No semi_persistent_directory found: 3 records",
        # Python warnings and deprecations, with or without a log prefix.
        "/x/lib.py:12: DeprecationWarning: the train split is deprecated",
        "WARNING:tensorflow:From x.py:1: tf_record_iterator (from tensorflow) is deprecated: "
        "records",
        "I1203 05:03:17.973429 1 trainer.py:334] the train step is deprecated",
        # Own lines that are not progress.
        "I1203 05:03:17.973429 1 trainer.py:334] Writing config.json",
    ]
    for line in lines:
      self.assertIsNone(console_output.shown_text(line + "\n"), line)


class StderrToTest(unittest.TestCase):

  def test_descriptor_2_goes_to_the_file_and_comes_back(self):
    with tempfile.TemporaryDirectory() as tmp:
      path = os.path.join(tmp, "demo.log")
      before = os.fstat(2)
      with self.assertRaisesRegex(RuntimeError, "stop"):
        with console_output.stderr_to(path):
          # As TensorFlow's C++ runtime writes, as Python does, and as a child inheriting it.
          os.write(2, b"from the descriptor\n")
          print("from sys.stderr", file=sys.stderr)
          subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write('child\\n')"],
                         check=True)
          raise RuntimeError("stop")
      after = os.fstat(2)
      self.assertEqual((after.st_dev, after.st_ino), (before.st_dev, before.st_ino))
      with open(path) as f:
        self.assertEqual(f.read().splitlines(),
                         ["from the descriptor", "from sys.stderr", "child"])

  def test_stdout_too_when_asked(self):
    with tempfile.TemporaryDirectory() as tmp:
      path = os.path.join(tmp, "console.txt")
      before = [os.fstat(fd) for fd in (1, 2)]
      with console_output.stderr_to(path, stdout=True):
        print("from sys.stdout")
        os.write(1, b"from descriptor 1\n")
        os.write(2, b"from descriptor 2\n")
        subprocess.run([sys.executable, "-c", "print('child')"], check=True)
      after = [os.fstat(fd) for fd in (1, 2)]
      self.assertEqual([(s.st_dev, s.st_ino) for s in after],
                       [(s.st_dev, s.st_ino) for s in before])
      with open(path) as f:
        self.assertEqual(f.read().splitlines(),
                         ["from sys.stdout", "from descriptor 1", "from descriptor 2", "child"])


if __name__ == "__main__":
  unittest.main()
