"""Tests of //im2txt:export_saved_model: a SavedModel that captions as run_inference does."""

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile

import tensorflow as tf

from im2txt import configuration
from im2txt import export_saved_model
from im2txt import vocabulary
from im2txt.inference import captioning
from tests import inference_testutil

# Runs in a fresh interpreter that cannot import this project: only TensorFlow and the files.
_LOAD_AND_CAPTION = r"""
import json, sys
import tensorflow as tf
export_dir, paths = sys.argv[1], sys.argv[2:]
serve = tf.saved_model.load(export_dir).signatures["serving_default"]
jpegs = tf.constant([open(p, "rb").read() for p in paths])
out = serve(jpegs=jpegs)
print(json.dumps({
    "captions": [[c.decode() for c in row] for row in out["captions"].numpy().tolist()],
    "log_probs": out["log_probs"].numpy().tolist(),
    "inputs": {k: [str(v.dtype.name), v.shape.as_list()]
               for k, v in serve.structured_input_signature[1].items()},
    "project_modules": sorted(m for m in sys.modules if m.split(".")[0] in ("im2txt", "tests")),
}))
"""


class ExportSavedModelTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.config = inference_testutil.tiny_config(vocab_size=8)
    cls.model = inference_testutil.random_model(cls.config, seed=5)
    cls.train_dir = os.path.join(cls.tmp, "train")
    inference_testutil.write_checkpoint(cls.model, cls.config, cls.train_dir)
    cls.vocab_file = inference_testutil.write_vocab(os.path.join(cls.tmp, "word_counts.txt"))
    cls.vocab = vocabulary.Vocabulary.from_file(cls.vocab_file)
    cls.jpegs = inference_testutil.write_jpegs(os.path.join(cls.tmp, "images"), 3, seed=6)
    cls.export_dir = os.path.join(cls.tmp, "export")
    cls.flags = [f"--checkpoint_path={cls.train_dir}", f"--vocab_file={cls.vocab_file}",
                 f"--export_dir={cls.export_dir}"]

  def _export(self):
    out, err = io.StringIO(), io.StringIO()
    export_saved_model.FLAGS.unparse_flags()
    export_saved_model.FLAGS(["export_saved_model"] + self.flags)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      code = export_saved_model.main([])
    return code, out.getvalue(), err.getvalue()

  def test_round_trip_equals_run_inference(self):
    code, out, _ = self._export()
    self.assertEqual(0, code)
    self.assertEqual(f"SavedModel written to {self.export_dir}\n", out)
    self.assertTrue(tf.saved_model.contains_saved_model(self.export_dir))
    self.assertEqual([n for n in os.listdir(os.path.dirname(self.export_dir)) if ".tmp-" in n], [])

    # Loaded by a process that has only TensorFlow (no PYTHONPATH, run from elsewhere).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    process = subprocess.run(
        [sys.executable, "-c", _LOAD_AND_CAPTION, self.export_dir] + self.jpegs,
        cwd=self.tmp, env=env, capture_output=True, text=True, timeout=240, check=False)
    self.assertEqual(0, process.returncode, process.stderr)
    served = json.loads(process.stdout.strip().splitlines()[-1])
    self.assertEqual([], served["project_modules"])
    self.assertEqual({"jpegs": ["string", [None]]}, served["inputs"])

    # run_inference's pipeline (ImageReader, Captioner) on the same files, in one batch.
    reader = captioning.ImageReader(self.config.model)
    captioner = captioning.Captioner(self.model, self.vocab, configuration.InferenceConfig())
    expected = captioner.caption_images(tf.stack([reader.read(p) for p in self.jpegs]))
    self.assertEqual([[" ".join(captioning.caption_words(c.sentence, self.vocab)) for c in e]
                      for e in expected], served["captions"])
    self.assertAllClose([[c.logprob for c in e] for e in expected], served["log_probs"],
                        rtol=1e-5)
    # Different images, different captions: the batch is not mixed up.
    self.assertGreater(len({tuple(c) for c in served["captions"]}), 1)

    # The directory is never overwritten.
    code, _, err = self._export()
    self.assertEqual(2, code)
    self.assertIn(f"--export_dir {self.export_dir} already exists", err)


if __name__ == "__main__":
  tf.test.main()
