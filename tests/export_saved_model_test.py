"""Tests of //im2txt:export_saved_model: a SavedModel that captions as run_inference does."""

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile

import tensorflow as tf

from im2txt import concepts
from im2txt import configuration
from im2txt import export_saved_model
from im2txt import vocabulary
from im2txt.inference import captioning
from im2txt.inference import serving
from tests import inference_testutil

# Runs in a fresh interpreter that cannot import this project: only TensorFlow and the files.
_LOAD_AND_CAPTION = r"""
import json, sys
import tensorflow as tf
results = []
for export_dir, paths in json.loads(sys.argv[1]):  # [[export_dir, [path, ...]], ...]
  serve = tf.saved_model.load(export_dir).signatures["serving_default"]
  jpegs = tf.constant([open(p, "rb").read() for p in paths])
  out = serve(jpegs=jpegs)
  results.append({
      "outputs": sorted(out),
      "captions": [[c.decode() for c in row] for row in out["captions"].numpy().tolist()],
      "log_probs": out["log_probs"].numpy().tolist(),
      "valid": out["valid"].numpy().tolist(),
      "concepts": [[c.decode() for c in row] for row in out["concepts"].numpy().tolist()]
                  if "concepts" in out else None,
      "concept_probs": out["concept_probs"].numpy().tolist() if "concept_probs" in out else None,
      "inputs": {k: [str(v.dtype.name), v.shape.as_list()]
                 for k, v in serve.structured_input_signature[1].items()},
      "project_modules": sorted(m for m in sys.modules
                                if m.split(".")[0] in ("im2txt", "tests")),
  })
print(json.dumps(results))
"""


def _export(flags):
  """Runs export_saved_model's main in-process -> (exit code, stdout, stderr)."""
  out, err = io.StringIO(), io.StringIO()
  export_saved_model.FLAGS.unparse_flags()
  export_saved_model.FLAGS(["export_saved_model"] + flags)
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    code = export_saved_model.main([])
  return code, out.getvalue(), err.getvalue()


def _serve_all(jobs, cwd):
  """Captions each job's files, [export_dir, paths], with its SavedModel in one process that has
  only TensorFlow (no PYTHONPATH, run from elsewhere) -> per job, the JSON object that
  _LOAD_AND_CAPTION prints for it."""
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  process = subprocess.run(
      [sys.executable, "-c", _LOAD_AND_CAPTION, json.dumps(jobs)],
      cwd=cwd, env=env, capture_output=True, text=True, timeout=240, check=False)
  if process.returncode:
    raise AssertionError(process.stderr)
  return json.loads(process.stdout.strip().splitlines()[-1])


