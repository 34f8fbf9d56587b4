"""Tests of run_inference (//im2txt:run_inference) and its library im2txt/inference/captioning.py."""

import base64
import contextlib
import copy
import html
import io
import json
import math
import os
import re
import shutil
import tempfile

import tensorflow as tf

from im2txt import configuration
from im2txt import run_inference
from im2txt import vocabulary
from im2txt.inference import beam_search_reference
from im2txt.inference import captioning
from im2txt.inference import top_concepts
from tests import inference_testutil

# "  0) a dog . (p=0.040413)"
_CAPTION_LINE = re.compile(r"^  (\d+)\) (.*) \(p=(\d+\.\d{6})\)$")


def _run_binary(*flags):
  """Runs run_inference's main in-process -> (exit code, stdout, stderr)."""
  out, err = io.StringIO(), io.StringIO()
  run_inference.FLAGS.unparse_flags()
  run_inference.FLAGS(["run_inference"] + list(flags))
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    code = run_inference.main([])
  return code, out.getvalue(), err.getvalue()


class FormatTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    path = inference_testutil.write_vocab(os.path.join(self.get_temp_dir(), "word_counts.txt"))
    self.vocab = vocabulary.Vocabulary.from_file(path)  # <S>=0 </S>=1 a=2 dog=3 .=4 <UNK>=5

  def test_text_is_the_originals(self):
    captions = [captioning.Caption([0, 2, 3, 4, 1], math.log(0.040413), 0.0),
                captioning.Caption([0, 3, 5, 1], math.log(0.0123456789), 0.0)]
    self.assertEqual(
        "Captions for image COCO_val2014_000000224477.jpg:\n"
        "  0) a dog . (p=0.040413)\n"
        "  1) dog <UNK> (p=0.012346)\n",
        captioning.format_text("/data/images/COCO_val2014_000000224477.jpg", captions,
                               self.vocab))

  def test_partial_caption_keeps_its_last_word(self):
    # A caption that never reached </S> (max_caption_length too short) loses only its <S>.
    self.assertEqual(["a", "dog"], captioning.caption_words([0, 2, 3], self.vocab))
    self.assertEqual([], captioning.caption_words([0], self.vocab))

  def test_json(self):
    captions = [captioning.Caption([0, 2, 3, 1], -1.5, -1.5)]
    self.assertEqual({"file": "d/x.jpg", "captions": ["a dog"], "log_probs": [-1.5]},
                     json.loads(captioning.format_json("d/x.jpg", captions, self.vocab)))

  def test_concepts_follow_the_captions(self):
    captions = [captioning.Caption([0, 2, 3, 1], math.log(0.25), 0.0)]
    shown = [top_concepts.Concept("red", 0.98), top_concepts.Concept("<b>", 0.004999)]
    self.assertEqual(
        "Captions for image x.jpg:\n"
        "  0) a dog (p=0.250000)\n"
        "  concepts: red (0.98), <b> (0.00)\n",
        captioning.format_text("d/x.jpg", captions, self.vocab, shown))
    self.assertEqual(
        {"file": "d/x.jpg", "captions": ["a dog"], "log_probs": [math.log(0.25)],
         "concepts": [{"word": "red", "probability": 0.98},
                      {"word": "<b>", "probability": 0.004999}]},
        json.loads(captioning.format_json("d/x.jpg", captions, self.vocab, shown)))


