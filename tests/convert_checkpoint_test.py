"""Original im2txt checkpoints, converted, compute what the original graph computes.

The reference is the original's inference graph rebuilt in tf.compat.v1 from TF-slim's
InceptionV3 and BasicLSTMCell (tests/original_im2txt.py), with random weights at the original's
default sizes (InceptionV3 at 299, vocabulary 12000, embedding and LSTM 512), saved with
tf.compat.v1.train.Saver under each TF1 era's LSTM names and converted by
//im2txt:convert_checkpoint. Compared:
  (a) Keras InceptionV3 loaded from the slim variables vs slim's pooled features;
  (b) the LSTM state after the image, and one step's next-word log-probabilities and state;
  (c) run_inference's beam search vs the original CaptionGenerator (with the `[-beam_size:]`
      fix), on JPEG files of several sizes through each side's own preprocessing.
"""

import contextlib
import io
import json
import math
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from im2txt import configuration
from im2txt import convert_checkpoint
from im2txt import vocabulary
from im2txt.inference import captioning
from im2txt.interop import original_checkpoint
from im2txt.model import show_and_tell_model
from tests import original_im2txt

START_ID, END_ID = 0, 1
VOCAB_SIZE = 12000
STEP = 2000000
# JPEG sizes (height, width): landscape, portrait, odd, square, smaller than the 346 resize.
IMAGE_SIZES = [(480, 640), (640, 480), (333, 500), (346, 346), (200, 150)]
# Weights (see OriginalModel.randomize) under which two of the images' captions end (with </S>,
# after 9-10 words) and the others run to max_caption_length, each image's differently.
RANDOM_WEIGHTS = dict(logits_scale=2.0, image_embedding_scale=0.08, lstm_scale=0.5,
                      end_id=END_ID, end_bias=22.0, global_step=STEP)


