"""Tests of //im2txt:score_captions: its figures are COCOEvalCap's on the results it writes."""

import contextlib
import io
import json
import os
import shutil
import tempfile
from unittest import mock

import tensorflow as tf

from im2txt import score_captions
from im2txt.evaluation import caption_metrics
from im2txt.evaluation import caption_scoring
from tests import inference_testutil

# COCO ids of the images, and their raw reference captions (words of the tiny vocabulary and
# others, upper case and punctuation as people write them).
REFERENCES = {
    391895: ["A dog.", "a dog, a dog", "Dog on the grass."],
    522418: ["a a dog .", "A dog sits", "two dogs"],
    184613: ["dog", "The dog is a dog.", "A DOG"],
    318219: ["a .", "A dog and a cat.", "dogs"],
}


def _coco_annotations(file_names):
  images = [{"id": image_id, "file_name": file_names[image_id], "height": 40, "width": 56}
            for image_id in REFERENCES]
  annotations = [{"id": 1000 * k + i, "image_id": image_id, "caption": caption}
                 for k, (image_id, captions) in enumerate(REFERENCES.items())
                 for i, caption in enumerate(captions)]
  return {"info": {}, "licenses": [], "images": images, "annotations": annotations}


def coco_eval_cap(annotations_file, results_file, work_dir):
  """The COCO caption evaluation's own example, run directly on our files.

  SPICE is replaced by a stub (it needs a Stanford CoreNLP download), and the PTB tokenizer runs
  from a copy of its folder (it writes its temporary file next to its jar, which may be
  read-only here); everything else is pycocotools' and pycocoevalcap's own code.
  """
  from pycocotools.coco import COCO  # pylint: disable=g-import-not-at-top
  from pycocoevalcap import eval as coco_eval  # pylint: disable=g-import-not-at-top
  from pycocoevalcap.tokenizer import ptbtokenizer  # pylint: disable=g-import-not-at-top

  class NoSpice:
    def compute_score(self, gts, res):
      del res
      return 0.0, [0.0] * len(gts)

    def method(self):
      return "SPICE"

  tokenizer_dir = os.path.join(work_dir, "ptbtokenizer")
  shutil.copytree(os.path.dirname(ptbtokenizer.__file__), tokenizer_dir)
  with mock.patch.object(coco_eval, "Spice", NoSpice), \
       mock.patch.object(ptbtokenizer, "__file__", os.path.join(tokenizer_dir, "x.py")), \
       contextlib.redirect_stdout(io.StringIO()):
    coco = COCO(annotations_file)
    coco_results = coco.loadRes(results_file)
    evaluator = coco_eval.COCOEvalCap(coco, coco_results)
    evaluator.params["image_id"] = coco_results.getImgIds()
    evaluator.evaluate()
  return evaluator


# COCOEvalCap's metric names -> ours.
NAMES = dict(zip(["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"],
                 caption_metrics.METRIC_NAMES))


class ScoreCaptionsTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    config = inference_testutil.tiny_config()
    model = inference_testutil.random_model(config, seed=3)
    cls.train_dir = os.path.join(cls.tmp, "train")
    inference_testutil.write_checkpoint(model, config, cls.train_dir)
    cls.vocab_file = inference_testutil.write_vocab(os.path.join(cls.tmp, "word_counts.txt"))
    cls.image_dir = os.path.join(cls.tmp, "val2014")
    paths = inference_testutil.write_jpegs(cls.image_dir, len(REFERENCES), seed=4)
    cls.file_names = {image_id: os.path.basename(p) for image_id, p in zip(REFERENCES, paths)}
    cls.annotations_file = cls._write_json("captions_val2014.json",
                                           _coco_annotations(cls.file_names))

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  @classmethod
  def _write_json(cls, name, value):
    path = os.path.join(cls.tmp, name)
    with open(path, "w") as f:
      json.dump(value, f)
    return path

  def _main(self, *flags):
    score_captions.FLAGS.unparse_flags()
    score_captions.FLAGS(["score_captions", f"--checkpoint_path={self.train_dir}",
                          f"--vocab_file={self.vocab_file}", *flags])
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      code = score_captions.main([])
    return code, out.getvalue(), err.getvalue()

  def test_figures_are_coco_eval_caps_on_the_written_results(self):
    results_file = os.path.join(self.tmp, "out", "results.json")
    code, out, err = self._main(f"--annotations_file={self.annotations_file}",
                                f"--image_dir={self.image_dir}", f"--results_file={results_file}",
                                "--beam_size=2")
    self.assertEqual(code, 0, err)
    with open(results_file) as f:
      results = json.load(f)
    # Exactly one caption per image id.
    self.assertCountEqual([r["image_id"] for r in results], REFERENCES)
    self.assertTrue(all(isinstance(r["caption"], str) and r["caption"] for r in results))
    with open(caption_scoring.per_image_path(results_file)) as f:
      saved = json.load(f)

    expected = coco_eval_cap(self.annotations_file, results_file, tempfile.mkdtemp(dir=self.tmp))
    self.assertGreater(expected.eval["Bleu_1"], 0.0)  # Not all zero: a real comparison.
    self.assertGreater(expected.eval["ROUGE_L"], 0.0)
    for theirs, ours in NAMES.items():
      self.assertAllClose(saved["metrics"][ours], expected.eval[theirs], rtol=1e-9, atol=1e-12)
      self.assertIn(f"{ours}: {expected.eval[theirs]:.4f}\n", out)
    per_image = {image["image_id"]: image for image in saved["images"]}
    self.assertCountEqual(per_image, REFERENCES)
    captions = {r["image_id"]: r["caption"] for r in results}
    for image_id, scores in expected.imgToEval.items():
      self.assertEqual(per_image[image_id]["caption"], captions[image_id])
      for theirs, ours in NAMES.items():
        self.assertAllClose(per_image[image_id][ours], scores[theirs], rtol=1e-9, atol=1e-12)

  def test_karpathy_split_scores_exactly_its_images(self):
    splits = ["test", "restval", "test", "val"]
    entries = [{"cocoid": image_id, "filepath": "val2014", "filename": self.file_names[image_id],
                "split": split, "sentences": [{"raw": c} for c in captions]}
               for (image_id, captions), split in zip(REFERENCES.items(), splits)]
    split_file = self._write_json("dataset_coco.json", {"images": entries})
    for split, expected_ids in (("test", [391895, 184613]), ("train", [522418])):
      with self.subTest(split=split):
        results_file = os.path.join(self.tmp, f"karpathy_{split}", "results.json")
        code, _, err = self._main(f"--karpathy_split_file={split_file}", f"--split={split}",
                                  f"--image_dir={self.tmp}", f"--results_file={results_file}")
        self.assertEqual(code, 0, err)
        with open(results_file) as f:
          self.assertEqual([r["image_id"] for r in json.load(f)], expected_ids)
    results_file = os.path.join(self.tmp, "karpathy_max", "results.json")
    code, _, _ = self._main(f"--karpathy_split_file={split_file}", "--max_images=1",
                            f"--image_dir={self.tmp}", f"--results_file={results_file}")
    with open(results_file) as f:
      self.assertEqual([r["image_id"] for r in json.load(f)], [391895])

  def test_bad_images_are_named_and_skipped(self):
    image_dir = os.path.join(self.tmp, "with_bad")
    shutil.copytree(self.image_dir, image_dir)
    bad = os.path.join(image_dir, self.file_names[522418])
    with open(bad, "wb") as f:
      f.write(b"not a JPEG at all")
    results_file = os.path.join(self.tmp, "bad", "results.json")
    code, out, err = self._main(f"--annotations_file={self.annotations_file}",
                                f"--image_dir={image_dir}", f"--results_file={results_file}")
    self.assertEqual(code, 0, err)
    self.assertIn(f"Error: image 522418: {bad}: not a decodable image", err)
    self.assertIn("Scored 3 images", out)
    self.assertIn("1 image(s) could not be captioned and were skipped", out)
    with open(results_file) as f:
      self.assertCountEqual([r["image_id"] for r in json.load(f)],
                            [i for i in REFERENCES if i != 522418])

  def test_missing_image_malformed_file_and_paths_outside_are_errors(self):
    results_file = os.path.join(self.tmp, "never", "results.json")
    flags = [f"--image_dir={self.image_dir}", f"--results_file={results_file}"]
    missing = _coco_annotations({**self.file_names, 184613: "gone.jpg"})
    outside = _coco_annotations({**self.file_names, 184613: "../train/ckpt-7.index"})
    absolute = _coco_annotations({**self.file_names, 184613: self.vocab_file})
    malformed = _coco_annotations(self.file_names)
    malformed["annotations"].append({"image_id": 999, "caption": "an unknown image"})
    cases = [
        ("missing.json", missing, "image 184613's file .*gone.jpg does not exist"),
        ("outside.json", outside,
         r"1 image file\(s\) outside --image_dir .*, e.g. ../train/ckpt-7.index; not read"),
        ("absolute.json", absolute, "outside --image_dir .*, e.g. /.*word_counts.txt; not read"),
        ("malformed.json", malformed, "malformed annotation file: 1 annotations unknown image id"),
        ("not_coco.json", {"images": []}, "not a COCO captions file"),
    ]
    for name, value, message in cases:
      with self.subTest(name=name):
        code, out, err = self._main(f"--annotations_file={self._write_json(name, value)}",
                                    *flags)
        self.assertEqual((code, out), (2, ""))
        self.assertRegex(err, "^Error: .*" + message)
    with open(os.path.join(self.tmp, "broken.json"), "w") as f:
      f.write("{not json")
    code, _, err = self._main(f"--annotations_file={self.tmp}/broken.json", *flags)
    self.assertEqual(code, 2)
    self.assertIn("broken.json: not valid JSON", err)
    self.assertFalse(os.path.exists(os.path.dirname(results_file)))

  def test_detokenize(self):
    self.assertEqual(caption_scoring.detokenize(["a", "man", ",", "riding", "a", "wave", "."]),
                     "a man, riding a wave.")
    self.assertEqual(caption_scoring.detokenize(["it", "'s", "a", "dog", "that", "does", "n't",
                                                 "<UNK>", "sit", "!"]),
                     "it's a dog that doesn't sit!")


if __name__ == "__main__":
  tf.test.main()
