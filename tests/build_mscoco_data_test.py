"""Tests for the Beam data job: beam_jobs/{build_mscoco_data,caption_metadata,image_check,...}.py.

Pure functions are tested directly, the shard transform with TestPipeline + assert_that, and the
whole job with run([...]) on a tiny COCO-format dataset holding every kind of bad input.
"""

import collections
import io
import json
import os
import random
import re
import shutil
import tempfile
import unittest
from unittest import mock

import numpy as np
import tensorflow as tf
from apache_beam.options.pipeline_options import DirectOptions
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that
from apache_beam.testing.util import equal_to
from PIL import Image

from beam_jobs import build_mscoco_data
from beam_jobs import build_report
from beam_jobs import caption_metadata
from beam_jobs import image_check
from beam_jobs import make_sample_dataset as sample
from beam_jobs import shard_writer
from beam_jobs.build_report import Tally
from im2txt import concepts
from im2txt import references
from im2txt import sequence_example
from im2txt import vocabulary

IN_MEMORY = ["--runner=DirectRunner", "--direct_running_mode=in_memory",
             "--direct_num_workers=1"]
SHARD_FLAGS = ["--train_shards=3", "--val_shards=2", "--test_shards=2"]
# Fewer than the sample vocabulary's concept words, so the cap shows.
NUM_CONCEPTS = 12