class RunInferenceTest(tf.test.TestCase):
  """End to end on a tiny random checkpoint (vocab_size 8, a 5-line vocabulary + <UNK>)."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.config = inference_testutil.tiny_config(vocab_size=8)
    cls.model = inference_testutil.random_model(cls.config, seed=3)
    cls.train_dir = os.path.join(cls.tmp, "train")
    cls.prefix = inference_testutil.write_checkpoint(cls.model, cls.config, cls.train_dir)
    cls.vocab_file = inference_testutil.write_vocab(os.path.join(cls.tmp, "word_counts.txt"))
    cls.vocab = vocabulary.Vocabulary.from_file(cls.vocab_file)
    cls.image_dir = os.path.join(cls.tmp, "images")
    cls.jpegs = inference_testutil.write_jpegs(cls.image_dir, 3, seed=4)
    cls.broken = os.path.join(cls.image_dir, "broken.jpg")
    with open(cls.broken, "wb") as f:
      f.write(b"this is not an image")
    # The expected captions: the original's loop, one image at a time, same weights.
    reader = captioning.ImageReader(cls.config.model)
    compiled = beam_search_reference.CompiledModel(cls.model)
    cls.expected = {
        path: beam_search_reference.beam_search_reference(
            compiled, reader.read(path), cls.vocab.start_id, cls.vocab.end_id, beam_size=3,
            max_caption_length=20)
        for path in cls.jpegs}

  def _run_binary(self, *flags):
    return _run_binary(*flags)

  def _assert_expected(self, path, sentences, probabilities):
    expected = self.expected[path]
    self.assertEqual([" ".join(captioning.caption_words(c.sentence, self.vocab))
                      for c in expected], sentences)
    self.assertAllClose([math.exp(c.logprob) for c in expected], probabilities,
                        rtol=1e-4, atol=2e-6)

  def test_text_output_with_a_bad_file(self):
    code, out, err = self._run_binary(
        f"--checkpoint_path={self.train_dir}", f"--vocab_file={self.vocab_file}",
        f"--input_files={os.path.join(self.image_dir, '*.jpg')}")
    # The bad file is reported by name and the exit code says so; the others are captioned.
    self.assertEqual(1, code)
    self.assertIn(f"Error: {self.broken}: not a decodable image (Unknown image file format", err)
    self.assertIn("1 of 4 files could not be captioned", err)
    lines = out.splitlines()
    self.assertLen(lines, 3 * 4)
    for i, path in enumerate(self.jpegs):
      self.assertEqual(f"Captions for image {os.path.basename(path)}:", lines[4 * i])
      matches = [_CAPTION_LINE.match(line) for line in lines[4 * i + 1:4 * i + 4]]
      self.assertTrue(all(matches), lines)
      self.assertEqual(["0", "1", "2"], [m.group(1) for m in matches])
      self._assert_expected(path, [m.group(2) for m in matches],
                            [float(m.group(3)) for m in matches])

  def test_json_output_batched_from_a_checkpoint_prefix(self):
    out, err = io.StringIO(), io.StringIO()
    code = captioning.caption_files(
        self.prefix, self.vocab_file, ",".join(self.jpegs),
        configuration.InferenceConfig(batch_size=2), output_format="json", out=out, err=err)
    self.assertEqual(0, code)
    self.assertEqual("", err.getvalue())
    objects = [json.loads(line) for line in out.getvalue().splitlines()]
    self.assertEqual(self.jpegs, [o["file"] for o in objects])
    for o in objects:
      self._assert_expected(o["file"], o["captions"], [math.exp(lp) for lp in o["log_probs"]])

  def test_beam_settings_from_config_json_unless_flags_override(self):
    config = copy.deepcopy(self.config)
    config.inference = configuration.InferenceConfig(beam_size=2, max_caption_length=4,
                                                     length_normalization_factor=0.5,
                                                     batch_size=2)
    train_dir = os.path.join(self.tmp, "train_beam2")
    inference_testutil.write_checkpoint(self.model, config, train_dir)
    self.assertEqual(captioning.inference_config(train_dir, {}), config.inference)
    self.assertEqual(captioning.inference_config(train_dir, {"beam_size": 1, "batch_size": 7}),
                     configuration.InferenceConfig(1, 4, 0.5, 7))

    flags = [f"--checkpoint_path={train_dir}", f"--vocab_file={self.vocab_file}",
             f"--input_files={self.jpegs[0]}", "--output_format=json"]
    for extra, beam_size in (([], 2), (["--beam_size=1"], 1)):
      code, out, err = self._run_binary(*flags, *extra)
      self.assertEqual((code, err), (0, ""))
      captions = json.loads(out)["captions"]
      self.assertLen(captions, beam_size)
      # max_caption_length 4: <S> and at most 3 decoded words.
      self.assertTrue(all(len(c.split()) <= 3 for c in captions), captions)

  def test_html_page_shows_every_image_and_the_file_that_failed(self):
    page_file = os.path.join(self.tmp, "pages", "captions.html")
    code, out, err = self._run_binary(
        f"--checkpoint_path={self.train_dir}", f"--vocab_file={self.vocab_file}",
        f"--input_files={os.path.join(self.image_dir, '*.jpg')}", "--output_format=html",
        f"--output_file={page_file}")
    self.assertEqual((code, out), (1, ""))  # Exit 1: one file failed; nothing on stdout.
    self.assertIn(f"Wrote {page_file}", err)
    with open(page_file, encoding="utf-8") as f:
      page = f.read()
    blocks = page.split('<div class="entry">')[1:]
    files = sorted(self.jpegs + [self.broken])
    self.assertEqual([re.search(r'<div class="name">(.*?)</div>', b).group(1) for b in blocks],
                     [html.escape(p) for p in files])
    for path, block in zip(files, blocks):
      if path == self.broken:
        self.assertNotIn("<img", block)
        self.assertIn(f"Not captioned: {self.broken}: not a decodable image", block)
        continue
      data = re.search(r'<img src="data:image/jpeg;base64,([^"]+)"', block).group(1)
      with open(path, "rb") as f:
        self.assertEqual(base64.b64decode(data), f.read())
      sentences = [html.unescape(s) for s in re.findall(r"<li>(.*?) <span", block)]
      probabilities = [float(p) for p in re.findall(r"\(p=([\d.]+)\)", block)]
      self._assert_expected(path, sentences, probabilities)

  def test_pattern_matching_nothing(self):
    missing = os.path.join(self.tmp, "missing", "*.jpg")
    code, out, err = self._run_binary(
        f"--checkpoint_path={self.train_dir}", f"--vocab_file={self.vocab_file}",
        f"--input_files={self.jpegs[0]},{missing}")
    self.assertEqual(2, code)
    self.assertEqual("", out)
    self.assertIn(f"Error: --input_files pattern {missing!r} matches no file", err)

  def test_vocabulary_larger_than_the_model(self):
    big_vocab = inference_testutil.write_vocab(
        os.path.join(self.tmp, "big_word_counts.txt"),
        inference_testutil.WORDS + ["cat", "on", "mat"])  # 8 lines + <UNK> = 9 > 8
    with self.assertRaisesRegex(ValueError, f"{re.escape(big_vocab)} has 9 words.*"
                                f"{re.escape(self.prefix)} predicts 8"):
      captioning.caption_files(self.train_dir, big_vocab, self.jpegs[0],
                               configuration.InferenceConfig())

  def test_no_checkpoint(self):
    empty = os.path.join(self.tmp, "empty")
    os.makedirs(empty, exist_ok=True)
    with self.assertRaisesRegex(FileNotFoundError, f"No checkpoint found in directory {empty}"):
      captioning.resolve_checkpoint(empty)
    with self.assertRaisesRegex(FileNotFoundError, "No checkpoint at .*/ckpt-99"):
      captioning.resolve_checkpoint(os.path.join(self.train_dir, "ckpt-99"))
    self.assertEqual(self.prefix, captioning.resolve_checkpoint(self.train_dir))
    self.assertEqual(self.prefix, captioning.resolve_checkpoint(self.prefix))

  def test_bad_output_format(self):
    with self.assertRaisesRegex(ValueError, "output_format"):
      captioning.caption_files(self.train_dir, self.vocab_file, self.jpegs[0],
                               configuration.InferenceConfig(), output_format="xml")
    with self.assertRaisesRegex(ValueError, "num_concepts_shown must be >= 0, got -1"):
      captioning.caption_files(self.train_dir, self.vocab_file, self.jpegs[0],
                               configuration.InferenceConfig(), num_concepts_shown=-1)


class ConceptsTest(tf.test.TestCase):
  """A model with a concept head: 9 outputs, of which concepts.txt names the first 7."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.saved = inference_testutil.save_concept_model(cls.tmp, seed=5)
    cls.vocab = vocabulary.Vocabulary.from_file(cls.saved.vocab_file)
    cls.jpegs = inference_testutil.write_jpegs(os.path.join(cls.tmp, "images"), 3, seed=8)
    reader = captioning.ImageReader(cls.saved.config.model)
    cls.images = {path: reader.read(path) for path in cls.jpegs}
    # The expected captions: the original's loop on model.initial_state, one image at a time.
    compiled = beam_search_reference.CompiledModel(cls.saved.model)
    cls.expected_captions = {
        path: [" ".join(captioning.caption_words(c.sentence, cls.vocab))
               for c in beam_search_reference.beam_search_reference(
                   compiled, image, cls.vocab.start_id, cls.vocab.end_id, beam_size=3,
                   max_caption_length=20)]
        for path, image in cls.images.items()}

  def _expected_concepts(self, k, words=inference_testutil.CONCEPTS, batch_size=32):
    """Per file, its top-k concepts, the files batched as run_inference batches them."""
    expected = {}
    for start in range(0, len(self.jpegs), batch_size):
      paths = self.jpegs[start:start + batch_size]
      images = tf.stack([self.images[path] for path in paths])
      expected.update(zip(paths, inference_testutil.expected_concepts(
          self.saved.model, images, words, k)))
    return expected

  def _run_binary(self, *flags):
    return _run_binary(f"--checkpoint_path={self.saved.train_dir}", *flags)

  def assertOnlyError(self, message, err):
    """`message` is the one error on stderr. (TensorFlow and Keras may log there too, e.g.
    that tf.function retraced: the tests build many captioners in one process.)"""
    self.assertEqual([message], [line for line in err.splitlines() if "Error" in line])

  def assertNoError(self, err):
    self.assertNotIn("Error", err)

  def test_text_shows_the_top_5_concepts_from_concepts_txt_beside_the_vocabulary(self):
    code, out, err = self._run_binary(f"--vocab_file={self.saved.vocab_file}",
                                      f"--input_files={','.join(self.jpegs)}")
    self.assertEqual(0, code)
    self.assertNoError(err)
    lines = out.splitlines()
    self.assertLen(lines, 3 * 5)  # The name, 3 captions and the concepts of each image.
    top = self._expected_concepts(5)  # config.json's batch_size, 32: one batch.
    for i, path in enumerate(self.jpegs):
      self.assertEqual(f"Captions for image {os.path.basename(path)}:", lines[5 * i])
      self.assertEqual(self.expected_captions[path],
                       [_CAPTION_LINE.match(line).group(2) for line in lines[5 * i + 1:5 * i + 4]])
      expected = ", ".join(f"{w} ({p:.2f})" for w, p in top[path])
      self.assertEqual(f"  concepts: {expected}", lines[5 * i + 4])
    # Different images, different concepts: the batch is not mixed up.
    self.assertLen({line for line in lines if line.startswith("  concepts:")}, 3)

  def test_json_with_another_concepts_file_in_batches(self):
    # --concepts_file overrides the default: the same 7 concepts, named otherwise.
    words = [f"thing{i}" for i in range(7)]
    concepts_file = inference_testutil.write_concepts(os.path.join(self.tmp, "other.txt"), words)
    out, err = io.StringIO(), io.StringIO()
    code = captioning.caption_files(
        self.saved.prefix, self.saved.vocab_file, ",".join(self.jpegs),
        configuration.InferenceConfig(batch_size=2), output_format="json", out=out, err=err,
        concepts_file=concepts_file, num_concepts_shown=3)
    self.assertEqual((code, err.getvalue()), (0, ""))
    objects = [json.loads(line) for line in out.getvalue().splitlines()]
    self.assertEqual(self.jpegs, [o["file"] for o in objects])
    top = self._expected_concepts(3, words, batch_size=2)
    for o in objects:
      self.assertEqual(["file", "captions", "log_probs", "concepts"], list(o))
      self.assertEqual(self.expected_captions[o["file"]], o["captions"])
      expected = top[o["file"]]
      self.assertEqual([w for w, _ in expected], [c["word"] for c in o["concepts"]])
      self.assertAllClose([p for _, p in expected], [c["probability"] for c in o["concepts"]],
                          rtol=1e-5)

  def test_html_page_shows_the_concepts_escaped(self):
    page_file = os.path.join(self.tmp, "captions.html")
    # More concepts asked for than concepts.txt has: all 7, never the head's 2 extra outputs.
    code, _, err = self._run_binary(
        f"--vocab_file={self.saved.vocab_file}", f"--input_files={','.join(self.jpegs)}",
        "--output_format=html", f"--output_file={page_file}", "--num_concepts_shown=20")
    self.assertEqual(0, code, err)
    with open(page_file, encoding="utf-8") as f:
      page = f.read()
    blocks = page.split('<div class="entry">')[1:]
    self.assertLen(blocks, 3)
    top = self._expected_concepts(7)
    self.assertIn("<b>", [w for w, _ in top[self.jpegs[0]]])
    for path, block in zip(self.jpegs, blocks):
      self.assertIn(f'<div class="name">{html.escape(path)}</div>', block)
      self.assertEqual(self.expected_captions[path],
                       [html.unescape(s) for s in re.findall(r"<li>(.*?) <span", block)])
      expected = ", ".join(f'{html.escape(w)} <span class="p">({p:.2f})</span>'
                           for w, p in top[path])
      self.assertIn(f'</ol><div class="concepts">concepts: {expected}</div>', block)
    self.assertNotIn("<b>", page)
    self.assertEqual(3, page.count("&lt;b&gt; <span"))

  def test_missing_concepts_file_is_an_error_unless_none_are_shown(self):
    # A vocabulary in a folder without concepts.txt.
    data_dir = os.path.join(self.tmp, "vocab_only")
    os.makedirs(data_dir, exist_ok=True)
    vocab_file = shutil.copy(self.saved.vocab_file, data_dir)
    default = os.path.join(data_dir, "concepts.txt")
    code, out, err = self._run_binary(f"--vocab_file={vocab_file}",
                                      f"--input_files={self.jpegs[0]}")
    self.assertEqual((code, out), (2, ""))
    self.assertOnlyError(
        f"Error: The model in {self.saved.prefix} has a concept head (model.num_concepts 9) but "
        f"no concepts file was found at {default} (the default: beside --vocab_file): give the "
        "concepts.txt it was trained with by --concepts_file, or --num_concepts_shown=0 to show "
        "no concepts", err)

    missing = os.path.join(self.tmp, "missing", "concepts.txt")
    code, out, err = self._run_binary(f"--vocab_file={vocab_file}", f"--concepts_file={missing}",
                                      f"--input_files={self.jpegs[0]}")
    self.assertEqual((code, out), (2, ""))
    self.assertOnlyError(
        f"Error: The model in {self.saved.prefix} has a concept head (model.num_concepts 9) but "
        f"no concepts file was found at {missing}: give the concepts.txt it was trained with by "
        "--concepts_file, or --num_concepts_shown=0 to show no concepts", err)

    # --num_concepts_shown=0: the captions alone, as for a model without a head.
    code, out, err = self._run_binary(f"--vocab_file={vocab_file}", "--num_concepts_shown=0",
                                      f"--input_files={self.jpegs[0]}")
    self.assertEqual(0, code)
    self.assertNoError(err)
    self.assertEqual(
        [f"Captions for image {os.path.basename(self.jpegs[0])}:"]
        + [f"  {i}) {c}" for i, c in enumerate(self.expected_captions[self.jpegs[0]])],
        [re.sub(r" \(p=[\d.]+\)$", "", line) for line in out.splitlines()])

  def test_concepts_file_larger_than_the_head(self):
    big = inference_testutil.write_concepts(
        os.path.join(self.tmp, "big_concepts.txt"), [f"c{i}" for i in range(10)])
    code, out, err = self._run_binary(f"--vocab_file={self.saved.vocab_file}",
                                      f"--concepts_file={big}", f"--input_files={self.jpegs[0]}")
    self.assertEqual((code, out), (2, ""))
    self.assertOnlyError(
        f"Error: Concepts file {big} has 10 concepts but the model in {self.saved.prefix} "
        "predicts 9 (num_concepts in its config.json): use the concepts.txt the model was "
        "trained with", err)


if __name__ == "__main__":
  tf.test.main()