def _serve_elsewhere(export_dir, paths, cwd):
  return _serve_all([[export_dir, paths]], cwd)[0]


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
    # One export, checked by test_round_trip_equals_run_inference; the tests' files are
    # captioned with it by one process that has only TensorFlow: the good images, and the good
    # ones among a corrupt and a truncated JPEG and a PNG above the pixel limit.
    cls.export_result = _export(cls.flags)
    bad_dir = os.path.join(cls.tmp, "bad")
    os.makedirs(bad_dir, exist_ok=True)
    cls.corrupt = os.path.join(bad_dir, "corrupt.jpg")
    cls.truncated = os.path.join(bad_dir, "cut.jpg")
    with open(cls.corrupt, "wb") as f:
      f.write(b"\xff\xd8\xff\xe0 this is not a JPEG")
    with open(cls.jpegs[2], "rb") as src, open(cls.truncated, "wb") as f:
      data = src.read()
      f.write(data[:len(data) // 2])
    cls.huge = os.path.join(bad_dir, "huge.png")  # A 30000x20000 PNG's header: never decoded.
    with open(cls.huge, "wb") as f:
      f.write(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + (30000).to_bytes(4, "big") +
              (20000).to_bytes(4, "big") + b"\x08\x02\0\0\0")
    cls.mixed_paths = [cls.jpegs[0], cls.corrupt, cls.jpegs[1], cls.truncated, cls.huge,
                       cls.jpegs[2]]
    if cls.export_result[0] == 0:
      cls.served, cls.served_mixed = _serve_all(
          [[cls.export_dir, cls.jpegs], [cls.export_dir, cls.mixed_paths]], cls.tmp)

  def _export(self):
    return _export(self.flags)

  def test_round_trip_equals_run_inference(self):
    code, out, _ = self.export_result
    self.assertEqual(0, code)
    self.assertEqual(f"SavedModel written to {self.export_dir}\n", out)
    self.assertTrue(tf.saved_model.contains_saved_model(self.export_dir))
    self.assertEqual([n for n in os.listdir(os.path.dirname(self.export_dir)) if ".tmp-" in n], [])

    # Loaded by a process that has only TensorFlow (no PYTHONPATH, run from elsewhere).
    served = self.served
    self.assertEqual([], served["project_modules"])
    self.assertEqual({"jpegs": ["string", [None]]}, served["inputs"])
    # A model without a concept head: the signature is the captions alone.
    self.assertEqual(["captions", "log_probs", "valid"], served["outputs"])
    self.assertEqual([True] * 3, served["valid"])

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


  def test_undecodable_images_fail_alone(self):
    """A corrupt and a truncated JPEG and a PNG above the pixel limit among good ones: those
    rows are invalid, the good images get exactly run_inference's captions, which names the bad
    files and why."""
    export_dir = self.export_dir  # The same checkpoint's export (made in setUpClass).
    self.assertEqual(0, self.export_result[0])
    corrupt, truncated, huge, paths = self.corrupt, self.truncated, self.huge, self.mixed_paths
    served = self.served_mixed
    self.assertEqual([True, False, True, False, False, True], served["valid"])
    for row in (1, 3, 4):
      self.assertEqual([""] * 3, served["captions"][row])
      self.assertEqual([float("-inf")] * 3, served["log_probs"][row])

    printed, errors = io.StringIO(), io.StringIO()
    code = captioning.caption_files(self.train_dir, self.vocab_file, ",".join(paths),
                                    configuration.InferenceConfig(), output_format="json",
                                    out=printed, err=errors)
    self.assertEqual(1, code)
    objects = [json.loads(line) for line in printed.getvalue().splitlines()]
    self.assertEqual([o["file"] for o in objects], self.jpegs)
    self.assertEqual([o["captions"] for o in objects],
                     [served["captions"][row] for row in (0, 2, 5)])
    self.assertAllClose([[c for c in o["log_probs"]] for o in objects],
                        [served["log_probs"][row] for row in (0, 2, 5)], rtol=1e-5)
    lines = errors.getvalue().splitlines()
    self.assertEqual([line.split(": not a decodable image")[0] for line in lines[:3]],
                     [f"Error: {corrupt}", f"Error: {truncated}", f"Error: {huge}"])
    self.assertEqual(lines[2], f"Error: {huge}: not a decodable image (The image is 30000x20000 "
                     "pixels (width x height): above the 89,478,485 pixels im2txt decodes; scale "
                     "it down first)")
    self.assertEqual(lines[3], "Error: 3 of 6 files could not be captioned")

    # Nothing decodable at all, and an empty batch: no failure either.
    serve = tf.saved_model.load(export_dir).signatures["serving_default"]
    out = serve(jpegs=tf.constant([b"", b"GIF89a"]))
    self.assertEqual([False, False], out["valid"].numpy().tolist())
    self.assertEqual([[b""] * 3] * 2, out["captions"].numpy().tolist())
    out = serve(jpegs=tf.zeros([0], tf.string))
    self.assertEqual([0, 3], out["captions"].shape.as_list())


class ConceptExportTest(tf.test.TestCase):
  """A model with a concept head: 9 outputs, of which concepts.txt names the first 7."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.saved = inference_testutil.save_concept_model(cls.tmp, seed=5)
    cls.jpegs = inference_testutil.write_jpegs(os.path.join(cls.tmp, "images"), 3, seed=8)

  def test_concepts_equal_run_inference(self):
    export_dir = os.path.join(self.tmp, "export")
    # The concepts file by default: concepts.txt beside the vocabulary.
    code, out, _ = _export([f"--checkpoint_path={self.saved.train_dir}",
                            f"--vocab_file={self.saved.vocab_file}",
                            f"--export_dir={export_dir}"])
    self.assertEqual((code, out), (0, f"SavedModel written to {export_dir}\n"))
    served = _serve_elsewhere(export_dir, self.jpegs, self.tmp)
    self.assertEqual(["captions", "concept_probs", "concepts", "log_probs", "valid"],
                     served["outputs"])

    # run_inference's JSON for the same files (one batch, as the SavedModel's).
    printed = io.StringIO()
    code = captioning.caption_files(self.saved.train_dir, self.saved.vocab_file,
                                    ",".join(self.jpegs), configuration.InferenceConfig(),
                                    output_format="json", out=printed)
    self.assertEqual(0, code)
    objects = [json.loads(line) for line in printed.getvalue().splitlines()]
    self.assertEqual([o["captions"] for o in objects], served["captions"])
    # k = min(5, 7 concepts), best first; never the head's 2 outputs past concepts.txt.
    self.assertEqual([[c["word"] for c in o["concepts"]] for o in objects], served["concepts"])
    self.assertAllClose([[c["probability"] for c in o["concepts"]] for o in objects],
                        served["concept_probs"], rtol=1e-5)
    self.assertEqual([3, 5], tf.constant(served["concept_probs"]).shape.as_list())
    self.assertTrue(set(sum(served["concepts"], [])) <= set(inference_testutil.CONCEPTS))

  def test_undecodable_image_has_no_concepts(self):
    vocab = vocabulary.Vocabulary.from_file(self.saved.vocab_file)
    module = serving.CaptionModule(self.saved.model, vocab, configuration.InferenceConfig(),
                                   concepts.ConceptVocabulary(inference_testutil.CONCEPTS))
    good = [tf.io.read_file(path) for path in self.jpegs[:2]]
    out = module.serve(tf.stack([good[0], tf.constant(b"not an image"), good[1]]))
    alone = module.serve(tf.stack(good))
    self.assertEqual([True, False, True], out["valid"].numpy().tolist())
    self.assertEqual([b""] * 5, out["concepts"][1].numpy().tolist())
    self.assertAllEqual(tf.zeros([5]), out["concept_probs"][1])
    for name in ("captions", "concepts"):
      self.assertAllEqual(tf.gather(out[name], [0, 2]), alone[name])
    for name in ("log_probs", "concept_probs"):
      self.assertAllClose(tf.gather(out[name], [0, 2]), alone[name], rtol=1e-6)

  def test_fewer_concepts_than_five(self):
    vocab = vocabulary.Vocabulary.from_file(self.saved.vocab_file)
    module = serving.CaptionModule(self.saved.model, vocab, configuration.InferenceConfig(),
                                   concepts.ConceptVocabulary(["red", "circle", "white"]))
    jpegs = [tf.io.read_file(path) for path in self.jpegs[:2]]
    out = module.serve(tf.stack(jpegs))
    self.assertEqual([2, 3], out["concepts"].shape.as_list())
    self.assertEqual([2, 3], out["concept_probs"].shape.as_list())
    for row in out["concepts"].numpy().tolist():
      self.assertCountEqual([b"red", b"circle", b"white"], row)

  def test_missing_concepts_file(self):
    data_dir = os.path.join(self.tmp, "vocab_only")
    os.makedirs(data_dir, exist_ok=True)
    vocab_file = shutil.copy(self.saved.vocab_file, data_dir)
    export_dir = os.path.join(self.tmp, "never_written")
    code, out, err = _export([f"--checkpoint_path={self.saved.train_dir}",
                              f"--vocab_file={vocab_file}", f"--export_dir={export_dir}"])
    self.assertEqual((code, out), (2, ""))
    self.assertEqual(
        [f"Error: The model in {self.saved.prefix} has a concept head (model.num_concepts 9) "
         f"but no concepts file was found at {os.path.join(data_dir, 'concepts.txt')} (the "
         "default: beside --vocab_file): give the concepts.txt it was trained with by "
         "--concepts_file"], [line for line in err.splitlines() if "Error" in line])
    self.assertFalse(os.path.exists(export_dir))


if __name__ == "__main__":
  tf.test.main()
