"""A binary's console shows its own lines: TensorFlow's known-harmless start-up lines and
tensorflow-addons' end-of-life banner are gone, TensorFlow's errors after start-up are not."""

import os
import re
import subprocess
import sys
import tempfile
import unittest

from im2txt import quiet_start
from tests import inference_testutil
from tests import training_testdata as td

_FACTORY_LINES = [
    "2026-12-06 10:00:48.114700: E external/local_xla/xla/stream_executor/cuda/cuda_dnn.cc:9261] "
    "Unable to register cuDNN factory: Attempting to register factory for plugin cuDNN when one "
    "has already been registered\n",
    "2026-12-06 10:00:48.114764: E external/local_xla/xla/stream_executor/cuda/cuda_fft.cc:607] "
    "Unable to register cuFFT factory: Attempting to register factory for plugin cuFFT when one "
    "has already been registered\n",
    "2026-12-06 10:00:48.119205: E external/local_xla/xla/stream_executor/cuda/cuda_blas.cc:1515] "
    "Unable to register cuBLAS factory: Attempting to register factory for plugin cuBLAS when one "
    "has already been registered\n",
]
# What must not reach a binary's console: TensorFlow's C++ log lines of its start-up, oneDNN and
# CPU-feature notices, the tensorflow-addons banner.
_NOISE = re.compile(r"Unable to register|oneDNN|cpu_feature_guard|rebuild TensorFlow|"
                    r"TensorFlow Addons|TFA has entered|TensorRT")


def _run(args, env_changes):
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
  env.update(env_changes)
  env["PYTHONPATH"] = td.repo_root() + os.pathsep + env.get("PYTHONPATH", "")
  return subprocess.run([sys.executable] + args, capture_output=True, text=True, env=env,
                        cwd=td.repo_root(), timeout=300, check=False)


class QuietStartTest(unittest.TestCase):

  def test_only_the_factory_registrations_are_dropped(self):
    real = "2026-12-06 10:00:49.000001: E tensorflow/core/lib/jpeg/jpeg_mem.cc:327] Premature end\n"
    trt = ("2026-12-06 10:29:41.243262: W tensorflow/compiler/tf2tensorrt/utils/py_utils.cc:38] "
           "TF-TRT Warning: Could not find TensorRT\n")
    text = (_FACTORY_LINES[0] + "a line of the program\n" + "".join(_FACTORY_LINES[1:]) + trt +
            real)
    self.assertEqual(quiet_start.kept_lines(text), "a line of the program\n" + real)

  def test_run_inference_console(self):
    with tempfile.TemporaryDirectory() as tmp:
      config = inference_testutil.tiny_config(vocab_size=8)
      train_dir = os.path.join(tmp, "train")
      inference_testutil.write_checkpoint(inference_testutil.random_model(config, seed=5), config,
                                          train_dir)
      vocab_file = inference_testutil.write_vocab(os.path.join(tmp, "word_counts.txt"))
      jpegs = inference_testutil.write_jpegs(os.path.join(tmp, "images"), 3)
      # Without TF_CPP_MIN_LOG_LEVEL, as a user's shell runs it.
      process = _run(["-m", "im2txt.run_inference", f"--checkpoint_path={train_dir}",
                      f"--vocab_file={vocab_file}", f"--input_files={','.join(jpegs)}"], {})
      self.assertEqual(process.returncode, 0, process.stderr)
      self.assertEqual([l for l in process.stderr.splitlines() if _NOISE.search(l)], [])
      self.assertEqual(process.stdout.count("Captions for image "), 3)
      # The binary's own log lines are there.
      self.assertIn("Running caption generation on 3 files", process.stderr)

      # TensorFlow's errors after start-up still reach the console: a JPEG cut short.
      with open(jpegs[0], "rb") as f:
        data = f.read()
      cut = os.path.join(tmp, "images", "cut.jpg")
      with open(cut, "wb") as f:
        f.write(data[:len(data) // 2])
      process = _run(["-m", "im2txt.run_inference", f"--checkpoint_path={train_dir}",
                      f"--vocab_file={vocab_file}", f"--input_files={cut}"], {})
      self.assertEqual(process.returncode, 1, process.stderr)
      self.assertRegex(process.stderr, r"(?m)^\S+ \S+: E \S*jpeg\S*\] Premature end of JPEG data")
      self.assertIn(f"Error: {cut}: not a decodable image", process.stderr)
      self.assertEqual([l for l in process.stderr.splitlines() if _NOISE.search(l)], [])

  def test_a_users_log_level_wins(self):
    process = _run(["-c", "import im2txt, os; print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"],
                   {"TF_CPP_MIN_LOG_LEVEL": "0"})
    self.assertEqual(process.stdout.strip(), "0")
    process = _run(["-c", "import beam_jobs, os; print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"], {})
    self.assertEqual(process.stdout.strip(), "1")
    self.assertEqual([l for l in process.stderr.splitlines() if _NOISE.search(l)], [])


if __name__ == "__main__":
  unittest.main()
