"""Tests of the feature cache: beam_jobs/extract_image_features and phase 1 on its records.

Data: textured colour JPEGs, two captions each, whose two records sit in different shards (as
build_mscoco_data's shuffle of (image, caption) records, the original's, puts them). The Inception is a random one, initialised and
calibrated by `train --number_of_steps=0`, as a user without pretrained weights would do.
"""

import dataclasses
import io
import json
import os
import shutil

import numpy as np
import tensorflow as tf

from beam_jobs import extract_image_features
from beam_jobs import image_features
from im2txt import references
from im2txt import sequence_example
from im2txt.data import feature_cache
from im2txt.data import inputs
from im2txt.evaluation import evaluation_loop
from im2txt.inference import captioning
from im2txt.model import image_processing
from im2txt.training import train_state
from im2txt.training import trainer
from tests import training_testdata as td

# image id -> two captions (word ids without <S>/</S>).
CAPTIONS = {0: ([3, 4, 5], [6, 4]), 1: ([6, 7], [8, 9, 7]), 2: ([8, 9, 10, 11], [3, 10]),
            3: ([12, 5], [12, 13, 5]), 4: ([13, 14, 4], [14, 3])}
NUM_VIEWS = 2
SEED = 5


def _record(image_id: int, jpeg: bytes, caption) -> bytes:
  ids = [td.START_ID] + list(caption) + [td.END_ID]
  return sequence_example.make_sequence_example(
      image_id, jpeg, [f"w{t}" for t in ids], ids).SerializeToString()


def write_grouped_shards(directory: str, images, num_shards: int, extra=None):
  """Caption j of image i goes to shard (i + j) % num_shards; `extra` {shard index:
  [serialized, ...]} are appended to a shard. Returns (pattern, {name: records})."""
  tf.io.gfile.makedirs(directory)
  shards = {f"train-{k:05d}-of-{num_shards:05d}": [] for k in range(num_shards)}
  for i, (image_id, jpeg) in enumerate(images):
    for j, caption in enumerate(CAPTIONS[image_id]):
      shards[f"train-{(i + j) % num_shards:05d}-of-{num_shards:05d}"].append(
          _record(image_id, jpeg, caption))
  for index, records in (extra or {}).items():
    shards[f"train-{index:05d}-of-{num_shards:05d}"].extend(records)
  for name, records in shards.items():
    with tf.io.TFRecordWriter(os.path.join(directory, name)) as writer:
      for record in records:
        writer.write(record)
  return os.path.join(directory, f"train-?????-of-{num_shards:05d}"), shards


def read_records(path: str):
  return [r.numpy() for r in tf.data.TFRecordDataset(path)]


def config():
  # No LSTM dropout: the image and feature steps below then draw no random mask.
  return td.tiny_config(lstm_keep=1.0)


def images():
  return [(image_id, td.textured_jpeg(td.COLOURS[image_id], image_id, size=60))
          for image_id in sorted(CAPTIONS)]


class FeatureRecordTest(tf.test.TestCase):

  def test_round_trip(self):
    image = _record(7, b"jpeg bytes", [3, 4])
    views = [[0.5, -1.25, 3.0], [1e-7, 2.0, -0.0]]
    serialized = sequence_example.to_feature_example(
        tf.train.SequenceExample.FromString(image), views).SerializeToString()
    self.assertTrue(sequence_example.is_feature_record(serialized))
    self.assertFalse(sequence_example.is_feature_record(image))
    self.assertEqual((2, 3), sequence_example.feature_shape(serialized))
    parsed = sequence_example.parse_feature_example(tf.constant(serialized), 2, 3)
    self.assertAllEqual(np.array(views, np.float32), parsed["image_features"])
    self.assertEqual(7, int(parsed["image_id"]))
    self.assertAllEqual([1, 3, 4, 2], parsed["caption_ids"])
    self.assertAllEqual([b"w1", b"w3", b"w4", b"w2"], parsed["caption"])
    # Everything but the JPEG bytes is the image record's, unchanged.
    back = tf.train.SequenceExample.FromString(serialized)
    original = tf.train.SequenceExample.FromString(image)
    self.assertNotIn(sequence_example.IMAGE_DATA_FEATURE, back.context.feature)
    self.assertEqual(original.feature_lists, back.feature_lists)
    for key in (sequence_example.IMAGE_FEATURES_FEATURE, sequence_example.FEATURE_VIEWS_FEATURE):
      del back.context.feature[key]
    del original.context.feature[sequence_example.IMAGE_DATA_FEATURE]
    self.assertEqual(original, back)


  def test_first_record_is_read_without_tf_data(self):
    path = os.path.join(self.get_temp_dir(), "records")
    records = [_record(1, b"a" * 300, [3]), _record(2, b"b", [4, 5])]
    with tf.io.TFRecordWriter(path) as writer:
      for record in records:
        writer.write(record)
    self.assertEqual(records[0], feature_cache.first_record(path))
    self.assertEqual(records, read_records(path))  # tf.data's reading agrees.
    empty = os.path.join(self.get_temp_dir(), "empty")
    tf.io.TFRecordWriter(empty).close()
    self.assertIsNone(feature_cache.first_record(empty))
    self.assertIsNone(feature_cache.feature_shape(f"{empty},{path}"))