def _images():
  """Distinct contents: a solid colour, noise, a gradient, a checkerboard, coloured blocks."""
  rng = np.random.default_rng(7)
  images = []
  for k, (h, w) in enumerate(IMAGE_SIZES):
    if k == 0:
      image = np.zeros([h, w, 3]) + [200, 30, 30]
    elif k == 1:
      image = rng.uniform(0, 255, [h, w, 3])
    elif k == 2:
      image = np.tile(np.linspace(0, 255, w)[None, :, None], [h, 1, 3])
    elif k == 3:
      image = (np.indices([h, w]).sum(0) // 20 % 2 * 255)[:, :, None].repeat(3, 2)
    else:
      image = np.kron(rng.uniform(0, 255, [4, 3, 3]), np.ones([h // 4, w // 3, 1]))
    images.append(tf.io.encode_jpeg(image.astype(np.uint8), quality=90).numpy())
  return images


def _word(word_id: int) -> str:
  """The word of an id in the vocabulary files below (<UNK> is the id after the last line)."""
  return "<UNK>" if word_id == VOCAB_SIZE - 1 else f"w{word_id - 2}"


def _word_counts():
  words = ["<S>", "</S>"] + [f"w{i}" for i in range(VOCAB_SIZE - 3)]
  return list(zip(words, range(10 * VOCAB_SIZE, 0, -10)))


class ConvertCheckpointTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.original = original_im2txt.OriginalModel(vocab_size=VOCAB_SIZE)
    cls.original.randomize(seed=1, **RANDOM_WEIGHTS)
    cls.vocab_file = os.path.join(cls.tmp, "word_counts.txt")
    cls.bytes_vocab_file = os.path.join(cls.tmp, "bytes_word_counts.txt")
    vocabulary.write_word_counts(cls.vocab_file, _word_counts())
    original_im2txt.write_python3_word_counts(cls.bytes_vocab_file, _word_counts())
    cls.jpeg_files = []
    for k, jpeg in enumerate(_images()):
      cls.jpeg_files.append(os.path.join(cls.tmp, "images", f"image{k}.jpg"))
      tf.io.gfile.makedirs(os.path.dirname(cls.jpeg_files[-1]))
      with open(cls.jpeg_files[-1], "wb") as f:
        f.write(jpeg)
    cls.expected = [original_im2txt.caption_generator_beam_search(
        cls.original, jpeg, START_ID, END_ID, beam_size=3, max_caption_length=20)
                    for jpeg in _images()]
    cls.preprocessed = np.concatenate([cls.original.preprocess(j) for j in _images()])
    # The "kernel" era converted once (with the `b'word' count` vocabulary, which the conversion
    # only checks), read but never changed by the tests of that era and of run_inference.
    cls.kernel_converted = cls._convert("kernel", vocab_file=cls.bytes_vocab_file)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  @classmethod
  def _save_original(cls, era: str, v1_format: bool = False, only_inception: bool = False):
    directory = tempfile.mkdtemp(dir=cls.tmp)
    name = "inception_v3.ckpt" if only_inception else f"model.ckpt-{STEP}"
    return cls.original.save(os.path.join(directory, name), lstm_era=era,
                             v1_format=v1_format, only_inception=only_inception)

  @classmethod
  def _convert(cls, era: str, v1_format: bool = False, vocab_file: str = None):
    prefix = cls._save_original(era, v1_format)
    output_dir = os.path.join(tempfile.mkdtemp(dir=cls.tmp), "train")
    path = original_checkpoint.convert(prefix, vocab_file or cls.vocab_file, output_dir)
    return output_dir, path

  # --- (a) ------------------------------------------------------------------------------

  def test_keras_inception_from_slim_checkpoint_gives_slims_features(self):
    # TF-slim's inception_v3.ckpt was a V1 checkpoint file with only InceptionV3/ variables.
    slim_file = self._save_original("kernel", v1_format=True, only_inception=True)
    model = show_and_tell_model.ShowAndTellModel(configuration.default_config().model)
    model.build_all()
    model.load_inception_weights(slim_file)
    ours = model.image_features(tf.constant(self.preprocessed)).numpy()
    theirs = self.original.features(self.preprocessed)
    self.assertGreater(np.abs(theirs).max(), 0.5)  # Not a degenerate, all-zero output.
    self.assertGreater(np.abs(theirs[0] - theirs[1]).max(), 0.02)  # Image-dependent.
    self.assertAllClose(ours, theirs, atol=1e-4, rtol=0)

  # --- (b) and the converted train_dir --------------------------------------------------

  def test_every_lstm_era_converts_to_the_same_function(self):
    eras = [("kernel", False), ("weights", False), ("linear", True)]  # The oldest as TF1 V1.
    theirs_state = np.concatenate([self.original.feed_image(j) for j in _images()])
    words = np.array([START_ID, 5, 17, 11998, END_ID])
    state_feed = theirs_state[[0, 1, 2, 3, 4]]
    theirs_softmax, theirs_new_state, _ = self.original.inference_step(words, state_feed)
    for era, v1_format in eras:
      with self.subTest(era=era):
        output_dir, path = (self.kernel_converted if era == "kernel"
                            else self._convert(era, v1_format))
        self.assertEqual(path, os.path.join(output_dir, f"ckpt-{STEP}"))
        self.assertEqual(tf.train.latest_checkpoint(output_dir), path)
        self.assertCountEqual(os.listdir(output_dir),
                              ["checkpoint", "config.json", f"ckpt-{STEP}.index",
                               f"ckpt-{STEP}.data-00000-of-00001"])
        config = configuration.load_config(output_dir)
        self.assertEqual((config.model.vocab_size, config.model.embedding_size,
                          config.model.num_lstm_units), (VOCAB_SIZE, 512, 512))
        self.assertEqual(config.model.inception_batch_norm_momentum, 0.9997)
        model, _, _ = captioning.load_model(output_dir)
        # The state after the image: the original's concat([c, h]), ours (h, c).
        h, c = model.initial_state(tf.constant(self.preprocessed))
        self.assertAllClose(c, theirs_state[:, :512], atol=1e-5, rtol=0)
        self.assertAllClose(h, theirs_state[:, 512:], atol=1e-5, rtol=0)
        log_probs, (new_h, new_c) = model.step(
            tf.constant(words), (tf.constant(state_feed[:, 512:]), tf.constant(state_feed[:, :512])))
        self.assertAllClose(log_probs, np.log(theirs_softmax), atol=5e-5, rtol=0)
        self.assertAllClose(new_c, theirs_new_state[:, :512], atol=1e-5, rtol=0)
        self.assertAllClose(new_h, theirs_new_state[:, 512:], atol=1e-5, rtol=0)

  # --- (c) ------------------------------------------------------------------------------

  def _run_inference(self, checkpoint_path, vocab_file, output_format):
    out, err = io.StringIO(), io.StringIO()
    code = captioning.caption_files(checkpoint_path, vocab_file, ",".join(self.jpeg_files),
                                    configuration.InferenceConfig(beam_size=3),
                                    output_format, out=out, err=err)
    self.assertEqual(code, 0, err.getvalue())
    return out.getvalue()

  def test_run_inference_captions_as_the_original_caption_generator(self):
    complete = [any(c.sentence[-1] == END_ID for c in captions) for captions in self.expected]
    self.assertIn(True, complete)
    self.assertIn(False, complete)
    self.assertGreater(len({tuple(c[0].sentence) for c in self.expected}), 3)
    # One era is enough here: every era converts to the same function (tested above).
    for era, vocab_file in (("kernel", self.bytes_vocab_file),):
      with self.subTest(era=era, vocab_file=os.path.basename(vocab_file)):
        output_dir, _ = self.kernel_converted
        lines = self._run_inference(output_dir, vocab_file, "json").splitlines()
        self.assertLen(lines, len(self.jpeg_files))
        for path, line, expected in zip(self.jpeg_files, lines, self.expected):
          result = json.loads(line)
          self.assertEqual(result["file"], path)
          self.assertEqual(result["captions"], [
              " ".join(_word(w) for w in c.sentence[1:] if w != END_ID) for c in expected])
          # Float32 noise accumulated over up to 19 steps: one step agrees to ~1e-5 (above),
          # but this random LSTM (kernel +-0.5) amplifies state differences; measured <= 1.2e-3.
          self.assertAllClose(result["log_probs"], [c.logprob for c in expected], atol=4e-3,
                              rtol=0)

  def test_text_output_is_the_originals_format(self):
    # Any era will do: every era converts to the same function (tested above).
    output_dir, _ = self.kernel_converted
    with self.assertLogs("absl", "WARNING") as logs:
      text = self._run_inference(output_dir, self.bytes_vocab_file, "text")
    self.assertTrue(any("bytes literals" in line for line in logs.output), logs.output)
    expected_lines = []
    for path, captions in zip(self.jpeg_files, self.expected):
      expected_lines.append("Captions for image %s:" % os.path.basename(path))
      for i, caption in enumerate(captions):
        # The original printed caption.sentence[1:-1], dropping </S>; for a caption that never
        # ended it also dropped its last word, which run_inference prints.
        ids = [w for w in caption.sentence[1:] if w != END_ID]
        expected_lines.append("  %d) %s (p=%f)" % (i, " ".join(_word(w) for w in ids),
                                                   math.exp(caption.logprob)))
    lines = text.splitlines()
    self.assertLen(lines, len(expected_lines))
    for line, expected in zip(lines, expected_lines):
      if expected.startswith("Captions"):
        self.assertEqual(line, expected)
      else:
        words, p = line.rsplit(" (p=", 1)
        expected_words, expected_p = expected.rsplit(" (p=", 1)
        self.assertEqual(words, expected_words)
        self.assertAllClose(float(p[:-1]), float(expected_p[:-1]), rtol=4e-3, atol=2e-6)

  # --- errors -----------------------------------------------------------------------------

  def test_slim_inception_checkpoint_alone_is_not_an_im2txt_model(self):
    slim_file = self._save_original("kernel", v1_format=True, only_inception=True)
    output_dir = os.path.join(self.tmp, "not_written")
    with self.assertRaisesRegex(ValueError, r"not an im2txt model checkpoint; missing "
                                r"image_embedding/weights, seq_embedding/map, logits/weights, "
                                r"logits/biases, the LSTM's kernel and bias \(one of: "
                                r"lstm/basic_lstm_cell/kernel \+ lstm/basic_lstm_cell/bias"):
      original_checkpoint.convert(slim_file, self.vocab_file, output_dir)
    self.assertFalse(os.path.exists(output_dir))
    self.assertEmpty([n for n in os.listdir(self.tmp) if n.startswith("not_written")])

  def test_bad_vocabulary_or_output_dir_writes_nothing(self):
    prefix = self._save_original("kernel")
    big_vocab = os.path.join(self.tmp, "big_word_counts.txt")
    vocabulary.write_word_counts(big_vocab, _word_counts() + [("extra1", 1), ("extra2", 1)])
    output_dir = os.path.join(self.tmp, "new_dir")
    with self.assertRaisesRegex(ValueError, "12002 words .* predicts 12000"):
      original_checkpoint.convert(prefix, big_vocab, output_dir)
    self.assertFalse(os.path.exists(output_dir))
    taken = os.path.join(self.tmp, "taken")
    os.makedirs(taken)
    with open(os.path.join(taken, "keep.txt"), "w") as f:
      f.write("mine")
    with self.assertRaisesRegex(ValueError, "exists and is not an empty directory"):
      original_checkpoint.convert(prefix, self.vocab_file, taken)
    self.assertEqual(os.listdir(taken), ["keep.txt"])
    with self.assertRaisesRegex(FileNotFoundError, "no checkpoint at .*model.ckpt-7"):
      original_checkpoint.convert(os.path.join(self.tmp, "model.ckpt-7"), self.vocab_file,
                                  output_dir)

  def _main(self, original, output_dir, vocab_file=None):
    convert_checkpoint.FLAGS.unparse_flags()
    convert_checkpoint.FLAGS(["convert_checkpoint", f"--original_checkpoint={original}",
                              f"--vocab_file={vocab_file or self.vocab_file}",
                              f"--output_dir={output_dir}"])
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      code = convert_checkpoint.main([])
    return code, out.getvalue(), err.getvalue()

  def test_command_line_on_a_2016_train_dir(self):
    # The oldest era, as a TF1 V1 file, in a directory whose `checkpoint` index names the
    # writer's absolute path: only its file name is used, inside the directory.
    prefix = self._save_original("linear", v1_format=True)
    directory = os.path.dirname(prefix)
    with open(os.path.join(directory, "checkpoint"), "w") as f:
      f.write(f'model_checkpoint_path: "/home/someone/im2txt/model/train/model.ckpt-{STEP}"\n')
    output_dir = os.path.join(tempfile.mkdtemp(dir=self.tmp), "train")
    code, out, err = self._main(directory, output_dir, self.bytes_vocab_file)
    self.assertEqual(code, 0, err)
    self.assertIn(f"Converted checkpoint written to {output_dir}/ckpt-{STEP}", out)
    model, _, _ = captioning.load_model(output_dir)
    h, c = model.initial_state(tf.constant(self.preprocessed[:2]))
    theirs = np.concatenate([self.original.feed_image(j) for j in _images()[:2]])
    self.assertAllClose(np.concatenate([c, h], axis=1), theirs, atol=1e-5, rtol=0)
    # Naming one of a V2 checkpoint's files works too; the same output_dir again is an error.
    index_file = self._save_original("kernel") + ".index"
    other_dir = os.path.join(tempfile.mkdtemp(dir=self.tmp), "train")
    self.assertEqual(self._main(index_file, other_dir)[0], 0)
    self.assertEqual(tf.train.latest_checkpoint(other_dir), f"{other_dir}/ckpt-{STEP}")
    code, _, err = self._main(index_file, output_dir)
    self.assertEqual(code, 2)
    self.assertIn("Error: --output_dir", err)
    self.assertIn("exists and is not an empty directory", err)

  def test_command_line_errors_name_the_problem_and_write_nothing(self):
    prefix = self._save_original("kernel")
    os.remove(prefix + ".data-00000-of-00001")  # A download that did not finish.
    output_dir = os.path.join(self.tmp, "never")
    code, out, err = self._main(prefix, output_dir)
    self.assertEqual((code, out), (2, ""))
    self.assertRegex(err, r"^Error: .*model.ckpt-2000000")
    self.assertNotIn("Traceback", err)
    code, _, err = self._main(prefix, "gs://bucket/model/train")
    self.assertEqual(code, 2)
    self.assertIn("--output_dir must be a local directory", err)
    self.assertEmpty([n for n in os.listdir(self.tmp) if n.startswith("never")])


if __name__ == "__main__":
  tf.test.main()
