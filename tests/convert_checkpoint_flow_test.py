"""A converted original im2txt checkpoint is a train_dir like any other, and phase 1 starts
from TF-slim's Inception checkpoint (the same small original model's InceptionV3 variables).

A small original model (tests/original_im2txt.py: slim InceptionV3, vocabulary 24, LSTM 16),
converted with a `b'word' count` vocabulary, is evaluated (perplexity equal to the original
graph's, teacher-forced), exported as a SavedModel that captions as run_inference does, and
trained further in phase 2, all on the converted directory unchanged.
"""

import dataclasses
import io
import json
import math
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from im2txt import configuration
from im2txt.evaluation import evaluation_loop
from im2txt.inference import captioning
from im2txt.inference import serving
from im2txt.interop import original_checkpoint
from im2txt.model import show_and_tell_model
from im2txt.model import slim_inception
from im2txt.training import trainer
from tests import original_im2txt
from tests import training_testdata as td

VOCAB_SIZE = 24
STEP = 40
# Word ids follow training_testdata: <S> = 1, </S> = 2.
WORDS = ["w0", "<S>", "</S>"] + [f"w{i}" for i in range(3, VOCAB_SIZE - 1)]
CAPTIONS = {0: [3, 4, 5], 1: [6, 7], 2: [8, 9, 10, 11], 3: [12, 5], 4: [13, 14, 4, 20]}


class ConvertedTrainDirTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.original = original_im2txt.OriginalModel(vocab_size=VOCAB_SIZE, embedding_size=16,
                                                 num_lstm_units=16)
    cls.original.randomize(seed=3, logits_scale=1.0, image_embedding_scale=0.3, lstm_scale=0.5,
                           end_id=td.END_ID, global_step=STEP)
    prefix = cls.original.save(os.path.join(cls.tmp, "original", f"model.ckpt-{STEP}"),
                               lstm_era="weights")
    cls.vocab_file = os.path.join(cls.tmp, "word_counts.txt")
    original_im2txt.write_python3_word_counts(
        cls.vocab_file, [(w, 100 - i) for i, w in enumerate(WORDS)])
    cls.examples = td.colour_examples(CAPTIONS, size=60, textured=True)
    cls.pattern = td.write_shards(os.path.join(cls.tmp, "data"), cls.examples, 2, name="val")
    cls.train_dir = os.path.join(cls.tmp, "train")
    original_checkpoint.convert(prefix, cls.vocab_file, cls.train_dir)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def _original_perplexity(self) -> float:
    """exp(mean token loss), teacher-forced through the original's feed_image/inference_step."""
    total, count = 0.0, 0
    for _, jpeg, caption in self.examples:
      ids = [td.START_ID] + caption + [td.END_ID]
      state = self.original.feed_image(jpeg)
      for word, target in zip(ids[:-1], ids[1:]):
        softmax, state, _ = self.original.inference_step(np.array([word]), state)
        total -= math.log(softmax[0, target])
        count += 1
    return math.exp(total / count)

  def test_evaluate(self):
    eval_dir = os.path.join(self.tmp, "eval")
    with self.assertLogs("absl", "WARNING") as logs:
      results = evaluation_loop.run_evaluation_loop(
          self.train_dir, eval_dir, self.pattern, self.vocab_file,
          eval_overrides={"num_eval_examples": len(self.examples), "num_caption_images": 3},
          options=evaluation_loop.LoopOptions(once=True))
    self.assertTrue(any("bytes literals" in line for line in logs.output))
    (result,) = results
    self.assertEqual((result.step, result.num_examples), (STEP, len(self.examples)))
    self.assertAllClose(result.perplexity, self._original_perplexity(), rtol=1e-5)
    self.assertIn("CIDEr", result.caption_metrics)

  def test_export_saved_model_captions_as_run_inference(self):
    paths = []
    for image_id, jpeg, _ in self.examples[:3]:
      paths.append(os.path.join(self.tmp, f"image{image_id}.jpg"))
      with open(paths[-1], "wb") as f:
        f.write(jpeg)
    out = io.StringIO()
    inference_config = configuration.InferenceConfig(beam_size=2)
    self.assertEqual(captioning.caption_files(self.train_dir, self.vocab_file, ",".join(paths),
                                              inference_config, "json", out=out), 0)
    expected = [json.loads(line) for line in out.getvalue().splitlines()]
    export_dir = serving.export_saved_model(self.train_dir, self.vocab_file,
                                            os.path.join(self.tmp, "export"), inference_config)
    serve = tf.saved_model.load(export_dir).signatures["serving_default"]
    served = serve(jpegs=tf.constant([e[1] for e in self.examples[:3]]))
    for row, log_probs, want in zip(served["captions"].numpy(), served["log_probs"].numpy(),
                                    expected):
      self.assertEqual([c.decode() for c in row], want["captions"])
      self.assertAllClose(log_probs, want["log_probs"], atol=1e-4)

  def test_phase2_continues_from_the_converted_step(self):
    train_dir = os.path.join(self.tmp, "train_copy")
    shutil.copytree(self.train_dir, train_dir)
    # The converted config.json is the original's (batch 32); a config file may change
    # everything but the model.
    config = configuration.load_config(train_dir)
    config.input = dataclasses.replace(config.input, batch_size=2, values_per_input_shard=4)
    config_file = configuration.save_config(config, os.path.join(self.tmp, "config"))
    config = trainer.resolve_config(train_dir, config_file=config_file)
    options = trainer.TrainOptions(input_file_pattern=self.pattern, train_dir=train_dir,
                                   train_inception=True, number_of_steps=STEP + 2, seed=1)
    result = trainer.train(config, options)
    self.assertEqual((result.start_step, result.global_step), (STEP, STEP + 2))
    self.assertTrue(np.isfinite(result.last_loss))
    self.assertEqual(result.last_checkpoint, os.path.join(train_dir, f"ckpt-{STEP + 2}"))

  def test_phase1_starts_from_a_slim_inception_checkpoint(self):
    tmp = tempfile.mkdtemp(dir=self.tmp)
    original = self.original
    # inception_v3_2016_08_28's inception_v3.ckpt: a TF1 V1 checkpoint file.
    slim_file = original.save(os.path.join(tmp, "inception_v3.ckpt"), only_inception=True,
                              v1_format=True)
    self.assertTrue(os.path.isfile(slim_file))
    pattern = td.write_shards(os.path.join(tmp, "data"), td.colour_examples(CAPTIONS), 2)
    config = td.tiny_config(vocab_size=VOCAB_SIZE)
    options = trainer.TrainOptions(input_file_pattern=pattern,
                                   train_dir=os.path.join(tmp, "train"), number_of_steps=1,
                                   seed=2, inception_checkpoint_file=slim_file)
    result = trainer.train(config, options)

    model = show_and_tell_model.ShowAndTellModel(config.model)
    model.build_all()
    tf.train.Checkpoint(model=model).restore(result.last_checkpoint).expect_partial()
    values = original.values()
    mapping = slim_inception.variable_map(model.inception)
    self.assertLen(mapping, 94 * 4)
    for name, variable in mapping.items():
      # Phase 1 keeps Inception frozen, statistics included: exactly the slim values.
      self.assertAllEqual(variable.numpy(), values[name], msg=name)

  def test_a_wrong_shape_is_named(self):
    tmp = tempfile.mkdtemp(dir=self.tmp)
    values = self.original.values()
    name = "InceptionV3/Mixed_6b/Branch_1/Conv2d_0b_1x7/weights"
    with tf.Graph().as_default():
      # A checkpoint whose one variable has the transposed (7x1) kernel.
      variables = {n: tf.compat.v1.Variable(v.T if n == name else v, name=n.replace("/", "_"))
                   for n, v in values.items() if n.startswith("InceptionV3/")}
      with tf.compat.v1.Session() as session:
        session.run(tf.compat.v1.global_variables_initializer())
        path = tf.compat.v1.train.Saver(variables).save(session, os.path.join(tmp, "bad.ckpt"))
    model = show_and_tell_model.ShowAndTellModel(td.tiny_config().model)
    model.build_all()
    with self.assertRaisesRegex(ValueError, rf"bad.ckpt: variable {name} has shape "
                                r"\[128, 128, 7, 1\], InceptionV3 needs \[1, 7, 128, 128\]"):
      model.load_inception_weights(path)
    with self.assertRaisesRegex(ValueError, rf"not a TF-slim InceptionV3 checkpoint: 1 of its "
                                rf"376 variables are missing: {name}"):
      slim_inception.assign_from_reader(model.inception, lambda n: values[n],
                                        {n: list(v.shape) for n, v in values.items()
                                         if n != name}, "that.ckpt")


if __name__ == "__main__":
  tf.test.main()