def _encode(mode="RGB", size=(24, 16), fmt="JPEG", colour=(200, 30, 30)):
  image = Image.new("RGB", size, colour)
  image.paste((30, 30, 200), (0, 0, size[0] // 2, size[1]))
  if mode != "RGB":
    image = image.convert(mode)
  buffer = io.BytesIO()
  image.save(buffer, fmt)
  return buffer.getvalue()


def _write(path, data):
  with open(path, "wb") as f:
    f.write(data)


def _read_records(pattern):
  """name -> list of parsed records, for every file matching pattern."""
  return {os.path.basename(path): [sequence_example.parse_sequence_example_proto(r.numpy())
                                   for r in tf.data.TFRecordDataset(path)]
          for path in sorted(tf.io.gfile.glob(pattern))}


def _dir_bytes(directory):
  contents = {}
  for name in sorted(os.listdir(directory)):
    if os.path.isdir(os.path.join(directory, name)):
      continue
    with open(os.path.join(directory, name), "rb") as f:
      contents[name] = f.read()
  return contents


def make_bad_dataset(root):
  """A COCO-format dataset with one of each bad input (see BuildMscocoDataRunTest).

  Train file: 6 generated images (ids 1-6) of which 1 is made grayscale, 2 CMYK, 3 PNG data,
  4 zero bytes, 5 a truncated JPEG; 7 is listed but missing, 8 is a text file; 9 has only an
  empty caption; one annotation names unknown image id 999; image 6 also has an empty, a
  whitespace-only, a 150-word and a non-ASCII caption. Val file: 20 good images.
  """
  dataset = sample.make_sample_dataset(root, num_train_images=6, num_val_images=20,
                                       image_size=32, seed=1)
  image_dir = dataset.train_image_dir
  name = lambda image_id: os.path.join(image_dir, "COCO_train2014_%012d.jpg" % image_id)
  _write(name(1), _encode("L"))
  _write(name(2), _encode("CMYK"))
  _write(name(3), _encode(fmt="PNG"))
  _write(name(4), b"")
  with open(name(5), "rb") as f:
    good = f.read()
  _write(name(5), good[:len(good) // 2])
  _write(os.path.join(image_dir, "notimage.jpg"), b"<html>404 Not Found</html>")
  with open(dataset.train_captions_file) as f:
    data = json.load(f)
  data["images"] += [{"id": 7, "file_name": "missing.jpg"},
                     {"id": 8, "file_name": "notimage.jpg"},
                     {"id": 9, "file_name": "COCO_train2014_000000000006.jpg"}]
  extra = [(7, "a red circle")] * 5 + [(8, "a blue square")] * 5 + [
      (999, "an unknown image"), (9, "  "), (6, ""), (6, " \t\n"),
      (6, " ".join(["very"] * 150) + " long"),
      (6, "a caf\u00e9 with a na\u00efve cr\u00e8me br\u00fbl\u00e9e")]
  for image_id, caption in extra:
    data["annotations"].append({"id": 90000 + len(data["annotations"]), "image_id": image_id,
                                "caption": caption})
  with open(dataset.train_captions_file, "w") as f:
    json.dump(data, f)
  return dataset


class CaptionMetadataTest(unittest.TestCase):

  def test_split_as_the_original(self):
    splits = caption_metadata.split_coco(["t1", "t2"], list(range(20)))
    self.assertEqual(splits["train"], ["t1", "t2"] + list(range(17)))
    self.assertEqual(splits["val"], [17])
    self.assertEqual(splits["test"], [18, 19])
    splits = caption_metadata.split_coco([], list(range(40504)))  # MSCOCO val2014.
    self.assertEqual([len(splits[s]) for s in ("train", "val", "test")], [34428, 2025, 4051])

  def test_load_coco_counts_and_skips_problems(self):
    with tempfile.TemporaryDirectory() as tmp:
      path = os.path.join(tmp, "captions.json")
      with open(path, "w") as f:
        json.dump({"images": [{"id": 3, "file_name": "c.jpg"}, {"id": 1, "file_name": "a.jpg"},
                              {"id": 3, "file_name": "dup.jpg"}, {"file_name": "noid.jpg"},
                              {"id": 2, "file_name": "b.jpg"}],
                   "annotations": [{"image_id": 1, "caption": "A Dog."},
                                   {"image_id": 3, "caption": "a cat"},
                                   {"image_id": 7, "caption": "who?"},
                                   {"image_id": 1, "caption": None},
                                   {"image_id": 1, "caption": "x " * 60},
                                   {"image_id": 1, "caption": "\u00e9t\u00e9"},
                                   {"image_id": 2, "caption": " "}]}, f)
      tally = Tally()
      images = caption_metadata.load_coco_captions(path, "/imgs", tally)
      self.assertEqual([(i.image_id, i.path) for i in images],
                       [(3, "/imgs/c.jpg"), (1, "/imgs/a.jpg"), (2, "/imgs/b.jpg")])
      tokenized = caption_metadata.tokenize_images(images, 50, tally)
    self.assertEqual(tokenized, [
        caption_metadata.TokenizedImage(3, "/imgs/c.jpg", ("<S> a cat </S>",)),
        caption_metadata.TokenizedImage(1, "/imgs/a.jpg", ("<S> a dog . </S>",
                                                           "<S> \u00e9t\u00e9 </S>"))])
    self.assertEqual(dict(tally.counts), {
        build_report.IMAGES_DUPLICATE_ID: 1, build_report.ENTRIES_MALFORMED: 1,
        build_report.ANNOTATIONS_UNKNOWN_IMAGE_ID: 1, build_report.CAPTIONS_DROPPED_EMPTY: 2,
        build_report.CAPTIONS_DROPPED_TOO_LONG: 1, build_report.CAPTIONS_NON_ASCII: 1,
        build_report.IMAGES_DROPPED_NO_CAPTIONS: 1})
    self.assertEqual(tally.examples[build_report.IMAGES_DROPPED_NO_CAPTIONS], ["/imgs/b.jpg"])

  def test_load_karpathy_split(self):
    with tempfile.TemporaryDirectory() as tmp:
      path = os.path.join(tmp, "dataset_coco.json")
      entry = lambda split, i, **kw: dict(split=split, filename=f"{i}.jpg", imgid=i,
                                          sentences=[{"raw": f"caption {i}"}], **kw)
      with open(path, "w") as f:
        json.dump({"images": [entry("train", 0, filepath="train2014", cocoid=100),
                              entry("restval", 1, filepath="val2014", cocoid=101),
                              entry("val", 2), entry("test", 3), entry("bogus", 4)]}, f)
      tally = Tally()
      splits = caption_metadata.load_karpathy_split(path, "/coco", tally)
    self.assertEqual({s: [(i.image_id, i.path, i.captions) for i in images]
                      for s, images in splits.items()},
                     {"train": [(100, "/coco/train2014/0.jpg", ("caption 0",)),
                                (101, "/coco/val2014/1.jpg", ("caption 1",))],
                      "val": [(2, "/coco/2.jpg", ("caption 2",))],
                      "test": [(3, "/coco/3.jpg", ("caption 3",))]})
    self.assertEqual(dict(tally.counts), {build_report.ENTRIES_MALFORMED: 1})

  def test_word_counts_from_training_captions(self):
    images = [caption_metadata.TokenizedImage(1, "p", ("<S> a b </S>", "<S> a a c </S>"))]
    self.assertEqual(caption_metadata.word_counts(images, 2),
                     [("a", 3), ("</S>", 2), ("<S>", 2)])  # Ties in word order.
    # <S> and </S> are kept even when too rare, so the file is always a valid vocabulary.
    self.assertEqual(caption_metadata.word_counts(images, 3), [("a", 3), ("</S>", 2), ("<S>", 2)])

  def test_plan_shards_is_the_original_shuffle_cut_in_contiguous_ranges(self):
    images = [caption_metadata.TokenizedImage(i, f"{i}.jpg", tuple(f"<S> w{i} {k} </S>"
                                                                   for k in range(1 + i % 3)))
              for i in range(17)]
    specs = caption_metadata.plan_shards("train", images, 4)
    expected = [(image.image_id, image.path, line, k == 0)
                for image in images for k, line in enumerate(image.token_lines)]
    random.seed(12345)  # What the original builder did.
    random.shuffle(expected)
    planned = [(r.image_id, r.path, r.tokens, r.first_of_image)
               for spec in specs for r in spec.records]
    self.assertEqual(planned, expected)
    self.assertEqual([len(s.records) for s in specs], [8, 8, 8, 9])
    self.assertEqual([s.name for s in specs],
                     [f"train-0000{i}-of-00004" for i in range(4)])
    self.assertEqual(sum(r[3] for r in planned), 17)  # One first_of_image record per image.
    self.assertEqual(caption_metadata.plan_shards("train", images, 4), specs)
    self.assertEqual(caption_metadata.ShardSpec.from_json(specs[1].to_json()), specs[1])
    self.assertEqual([len(s.records) for s in caption_metadata.plan_shards("val", [], 2)], [0, 0])
    self.assertEqual({r.concept_ids for s in specs for r in s.records}, {None})

  def test_plan_shards_gives_every_record_its_images_concepts(self):
    images = [caption_metadata.TokenizedImage(1, "1.jpg", ("<S> a red circle </S>",
                                                           "<S> the circle is big </S>")),
              caption_metadata.TokenizedImage(2, "2.jpg", ("<S> a thing </S>",)),
              caption_metadata.TokenizedImage(3, "3.jpg", ("<S> big blue </S>", "<S> red </S>"))]
    concept_vocab = concepts.ConceptVocabulary(["circle", "red", "blue", "big"])
    specs = caption_metadata.plan_shards("train", images, 2, concept_vocab=concept_vocab)
    expected = {1: (0, 1, 3), 2: (), 3: (1, 2, 3)}  # Of all the image's captions.
    self.assertEqual([(r.image_id, r.concept_ids) for s in specs for r in s.records],
                     [(r.image_id, expected[r.image_id]) for s in specs for r in s.records])
    # The same shuffle as without concepts.
    self.assertEqual([(r.image_id, r.tokens) for s in specs for r in s.records],
                     [(r.image_id, r.tokens) for s in caption_metadata.plan_shards(
                         "train", images, 2) for r in s.records])
    for spec in specs:
      self.assertEqual(caption_metadata.ShardSpec.from_json(spec.to_json()), spec)


class ImageCheckTest(unittest.TestCase):

  def assert_rgb_jpeg(self, data, left=(30, 30, 200), right=(200, 30, 30)):
    self.assertTrue(data.startswith(image_check.JPEG_MAGIC))
    pixels = tf.io.decode_jpeg(data, channels=3).numpy().astype(int)
    np.testing.assert_allclose(pixels[8, 2], left, atol=12)
    np.testing.assert_allclose(pixels[8, -3], right, atol=12)

  def test_jpeg_components_from_the_frame_header(self):
    self.assertEqual([image_check.jpeg_components(_encode(mode)) for mode in ("L", "RGB", "CMYK")],
                     [1, 3, 4])
    progressive = io.BytesIO()
    Image.new("RGB", (8, 8)).save(progressive, "JPEG", progressive=True)
    self.assertEqual(image_check.jpeg_components(progressive.getvalue()), 3)
    self.assertIsNone(image_check.jpeg_components(image_check.JPEG_MAGIC + b"garbage"))
    self.assertIsNone(image_check.jpeg_components(_encode()[:12]))

  def test_rgb_and_grayscale_jpegs_are_kept_unchanged(self):
    for mode, reason in (("RGB", ""), ("L", build_report.GRAYSCALE_KEPT)):
      data = _encode(mode)
      self.assertEqual(image_check.check_image_bytes(data),
                       image_check.CheckedImage(image_check.KEEP, reason, data))
    self.assertEqual(tf.io.decode_jpeg(_encode("L"), channels=3).shape, (16, 24, 3))

  def test_cmyk_png_and_other_formats_become_rgb_jpegs(self):
    for data, reason in ((_encode("CMYK"), "images_converted_cmyk"),
                         (_encode(fmt="PNG"), "images_converted_png"),
                         (_encode(fmt="GIF"), "images_converted_other_format"),
                         (_encode(fmt="BMP"), "images_converted_other_format")):
      checked = image_check.check_image_bytes(data)
      self.assertEqual((checked.action, checked.reason), (image_check.CONVERT, reason))
      self.assert_rgb_jpeg(checked.data)
    # Transparent pixels become white, not whatever colour hides under alpha 0.
    rgba = Image.new("RGBA", (24, 16), (200, 30, 30, 255))
    rgba.paste((30, 30, 200, 0), (0, 0, 12, 16))
    buffer = io.BytesIO()
    rgba.save(buffer, "PNG")
    self.assert_rgb_jpeg(image_check.check_image_bytes(buffer.getvalue()).data,
                         left=(255, 255, 255))

  def test_broken_files_are_dropped_with_their_reason(self):
    good = _encode(size=(64, 64))
    for data, reason in ((b"", "images_dropped_empty_file"),
                         (good[:len(good) // 2], "images_dropped_corrupt_image"),
                         (good[:-2], "images_dropped_corrupt_image"),
                         (image_check.JPEG_MAGIC + b"garbage" * 10,
                          "images_dropped_corrupt_image"),
                         (_encode(fmt="PNG")[:60], "images_dropped_corrupt_image"),
                         (b"<html>404</html>", "images_dropped_not_an_image")):
      self.assertEqual(image_check.check_image_bytes(data),
                       image_check.CheckedImage(image_check.DROP, reason), reason)

  def test_missing_and_unreadable_paths(self):
    with tempfile.TemporaryDirectory() as tmp:
      self.assertEqual(image_check.read_and_check_image(os.path.join(tmp, "nope.jpg")).reason,
                       "images_dropped_missing_file")
      self.assertEqual(image_check.read_and_check_image(tmp).reason,
                       "images_dropped_unreadable")


class WriteShardsTransformTest(unittest.TestCase):

  def test_transform_writes_each_planned_shard(self):
    with tempfile.TemporaryDirectory() as tmp:
      paths = []
      for i in range(5):
        paths.append(os.path.join(tmp, f"{i}.jpg"))
        _write(paths[-1], _encode(colour=(10 * i, 30, 30)))
      _write(paths[3], b"")
      images = [caption_metadata.TokenizedImage(
          100 + i, paths[i], ("<S> a red thing </S>", "<S> a zebra </S>")) for i in range(5)]
      vocab_file = os.path.join(tmp, "word_counts.txt")
      vocabulary.write_word_counts(vocab_file, [("<S>", 10), ("</S>", 10), ("a", 10)])
      tmp_dir = os.path.join(tmp, "job_tmp")
      for sub in (shard_writer.SPEC_DIRNAME, shard_writer.REPORT_DIRNAME):
        os.makedirs(os.path.join(tmp_dir, sub))
      specs = caption_metadata.plan_shards(
          "val", images, 3, concept_vocab=concepts.ConceptVocabulary(["zebra", "red"]))
      spec_paths = [shard_writer.write_shard_spec(spec, tmp_dir) for spec in specs]
      expected = []
      for spec in specs:
        dropped = sum(r.path == paths[3] for r in spec.records)
        first = sum(r.first_of_image and r.path != paths[3] for r in spec.records)
        expected.append(shard_writer.ShardResult("val", spec.shard_index, 3,
                                                 len(spec.records) - dropped, first, dropped))

      pipeline = TestPipeline(options=PipelineOptions(IN_MEMORY))
      results = pipeline | shard_writer.BuildMscocoData(
          spec_paths, tmp, tmp_dir, vocab_file)
      assert_that(results, equal_to(expected))
      result = pipeline.run()
      result.wait_until_finish()

      counters = build_report.metric_counters(result)
      self.assertEqual(counters["records_written_val"], 8)
      self.assertEqual(counters["images_written_val"], 4)
      self.assertEqual(counters["shards_written_val"], 3)
      self.assertEqual(counters["records_dropped_bad_image"], 2)
      self.assertEqual(counters["images_dropped_empty_file"], 1)
      reports = build_report.read_reports(os.path.join(tmp_dir, shard_writer.REPORT_DIRNAME))
      self.assertEqual(reports.counts, counters)  # The fallback for runners without metrics.
      self.assertEqual(reports.examples["images_dropped_empty_file"], [paths[3]])
      records = _read_records(os.path.join(tmp, "val-*"))
      self.assertEqual(sorted(records), [s.name for s in specs])
      for spec in specs:
        self.assertEqual([(r["image_id"], r["caption"]) for r in records[spec.name]],
                         [(r.image_id, r.tokens.split(" ")) for r in spec.records
                          if r.path != paths[3]])
      unk = 3
      self.assertEqual({tuple(r["caption_ids"]) for rs in records.values() for r in rs},
                       {(0, 2, unk, unk, 1), (0, 2, unk, 1)})
      # Both concepts on every record, "a zebra" ones too: the ids are the image's.
      self.assertEqual({(tuple(r["concept_ids"]), r["has_concepts"])
                        for rs in records.values() for r in rs}, {((0, 1), True)})
      self.assertEqual([n for n in os.listdir(tmp_dir) if ".tmp-" in n], [])


class FlagsTest(unittest.TestCase):

  def test_original_flags_and_defaults(self):
    args, rest = build_mscoco_data.parse_args(["--output_dir=/out", "--runner=DirectRunner"])
    self.assertEqual((args.train_shards, args.val_shards, args.test_shards, args.min_word_count),
                     (256, 4, 8, 4))
    self.assertEqual((args.train_image_dir, args.val_captions_file),
                     ("/tmp/train2014/", "/tmp/captions_val2014.json"))
    self.assertEqual(rest, ["--runner=DirectRunner"])
    self.assertEqual((args.num_concepts, args.concepts_output_file), (1000, ""))
    with self.assertRaises(SystemExit), mock.patch("sys.stderr", io.StringIO()):
      build_mscoco_data.parse_args(["--num_concepts=-1"])

  def test_direct_runner_defaults_to_all_cores_in_processes(self):
    direct = build_mscoco_data.pipeline_options([]).view_as(DirectOptions)
    self.assertEqual((direct.direct_running_mode, direct.direct_num_workers),
                     ("multi_processing", 0))
    direct = build_mscoco_data.pipeline_options(IN_MEMORY).view_as(DirectOptions)
    self.assertEqual((direct.direct_running_mode, direct.direct_num_workers), ("in_memory", 1))
    direct = build_mscoco_data.pipeline_options([], num_threads=3).view_as(DirectOptions)
    self.assertEqual(direct.direct_num_workers, 3)


class BuildMscocoDataRunTest(unittest.TestCase):
  """The whole job on make_bad_dataset: 6+3 train-file images, 20 val-file images.

  Train split: train-file images 1-8 (9 has no usable caption) + the first 17 val images.
  Records planned: 7 images x 5 + image 6 x 6 (its non-ASCII caption) + 17 x 5 = 126; images 4,
  5, 7 and 8 are dropped with their 20 records -> 106 written. Val: 1 image, test: 2.
  """

  @classmethod
  def setUpClass(cls):
    cls._tmp = tempfile.TemporaryDirectory()
    cls.dataset = make_bad_dataset(os.path.join(cls._tmp.name, "data"))
    cls.out = os.path.join(cls._tmp.name, "out")
    cls.summary = build_mscoco_data.run(cls.flags(cls.out) + IN_MEMORY)

  @classmethod
  def tearDownClass(cls):
    cls._tmp.cleanup()

  @classmethod
  def flags(cls, output_dir):
    return cls.dataset.build_args() + [f"--output_dir={output_dir}",
                                       f"--num_concepts={NUM_CONCEPTS}"] + SHARD_FLAGS

  def test_output_files(self):
    self.assertEqual(sorted(os.listdir(self.out)),
                     ["concepts.txt", "test-00000-of-00002", "test-00001-of-00002",
                      "test_references.json", "train-00000-of-00003", "train-00001-of-00003",
                      "train-00002-of-00003", "train_references.json", "val-00000-of-00002",
                      "val-00001-of-00002", "val_references.json", "word_counts.txt"])

  def _word_counts(self):
    with open(os.path.join(self.out, "word_counts.txt"), encoding="utf-8") as f:
      return [(w, int(c)) for w, c in (line.split(" ") for line in f.read().split("\n"))]

  def _captions_by_image(self):
    """Image id -> every caption the job keeps, tokenized, from the test's own JSON files."""
    captions = collections.defaultdict(list)
    for path in (self.dataset.train_captions_file, self.dataset.val_captions_file):
      with open(path, encoding="utf-8") as f:
        for annotation in json.load(f)["annotations"]:
          tokens = vocabulary.caption_tokens(annotation["caption"])
          if 2 < len(tokens) <= 100:  # Empty and too long (--max_caption_tokens) are dropped.
            captions[annotation["image_id"]].append(tokens)
    return captions

  def test_concepts_file_is_chosen_from_word_counts(self):
    with open(os.path.join(self.out, "concepts.txt"), encoding="utf-8") as f:
      lines = f.read().split("\n")
    expected = concepts.select_concepts(self._word_counts(), NUM_CONCEPTS)
    self.assertEqual(lines, [f"{w} {c}" for w, c in expected])
    self.assertEqual(len(lines), NUM_CONCEPTS)
    # Capped: the vocabulary has more concept words.
    self.assertGreater(len(concepts.select_concepts(self._word_counts(), 1000)), NUM_CONCEPTS)
    self.assertEqual((self.summary.concepts_file, self.summary.num_concepts),
                     (os.path.join(self.out, "concepts.txt"), NUM_CONCEPTS))
    self.assertIn(f"  concepts: {NUM_CONCEPTS} words in {self.out}/concepts.txt\n",
                  self.summary.format())

  def test_every_record_has_the_concepts_of_all_its_images_captions(self):
    words = [w for w, _ in concepts.select_concepts(self._word_counts(), NUM_CONCEPTS)]
    captions = self._captions_by_image()
    checked = wider = 0
    for split in ("train", "val", "test"):
      for records in _read_records(os.path.join(self.out, f"{split}-*")).values():
        for r in records:
          expected = sorted({words.index(t) for tokens in captions[r["image_id"]]
                             for t in tokens if t in words})
          self.assertEqual((r["concept_ids"], r["has_concepts"]), (expected, True),
                           (split, r["image_id"]))
          own = {words.index(t) for t in r["caption"] if t in words}
          wider += own != set(expected)
          checked += 1
    self.assertEqual(checked, 121)
    self.assertGreater(wider, 0)  # Not just the record's own caption.

  def test_references_files_hold_each_images_captions(self):
    captions = self._captions_by_image()
    planned = {"train": 25, "val": 1, "test": 2}  # Images with a usable caption, per split.
    for split in ("train", "val", "test"):
      refs = references.read_references(os.path.join(self.out, f"{split}_references.json"))
      self.assertEqual(len(refs), planned[split], split)
      for image_id, lines in refs.items():
        self.assertEqual(lines, [" ".join(t[1:-1]) for t in captions[image_id]], image_id)
      # Every record's caption is one of its image's references (images the job dropped for
      # their file keep their references: they are of the split's captions).
      for records in _read_records(os.path.join(self.out, f"{split}-*")).values():
        for r in records:
          self.assertIn(" ".join(r["caption"][1:-1]), refs[r["image_id"]])

  def test_num_concepts_zero_writes_the_records_as_before(self):
    # Into a copy of the output: an earlier run's concepts.txt is removed with the concepts.
    out = os.path.join(self._tmp.name, "out_no_concepts")
    shutil.copytree(self.out, out)
    summary = build_mscoco_data.run(self.flags(out) + ["--num_concepts=0"] + IN_MEMORY)
    self.assertNotIn("concepts.txt", os.listdir(out))
    self.assertEqual((summary.concepts_file, summary.num_concepts), ("", 0))
    self.assertIn("  concepts: none (--num_concepts=0)\n", summary.format())
    reference = _read_records(os.path.join(self.out, "*-of-*"))
    records = _read_records(os.path.join(out, "*-of-*"))
    self.assertEqual(sorted(records), sorted(reference))
    for name, rs in records.items():
      for r in rs:
        self.assertEqual((r.pop("concept_ids"), r.pop("has_concepts")), ([], False))
      for r in reference[name]:
        del r["concept_ids"], r["has_concepts"]
      self.assertEqual(rs, reference[name], name)

  def test_exact_record_counts_per_split(self):
    for split, records, images in (("train", 106, 21), ("val", 5, 1), ("test", 10, 2)):
      parsed = _read_records(os.path.join(self.out, f"{split}-*"))
      self.assertEqual(sum(len(r) for r in parsed.values()), records, split)
      self.assertEqual(self.summary.records(split), records)
      self.assertEqual(self.summary.images(split), images)
      self.assertEqual(len({r["image_id"] for rs in parsed.values() for r in rs}), images)
    self.assertEqual(self.summary.total_records, 121)

  def test_every_bad_input_is_counted(self):
    expected = {
        "images_grayscale_kept": 1, "images_converted_cmyk": 1, "images_converted_png": 1,
        "images_dropped_empty_file": 1, "images_dropped_corrupt_image": 1,
        "images_dropped_missing_file": 1, "images_dropped_not_an_image": 1,
        "records_dropped_bad_image": 20, "images_dropped_no_captions": 1,
        "annotations_unknown_image_id": 1, "captions_dropped_empty": 3,
        "captions_dropped_too_long": 1, "captions_non_ascii": 1}
    self.assertEqual({k: self.summary.counts.get(k, 0) for k in expected}, expected)
    data_dir = self.dataset.train_image_dir
    self.assertEqual(self.summary.examples["images_dropped_missing_file"],
                     [os.path.join(data_dir, "missing.jpg")])
    text = self.summary.format()
    self.assertIn("listed but missing on disk", text)
    self.assertIn(os.path.join(data_dir, "notimage.jpg"), text)
    self.assertRegex(text, r"\n  train +106 +21 +3\n")
    self.assertRegex(text, r"zero-byte file +1  e\.g\. .*COCO_train2014_000000000004\.jpg")

  def test_same_summary_from_report_files_on_runners_without_metrics(self):
    out = os.path.join(self._tmp.name, "out_no_metrics")
    with mock.patch.object(build_report, "metric_counters", return_value=None):
      summary = build_mscoco_data.run(self.flags(out) + IN_MEMORY)
    self.assertEqual(summary.counts, self.summary.counts)
    self.assertEqual(summary.examples, self.summary.examples)

  def test_records_parse_with_the_input_parser_and_use_the_vocabulary(self):
    vocab = vocabulary.Vocabulary.from_file(os.path.join(self.out, "word_counts.txt"))
    files = sorted(tf.io.gfile.glob(os.path.join(self.out, "*-of-*")))
    dataset = tf.data.TFRecordDataset(files).map(sequence_example.parse_sequence_example)
    captions_per_image = collections.Counter()
    all_tokens = set()
    for record in dataset:
      tokens = [t.decode("utf-8") for t in record["caption"].numpy()]
      self.assertEqual(record["caption_ids"].numpy().tolist(), vocab.ids(tokens))
      self.assertEqual((tokens[0], tokens[-1]), ("<S>", "</S>"))
      self.assertEqual(tf.io.decode_jpeg(record["image_data"], channels=3).shape[-1], 3)
      captions_per_image[int(record["image_id"])] += 1
      all_tokens.update(tokens)
    self.assertEqual(captions_per_image[6], 6)
    self.assertEqual(set(captions_per_image.values()), {5, 6})
    self.assertNotIn(4, captions_per_image)
    self.assertIn("caf\u00e9", all_tokens)
    self.assertNotIn("very", all_tokens)

  def test_word_counts_file(self):
    with open(os.path.join(self.out, "word_counts.txt"), encoding="utf-8") as f:
      lines = f.read().split("\n")
    counts = dict(line.split(" ") for line in lines)
    self.assertEqual(counts["<S>"], "126")  # Every planned training caption.
    self.assertTrue(all(int(c) >= 4 for c in counts.values()))
    self.assertEqual(self.summary.vocab_size, len(lines))

  def test_kept_and_converted_images(self):
    records = [r for rs in _read_records(os.path.join(self.out, "train-*")).values() for r in rs]
    data = {r["image_id"]: r["image_data"] for r in records}
    with open(os.path.join(self.dataset.train_image_dir, "COCO_train2014_000000000001.jpg"),
              "rb") as f:
      self.assertEqual(data[1], f.read())  # Grayscale JPEG kept byte for byte.
    for image_id in (2, 3):
      self.assertTrue(data[image_id].startswith(image_check.JPEG_MAGIC))
      self.assertEqual(Image.open(io.BytesIO(data[image_id])).mode, "RGB")

  def test_same_bytes_with_two_worker_processes(self):
    out = os.path.join(self._tmp.name, "out_2_workers")
    build_mscoco_data.run(self.flags(out) + ["--direct_running_mode=multi_processing",
                                             "--direct_num_workers=2"])
    self.assertEqual(_dir_bytes(out), _dir_bytes(self.out))

  def test_killed_job_leaves_no_partial_shard_and_rerun_overwrites(self):
    out = os.path.join(self._tmp.name, "out_killed")
    os.makedirs(out)
    _write(os.path.join(out, "train-00000-of-00009"), b"shard of an earlier run")
    real_writer = tf.io.TFRecordWriter

    class DyingWriter:
      """Writes two records of train-00001, then the worker 'dies'."""

      def __init__(self, path):
        self._writer = real_writer(path)
        self._dies = "train-00001-of-00003" in path
        self._written = 0

      def write(self, record):
        if self._dies and self._written == 2:
          raise SystemError("worker killed")
        self._writer.write(record)
        self._written += 1

      def __enter__(self):
        return self

      def __exit__(self, *exc):
        self._writer.flush()  # The partial file stays on disk, as after a kill.
        return False

    with mock.patch.object(tf.io, "TFRecordWriter", DyingWriter):
      with self.assertRaises(Exception):
        build_mscoco_data.run(self.flags(out) + IN_MEMORY)
    self.assertNotIn("train-00001-of-00003", os.listdir(out))
    reference = _dir_bytes(self.out)
    for name, data in _dir_bytes(out).items():
      if name.startswith(("train-0000", "val-", "test-")) and "-of-00009" not in name:
        self.assertEqual(data, reference[name], name)  # Complete shards only.
    job_tmp = os.path.join(out, build_mscoco_data.TMP_DIRNAME)
    # The failed writer removed its partial file; a killed one would leave it in the job's temp
    # directory, which the next run clears.
    self.assertEqual([n for n in os.listdir(job_tmp) if n.startswith("train-00001")], [])
    _write(os.path.join(job_tmp, "train-00001-of-00003.tmp-killed"), b"partial")

    _write(os.path.join(out, "val-00000-of-00002"), b"garbage")
    summary = build_mscoco_data.run(self.flags(out) + IN_MEMORY)
    self.assertEqual(summary.stale_shards_removed, 1)
    self.assertEqual(_dir_bytes(out), reference)
    self.assertFalse(os.path.exists(job_tmp))

  def test_exit_status_is_non_zero_when_nothing_could_be_written(self):
    root = os.path.join(self._tmp.name, "all_bad")
    dataset = sample.make_sample_dataset(root, num_train_images=2, num_val_images=0,
                                         image_size=16)
    for name in os.listdir(dataset.train_image_dir):
      _write(os.path.join(dataset.train_image_dir, name), b"")
    argv = dataset.build_args() + [f"--output_dir={root}/out"] + SHARD_FLAGS + IN_MEMORY
    self.assertEqual(build_mscoco_data.main(argv), 1)
    self.assertEqual(len(_read_records(os.path.join(root, "out", "*-of-*"))), 7)  # All empty.
    self.assertEqual(build_mscoco_data.main(argv + ["--train_captions_file=/nope.json"]), 1)

  def test_karpathy_split_file(self):
    root = os.path.join(self._tmp.name, "karpathy")
    os.makedirs(os.path.join(root, "images"))
    entries = []
    for i, split in enumerate(["train"] * 4 + ["restval"] * 2 + ["val"] * 3 + ["test"] * 5):
      _write(os.path.join(root, "images", f"{i}.jpg"), _encode(colour=(i * 10, 0, 0)))
      entries.append({"filename": f"{i}.jpg", "imgid": i, "split": split,
                      "sentences": [{"raw": "A red square."}, {"raw": "a dark red thing"}]})
    with open(os.path.join(root, "dataset_flickr8k.json"), "w") as f:
      json.dump({"images": entries, "dataset": "flickr8k"}, f)
    out = os.path.join(root, "out")
    summary = build_mscoco_data.run([
        f"--karpathy_split_file={root}/dataset_flickr8k.json", f"--image_dir={root}/images",
        f"--output_dir={out}", "--min_word_count=1"] + SHARD_FLAGS + IN_MEMORY)
    self.assertEqual([summary.records(s) for s in ("train", "val", "test")], [12, 6, 10])
    test_ids = {r["image_id"] for rs in _read_records(os.path.join(out, "test-*")).values()
                for r in rs}
    self.assertEqual(test_ids, {9, 10, 11, 12, 13})


class OutsideImageDirTest(unittest.TestCase):
  """A captions file cannot pull files from outside its image folder into the dataset."""

  def setUp(self):
    self._tmp = tempfile.TemporaryDirectory()
    self.addCleanup(self._tmp.cleanup)
    self.root = self._tmp.name
    self.outside = os.path.join(self.root, "outside")
    os.makedirs(self.outside)
    # Good images, so that they would be written if they were ever read.
    self.secret = _encode(colour=(1, 2, 3))
    _write(os.path.join(self.outside, "secret.jpg"), self.secret)
    _write(os.path.join(self.outside, "secret.png"), _encode(fmt="PNG", colour=(1, 2, 3)))

  def _run(self, flags):
    opened = []
    real = image_check.read_and_check_image

    def spy(path):
      opened.append(path)
      return real(path)

    with mock.patch.object(image_check, "read_and_check_image", spy):
      summary = build_mscoco_data.run(flags + [f"--output_dir={self.root}/out",
                                               "--min_word_count=1"] + SHARD_FLAGS + IN_MEMORY)
    records = [r for rs in _read_records(os.path.join(self.root, "out", "*-of-*")).values()
               for r in rs]
    self.assertFalse([p for p in opened if "secret" in p], opened)
    self.assertFalse([r["image_id"] for r in records if r["image_data"] == self.secret])
    return summary, {r["image_id"] for r in records}

  def test_coco_file_names(self):
    dataset = sample.make_sample_dataset(os.path.join(self.root, "data"), num_train_images=4,
                                         num_val_images=0, image_size=32)
    image_dir = dataset.train_image_dir
    os.symlink(os.path.join(self.outside, "secret.jpg"), os.path.join(image_dir, "link.jpg"))
    os.symlink(self.outside, os.path.join(image_dir, "linked_dir"))
    os.symlink(os.path.join(image_dir, "COCO_train2014_000000000001.jpg"),
               os.path.join(image_dir, "inside_link.jpg"))
    with open(dataset.train_captions_file) as f:
      data = json.load(f)
    names = {101: "../../outside/secret.jpg", 102: os.path.join(self.outside, "secret.png"),
             103: "link.jpg", 104: "linked_dir/secret.jpg", 105: "a/../../outside/secret.jpg",
             106: "inside_link.jpg", 107: "./sub/../COCO_train2014_000000000002.jpg"}
    for image_id, name in names.items():
      data["images"].append({"id": image_id, "file_name": name})
      data["annotations"] += [{"id": image_id * 10 + k, "image_id": image_id,
                               "caption": "a secret thing"} for k in range(2)]
    with open(dataset.train_captions_file, "w") as f:
      json.dump(data, f)

    summary, image_ids = self._run(dataset.build_args())
    self.assertEqual(summary.counts[build_report.IMAGES_DROPPED_OUTSIDE_IMAGE_DIR], 5)
    base = os.path.basename(dataset.train_captions_file)
    self.assertEqual(summary.examples[build_report.IMAGES_DROPPED_OUTSIDE_IMAGE_DIR],
                     [f"{base}: {names[i]}" for i in (101, 102, 103)])
    self.assertNotIn(build_report.ANNOTATIONS_UNKNOWN_IMAGE_ID, summary.counts)
    self.assertEqual(image_ids, {1, 2, 3, 4, 106, 107})  # Links and `..` that stay inside.
    self.assertRegex(summary.format(), r"path outside its image folder +5  e\.g\. "
                     + re.escape(f"{base}: ../../outside/secret.jpg"))

  def test_karpathy_filepath_and_filename(self):
    image_dir = os.path.join(self.root, "images")
    os.makedirs(os.path.join(image_dir, "train2014"))
    os.symlink(os.path.join(self.outside, "secret.jpg"), os.path.join(image_dir, "link.jpg"))
    entries = []
    for i in range(4):
      _write(os.path.join(image_dir, "train2014", f"{i}.jpg"), _encode(colour=(i * 50, 0, 0)))
      entries.append({"filepath": "train2014", "filename": f"{i}.jpg"})
    entries += [{"filepath": "..", "filename": "outside/secret.jpg"},
                {"filepath": "train2014", "filename": os.path.join(self.outside, "secret.jpg")},
                {"filename": "link.jpg"}, {"filepath": "/", "filename": "etc/hostname"}]
    for i, entry in enumerate(entries):
      entry.update(imgid=i, split="train" if i % 2 else "test",
                   sentences=[{"raw": "A secret thing."}])
    split_file = os.path.join(self.root, "dataset_coco.json")
    with open(split_file, "w") as f:
      json.dump({"images": entries}, f)

    summary, image_ids = self._run([f"--karpathy_split_file={split_file}",
                                    f"--image_dir={image_dir}"])
    self.assertEqual(summary.counts[build_report.IMAGES_DROPPED_OUTSIDE_IMAGE_DIR], 4)
    self.assertEqual(image_ids, {0, 1, 2, 3})

  def test_image_path(self):
    join = lambda *p: os.path.join(self.root, *p)
    self.assertEqual(caption_metadata.image_path(self.root, "a/b.jpg"), join("a", "b.jpg"))
    self.assertEqual(caption_metadata.image_path(self.root, "a/../b.jpg"), join("b.jpg"))
    for bad in ("", ".", "..", "../x.jpg", "a/../../x.jpg", "/etc/passwd", "gs://b/x.jpg"):
      self.assertIsNone(caption_metadata.image_path(self.root, bad), bad)
    # Remote image folders: no symlinks to follow, `..` still refused.
    self.assertEqual(caption_metadata.image_path("gs://bucket/coco", "train2014/x.jpg"),
                     "gs://bucket/coco/train2014/x.jpg")
    self.assertIsNone(caption_metadata.image_path("gs://bucket/coco", "../other/x.jpg"))


if __name__ == "__main__":
  unittest.main()