class ExtractImageFeaturesTest(tf.test.TestCase):
  """One random Inception, one job run (DirectRunner) with 2 training views and a shard with
  bad records, shared by the tests; the end-to-end test continues from them as a user would:
  phase 1 on the features, phase 2 on the images, the evaluator and run_inference."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tf.io.gfile.join(tf.compat.v1.test.get_temp_dir(), "features_test")
    cls.config = config()
    bad_jpeg = _record(9, b"\xff\xd8 not really a JPEG", [3, 4])
    no_image = tf.train.SequenceExample()
    no_image.context.feature["image/image_id"].int64_list.value.append(10)
    cls.pattern, cls.shards = write_grouped_shards(
        os.path.join(cls.tmp, "data"), images(), 2,
        extra={1: [bad_jpeg, no_image.SerializeToString()]})
    # The random Inception the features and phase 1 share: ckpt-0 of a 0-step run.
    cls.init_dir = os.path.join(cls.tmp, "init")
    trainer.train(cls.config, trainer.TrainOptions(
        input_file_pattern=cls.pattern, train_dir=cls.init_dir, number_of_steps=0, seed=1,
        inception_checkpoint_file=train_state.RANDOM_INCEPTION, skip_bad_images=True))
    # The split's references (self-critical training reads them) travel with the shards.
    references.write_references(os.path.join(cls.tmp, "data", "train_references.json"), "train",
                                {7: ["a red square"], 8: ["a blue circle", "blue circle"]})
    cls.features_dir = os.path.join(cls.tmp, "features")
    cls.job_argv = [f"--input_file_pattern={cls.pattern}", f"--output_dir={cls.features_dir}",
                    f"--train_dir={cls.init_dir}", f"--num_views={NUM_VIEWS}", f"--seed={SEED}"]
    # DirectRunner in one process (multi-processing and DaskRunner: //tests:distribution_test).
    cls.counts = extract_image_features.run(cls.job_argv + ["--direct_running_mode=in_memory"])
    cls.model = image_features.load_inception_model(
        cls.config.model, tf.train.latest_checkpoint(cls.init_dir), "")

  def test_same_shards_same_records_in_order(self):
    for name, records in self.shards.items():
      # All but the two bad records (image 9's JPEG does not decode, image 10 has none).
      good = [r for r in records
              if tf.train.SequenceExample.FromString(r).context.feature[
                  "image/image_id"].int64_list.value[0] not in (9, 10)]
      written = read_records(os.path.join(self.features_dir, name))
      self.assertLen(written, len(good), msg=name)
      for image_record, feature_record in zip(good, written):
        a = sequence_example.parse_sequence_example_proto(image_record)
        b = tf.train.SequenceExample.FromString(feature_record)
        self.assertEqual(a["image_id"], b.context.feature["image/image_id"].int64_list.value[0])
        self.assertEqual(a["caption_ids"], [f.int64_list.value[0] for f in
                                            b.feature_lists.feature_list["image/caption_ids"]
                                            .feature])
    info = feature_cache.read_info(self.features_dir)
    self.assertEqual(1 + NUM_VIEWS, info["views"])
    self.assertEqual(feature_cache.inception_fingerprint(self.model.inception),
                     info["inception_fingerprint"])

  def test_references_file_is_copied(self):
    with open(os.path.join(self.tmp, "data", "train_references.json"), "rb") as f:
      expected = f.read()
    with open(os.path.join(self.features_dir, "train_references.json"), "rb") as f:
      self.assertEqual(f.read(), expected)

  def test_each_image_through_inception_once(self):
    c = self.counts.counts
    self.assertEqual(len(CAPTIONS), c[image_features.IMAGES_COMPUTED])
    self.assertEqual(len(CAPTIONS) * (1 + NUM_VIEWS), c[image_features.VIEWS_COMPUTED])
    self.assertEqual(2 * len(CAPTIONS), c[image_features.RECORDS_WRITTEN])
    self.assertEqual(2, c[image_features.SHARDS_WRITTEN])

  def test_bad_records_are_counted_and_skipped(self):
    c, examples = self.counts.counts, self.counts.examples
    bad_shard = os.path.join(self.tmp, "data", "train-00001-of-00002")
    first_bad = len(self.shards["train-00001-of-00002"]) - 2
    self.assertEqual(1, c[image_features.IMAGES_SKIPPED_UNDECODABLE])
    self.assertEqual([f"{bad_shard} record {first_bad}"],
                     examples[image_features.IMAGES_SKIPPED_UNDECODABLE])
    self.assertEqual(1, c[image_features.RECORDS_SKIPPED_BAD_IMAGE])
    self.assertEqual([f"{bad_shard} record {first_bad + 1}"],
                     examples[image_features.RECORDS_SKIPPED_MALFORMED])

  def test_features_equal_the_models_own_inception_output(self):
    jpegs = dict(images())
    # Compiled, as the trainer's step and the job run it: eagerly, TensorFlow does not fuse each
    # convolution with its batch norm, and a random Inception's outputs then differ by ~5e-4.
    features_fn = tf.function(lambda x: self.model.image_features(x, training=False))
    checked = 0
    for name in self.shards:
      for serialized in read_records(os.path.join(self.features_dir, name)):
        record = tf.train.SequenceExample.FromString(serialized)
        image_id = record.context.feature["image/image_id"].int64_list.value[0]
        views = np.array(record.context.feature["image/features"].float_list.value).reshape(
            1 + NUM_VIEWS, -1)
        digest = image_features.image_digest(jpegs[image_id])
        expected = [image_processing.process_image(jpegs[image_id], self.config.model, False)]
        expected += [image_processing.process_image(
            jpegs[image_id], self.config.model, True,
            seed=image_features.view_seed(SEED, digest, view)) for view in range(1, 1 + NUM_VIEWS)]
        direct = features_fn(tf.stack(expected)).numpy()
        self.assertAllClose(direct, views, atol=1e-5, rtol=0)
        # The training views are distinct crops/flips, not copies of the evaluation crop.
        self.assertGreater(np.abs(views[1] - views[0]).max(), 1e-3)
        checked += 1
    self.assertEqual(2 * len(CAPTIONS), checked)

  def test_phase1_step_on_features_equals_the_step_on_images(self):
    name = "train-00000-of-00002"
    image_records = [sequence_example.parse_sequence_example_proto(r)
                     for r in self.shards[name]]
    feature_records = read_records(os.path.join(self.features_dir, name))
    self.assertLen(feature_records, len(image_records))
    views, dim = sequence_example.feature_shape(feature_records[0])
    captions = [tf.constant(r["caption_ids"], tf.int64) for r in image_records]
    seqs = [inputs.split_caption(c) for c in captions]
    length = max(int(tf.size(s[0])) for s in seqs)

    def pad(values):
      return tf.stack([tf.pad(v, [[0, length - tf.size(v)]]) for v in values])

    batch = {"input_seqs": pad([s[0] for s in seqs]), "target_seqs": pad([s[1] for s in seqs]),
             "input_mask": pad([s[2] for s in seqs])}
    image_batch = dict(batch, images=tf.stack([
        image_processing.process_image(r["image_data"], self.config.model, False)
        for r in image_records]))
    feature_batch = dict(batch, image_features=tf.stack([
        sequence_example.parse_feature_example(tf.constant(r), views, dim)["image_features"][0]
        for r in feature_records]))

    results = []
    for pattern, batch in ((self.pattern, image_batch),
                           (os.path.join(self.features_dir, "train-*"), feature_batch)):
      options = trainer.TrainOptions(input_file_pattern=pattern, train_dir=self.init_dir,
                                     strategy="default")
      strategy = tf.distribute.get_strategy()
      state = train_state.build(strategy, self.config, options, len(image_records),
                                self.create_tempdir().full_path,
                                feature_cache.feature_shape(pattern))
      train_step, _ = trainer.make_train_functions(strategy, state, self.config)
      out = train_step(batch, tf.zeros([2]))
      results.append((out, [v.numpy() for v in state.model.trainable_variables]))
    (image_out, image_weights), (feature_out, feature_weights) = results
    self.assertAllClose(image_out["batch_loss"], feature_out["batch_loss"], atol=1e-5, rtol=0)
    self.assertAllClose(image_out["grad_norm"], feature_out["grad_norm"], atol=1e-5, rtol=0)
    self.assertLen(feature_weights, len(image_weights))
    self.assertGreater(len(image_weights), 4)  # The decoder's, not Inception's (frozen).
    for a, b in zip(image_weights, feature_weights):
      self.assertAllClose(a, b, atol=1e-5, rtol=0)

  def test_rerun_writes_only_missing_shards_and_refuses_other_settings(self):
    kept = os.path.join(self.features_dir, "train-00000-of-00002")
    redo = os.path.join(self.features_dir, "train-00001-of-00002")
    kept_bytes, redo_bytes = open(kept, "rb").read(), open(redo, "rb").read()
    os.utime(kept, (1, 1))
    os.remove(redo)
    counts = extract_image_features.run(self.job_argv + ["--direct_running_mode=in_memory"])
    self.assertEqual(1, counts.counts[image_features.SHARDS_WRITTEN])
    self.assertEqual(1, os.stat(kept).st_mtime)  # Not rewritten.
    self.assertEqual(kept_bytes, open(kept, "rb").read())
    self.assertEqual(redo_bytes, open(redo, "rb").read())  # Same bytes as the first run.
    with self.assertRaisesRegex(ValueError, "other settings or another Inception"):
      extract_image_features.run(self.job_argv[:-2] + ["--num_views=1", f"--seed={SEED}"])

  def test_trainer_refuses_phase2_and_a_foreign_inception_on_features(self):
    pattern = os.path.join(self.features_dir, "train-*")
    options = trainer.TrainOptions(input_file_pattern=pattern,
                                   train_dir=os.path.join(self.tmp, "phase2"),
                                   train_inception=True, inception_checkpoint_file="random")
    with self.assertRaisesRegex(ValueError, "cannot train phase 2"):
      trainer.train(self.config, options)
    options.train_inception = False
    with self.assertRaisesRegex(ValueError, "starts from the Inception that computed them"):
      trainer.train(self.config, options)
    # What train_state.build checks once Inception is loaded: one weight changed is another one.
    weight = self.model.inception.weights[0]
    saved = weight.numpy()
    feature_cache.check_model(self.model, feature_cache.feature_shape(pattern))
    try:
      weight.assign(saved + 1e-3)
      with self.assertRaisesRegex(ValueError, "computed by another InceptionV3"):
        feature_cache.check_model(self.model, feature_cache.feature_shape(pattern))
    finally:
      weight.assign(saved)
    with self.assertRaisesRegex(ValueError, "hold no images"):
      inputs.make_dataset(pattern, self.config, is_training=False)

  def test_end_to_end_phase1_on_features_phase2_on_images_evaluate_caption(self):
    train_dir = os.path.join(self.create_tempdir().full_path, "train")
    shutil.copytree(self.init_dir, train_dir)  # ckpt-0: the Inception of the features.
    start = td.inception_values(os.path.join(train_dir, "ckpt-0"))
    options = trainer.TrainOptions(input_file_pattern=os.path.join(self.features_dir, "train-*"),
                                   train_dir=train_dir, number_of_steps=6, seed=2)
    phase1 = trainer.train(self.config, options)
    self.assertLess(phase1.last_loss, phase1.first_loss)
    # Phase 1 on features kept Inception as it was, in a checkpoint as complete as ever.
    phase1_values = td.inception_values(phase1.last_checkpoint)
    self.assertEqual(sorted(start), sorted(phase1_values))
    for key, value in start.items():
      self.assertAllEqual(value, phase1_values[key], msg=key)
    options = dataclasses.replace(options, input_file_pattern=self.pattern, train_inception=True,
                                  number_of_steps=8, skip_bad_images=True)
    phase2 = trainer.train(self.config, options)
    self.assertEqual((6, 8), (phase2.start_step, phase2.global_step))
    phase2_values = td.inception_values(phase2.last_checkpoint)
    self.assertTrue(any(not np.array_equal(phase1_values[k], phase2_values[k])
                        for k in phase1_values))

    vocab = os.path.join(self.tmp, "word_counts.txt")
    words = {td.START_ID: "<S>", td.END_ID: "</S>"}
    with open(vocab, "w") as f:
      f.writelines(f"{words.get(i, f'w{i}')} {100 - i}\n"
                   for i in range(self.config.model.vocab_size - 1))
    eval_dir = os.path.join(os.path.dirname(train_dir), "eval")
    # What `evaluate --once --num_caption_images=0` runs (perplexity only: faster), in this
    # process (the binary has its tests: evaluate_test).
    results = evaluation_loop.run_evaluation_loop(
        train_dir, eval_dir, f"{os.path.dirname(self.pattern)}/train-00000-of-00002",
        vocab_file=vocab, eval_overrides={"num_caption_images": 0},
        options=evaluation_loop.LoopOptions(once=True))
    self.assertEqual([8], [result.step for result in results])
    with open(os.path.join(eval_dir, "evaluation_state.json")) as f:
      self.assertEqual(8, json.load(f)["last_evaluated_step"])
    jpeg = os.path.join(self.tmp, "image.jpg")
    with open(jpeg, "wb") as f:
      f.write(images()[0][1])
    out = io.StringIO()  # run_inference's library, in this process (the binary has its tests).
    self.assertEqual(0, captioning.caption_files(
        train_dir, vocab, jpeg, captioning.inference_config(train_dir, {}), out=out))
    self.assertIn("Captions for image image.jpg:", out.getvalue())
    self.assertRegex(out.getvalue(), r"  0\) .* \(p=\d\.\d{6}\)")


if __name__ == "__main__":
  tf.test.main()
