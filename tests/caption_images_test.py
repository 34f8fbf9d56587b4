"""beam_jobs/caption_images: a folder with bad files captioned on Beam, as run_inference would.

A tiny random model with a concept head is exported as a SavedModel. The job runs on
DirectRunner (in memory, one worker: the default multi-process DirectRunner runs in
//tests:distribution_test, against the DaskRunner), and its captions and concepts must equal
run_inference's (captioning.caption_files, JSON) for the same files and beam settings. Every bad
file must be in the failures files and summary.json under its reason, and nothing else lost.
"""

import io
import json
import os
import re
import shutil
import tempfile
import unittest
from unittest import mock
import zlib

import numpy as np
import tensorflow as tf
from PIL import Image

from beam_jobs import caption_images
from beam_jobs import image_captioning
from im2txt.inference import captioning
from im2txt.inference import serving
from tests import inference_testutil

IN_MEMORY = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
NUM_JPEGS = 7
# The files a collection may hold that cannot be captioned, by the reason the job gives.
BAD_FILES = {"empty.jpg": "empty_file", "truncated.jpg": "corrupt_image",
             "notes.jpg": "not_an_image", "huge.png": "too_many_pixels",
             "missing.jpg": "missing_file"}
MAX_PIXELS = 1_000_000


def _lines(path):
  with open(path) as f:
    return [json.loads(line) for line in f.read().splitlines()]


def _read_dir(directory):
  """{name: bytes} of the job's outputs, summary.json without this run's timing."""
  files = {}
  for name in sorted(os.listdir(directory)):
    with open(os.path.join(directory, name), "rb") as f:
      files[name] = f.read()
  summary = json.loads(files.pop(caption_images.SUMMARY_FILENAME))
  del summary["this_run"]["seconds"], summary["this_run"]["images_per_second"]
  return files, summary


class CaptionImagesTest(unittest.TestCase):
  maxDiff = None

  @classmethod
  def setUpClass(cls):
    cls.tmp = tempfile.mkdtemp()
    cls.saved = inference_testutil.save_concept_model(os.path.join(cls.tmp, "model"))
    cls.inference_config = captioning.inference_config(cls.saved.train_dir, {})
    cls.export_dir = serving.export_saved_model(cls.saved.train_dir, cls.saved.vocab_file,
                                                os.path.join(cls.tmp, "export"),
                                                cls.inference_config)
    cls.images = os.path.join(cls.tmp, "photos")
    cls.jpegs = inference_testutil.write_jpegs(cls.images, NUM_JPEGS)
    with open(cls.jpegs[0], "rb") as f:
      data = f.read()
    with open(os.path.join(cls.images, "truncated.jpg"), "wb") as f:
      f.write(data[:len(data) // 2])
    with open(os.path.join(cls.images, "empty.jpg"), "wb"):
      pass
    with open(os.path.join(cls.images, "notes.jpg"), "w") as f:
      f.write("<html>not a photo</html>")
    # TensorFlow decodes PNG itself (kept as it is); TIFF it does not (converted to JPEG).
    cls.png = os.path.join(cls.images, "drawing.png")
    Image.fromarray(np.uint8(np.arange(40 * 30 * 3).reshape(40, 30, 3) % 251)).save(cls.png)
    Image.new("RGB", (30, 20), (20, 200, 40)).save(os.path.join(cls.images, "scan.tiff"))
    Image.new("RGB", (2000, 1000), (10, 10, 200)).save(os.path.join(cls.images, "huge.png"))
    with open(os.path.join(cls.tmp, "secret.jpg"), "wb") as f:
      f.write(data)  # A real image outside the base folder: never read.
    cls.list_file = os.path.join(cls.tmp, "paths.txt")
    names = sorted(os.listdir(cls.images)) + ["missing.jpg", os.path.basename(cls.jpegs[2]),
                                              "../secret.jpg", os.path.join(cls.tmp, "secret.jpg")]
    with open(cls.list_file, "w") as f:
      f.write("\n".join(names) + "\n\n")

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)

  def _job(self, output_dir, *flags):
    return caption_images.run([f"--input_list={self.list_file}", f"--base_dir={self.images}",
                               f"--output_dir={output_dir}", "--num_shards=3",
                               f"--max_image_pixels={MAX_PIXELS}", "--batch_size=4"]
                              + list(flags) + IN_MEMORY)

  def _reference(self, paths):
    """run_inference's JSON records of `paths`, by file."""
    out = io.StringIO()
    code = captioning.caption_files(self.saved.train_dir, self.saved.vocab_file, ",".join(paths),
                                    self.inference_config, "json", out=out)
    self.assertEqual(code, 0)
    return {r["file"]: r for r in map(json.loads, out.getvalue().splitlines())}

  def test_captions_equal_run_inference_and_bad_files_are_listed(self):
    output_dir = os.path.join(self.tmp, "captions")
    summary = self._job(output_dir, f"--saved_model_dir={self.export_dir}")
    records = [r for k in range(3) for r in _lines(os.path.join(
        output_dir, image_captioning.captions_name(k, 3)))]
    failures = [f for k in range(3) for f in _lines(os.path.join(
        output_dir, image_captioning.failures_name(k, 3)))]

    good = sorted(self.jpegs + [self.png])
    by_file = {r["file"]: r for r in records}
    self.assertEqual(sorted(by_file), sorted(good + [os.path.join(self.images, "scan.tiff")]))
    self.assertEqual([r["file"] for r in records], sorted(by_file))  # Sorted across shards.
    reference = self._reference(good)
    # The same captions and concepts; the numbers to float32 rounding: the job's batches (up to 4
    # images of a shard) are not run_inference's (all 8), and oneDNN's kernels, hence their
    # roundings, depend on the batch (measured: up to 8e-5 on a log-probability of -3.8).
    for path in good:
      got, want = by_file[path], reference[path]
      self.assertEqual(got["captions"], want["captions"], path)
      np.testing.assert_allclose(got["log_probs"], want["log_probs"], rtol=1e-4, atol=1e-4)
      np.testing.assert_allclose(got["probabilities"], np.exp(got["log_probs"]), rtol=1e-12)
      self.assertEqual([c["word"] for c in got["concepts"]],
                       [c["word"] for c in want["concepts"]])
      np.testing.assert_allclose([c["probability"] for c in got["concepts"]],
                                 [c["probability"] for c in want["concepts"]], atol=1e-4)
      self.assertNotIn(image_captioning.CONVERTED_FROM, got)
    self.assertEqual(by_file[os.path.join(self.images, "scan.tiff")]["converted_from"], "TIFF")

    expected_failures = {os.path.join(self.images, name): reason
                         for name, reason in BAD_FILES.items()}
    expected_failures.update({"../secret.jpg": "outside_base_dir",
                              os.path.join(self.tmp, "secret.jpg"): "outside_base_dir"})
    self.assertEqual({f["file"]: f["reason"] for f in failures}, expected_failures)
    details = {f["reason"]: f["detail"] for f in failures}
    self.assertEqual(details["too_many_pixels"],
                     "2000x1000 = 2,000,000 pixels, more than 1,000,000")
    self.assertNotIn("{{", details["corrupt_image"])

    self.assertEqual(summary["images_listed"], len(good) + 1 + len(expected_failures) + 1)
    self.assertEqual(summary["images_captioned"], len(good) + 1)
    self.assertEqual(summary["images_failed"], len(expected_failures))
    self.assertEqual({r: e["count"] for r, e in summary["failed"].items()},
                     {"outside_base_dir": 2, "missing_file": 1, "empty_file": 1,
                      "not_an_image": 1, "corrupt_image": 1, "too_many_pixels": 1})
    self.assertEqual(summary["duplicates"]["count"], 1)
    self.assertEqual(summary["duplicates"]["examples"], [self.jpegs[2]])
    self.assertEqual(summary["images_converted_to_jpeg"], {"TIFF": 1})
    self.assertEqual(summary["shards"], {"total": 3, "written_now": 3, "already_there": 0})
    with open(os.path.join(output_dir, caption_images.SUMMARY_FILENAME)) as f:
      self.assertEqual(json.load(f), summary)
    self.assertFalse(os.path.exists(os.path.join(output_dir, caption_images.TMP_DIRNAME)))

  def test_rerun_writes_only_missing_shards(self):
    output_dir = os.path.join(self.tmp, "rerun")
    model = f"--saved_model_dir={self.export_dir}"
    self._job(output_dir, model)
    before, summary = _read_dir(output_dir)
    stamps = {name: os.stat(os.path.join(output_dir, name)).st_mtime_ns for name in before}

    again = self._job(output_dir, model)
    self.assertEqual(again["shards"], {"total": 3, "written_now": 0, "already_there": 3})
    self.assertEqual(again["this_run"]["images_captioned"], 0)
    for name in before:
      self.assertEqual(os.stat(os.path.join(output_dir, name)).st_mtime_ns, stamps[name], name)

    os.remove(os.path.join(output_dir, image_captioning.captions_name(1, 3)))
    again = self._job(output_dir, model)
    self.assertEqual(again["shards"], {"total": 3, "written_now": 1, "already_there": 2})
    after, summary_after = _read_dir(output_dir)
    self.assertEqual(after, before)
    for name in before:
      if name not in (image_captioning.captions_name(1, 3),
                      image_captioning.failures_name(1, 3)):
        self.assertEqual(os.stat(os.path.join(output_dir, name)).st_mtime_ns, stamps[name], name)
    summary_after["shards"] = summary["shards"]
    summary_after["this_run"] = summary["this_run"]
    self.assertEqual(summary_after, summary)

    # Another setting into the same folder is refused, naming what differs.
    with self.assertRaisesRegex(ValueError, r"caption_job\.json differs in: num_shards"):
      caption_images.run([f"--input_list={self.list_file}", f"--base_dir={self.images}",
                          f"--output_dir={output_dir}", "--num_shards=2", model,
                          f"--max_image_pixels={MAX_PIXELS}"] + IN_MEMORY)

    # A shard or job file changed by hand is an error naming it (and its line), no more.
    shard = os.path.join(output_dir, image_captioning.captions_name(0, 3))
    failures = os.path.join(output_dir, image_captioning.failures_name(0, 3))
    redo = re.escape(f"remove {shard} and {failures} and rerun the job")
    with open(shard) as f:
      lines = len(f.read().splitlines())
    for damage, reason in (('{"file": "cut short', "not JSON (Unterminated string"),
                           ("[1]", "not a JSON object")):
      with open(shard, "a") as f:
        f.write(damage + "\n")
      with self.assertRaisesRegex(ValueError, "^" + re.escape(
          f"{shard} line {lines + 1}: {reason}") + ".*" + redo):
        self._job(output_dir, model)
      with open(shard, "r+") as f:
        kept = f.read().splitlines()[:lines]
        f.seek(0)
        f.truncate()
        f.write("".join(line + "\n" for line in kept))
    os.rename(failures, failures + ".moved")
    with self.assertRaisesRegex(ValueError, "^" + re.escape(f"{failures}: missing") + ".*" + redo):
      self._job(output_dir, model)
    os.rename(failures + ".moved", failures)
    job_file = os.path.join(output_dir, caption_images.JOB_FILENAME)
    for damaged, reason in (("{", "not JSON (Expecting"), ("[1]", "not a JSON object")):
      with open(job_file, "w") as f:
        f.write(damaged)
      with self.assertRaisesRegex(ValueError, "^" + re.escape(f"{job_file}: {reason}") +
                                  r".*this --output_dir's job is unknown"):
        self._job(output_dir, model)

  def test_checkpoint_is_exported_once_and_captions_as_its_saved_model(self):
    from_saved = os.path.join(self.tmp, "from_saved_model")
    from_checkpoint = os.path.join(self.tmp, "from_checkpoint")
    self._job(from_saved, f"--saved_model_dir={self.export_dir}")
    self._job(from_checkpoint, f"--checkpoint_path={self.saved.train_dir}",
              f"--vocab_file={self.saved.vocab_file}")
    saved_files, saved_summary = _read_dir(from_saved)
    checkpoint_files, checkpoint_summary = _read_dir(from_checkpoint)
    # The same captions, byte for byte; only the job's model identity differs.
    saved_files.pop(caption_images.JOB_FILENAME)
    checkpoint_files.pop(caption_images.JOB_FILENAME)
    self.assertEqual(checkpoint_files, saved_files)
    self.assertEqual(checkpoint_summary, saved_summary)

  def test_patterns_count_duplicates_and_skip_folders(self):
    output_dir = os.path.join(self.tmp, "patterns")
    os.makedirs(os.path.join(self.images, "sub.jpg"), exist_ok=True)  # A folder: not an image.
    try:
      summary = caption_images.run([
          f"--input_patterns={self.images}/image*.jpg,{self.images}/image0.jpg,"
          f"{self.images}/*.jpg", f"--saved_model_dir={self.export_dir}",
          f"--output_dir={output_dir}"] + IN_MEMORY)
    finally:
      os.rmdir(os.path.join(self.images, "sub.jpg"))
    self.assertEqual(summary["images_captioned"], NUM_JPEGS)
    # image0.jpg three times, the other images twice.
    self.assertEqual(summary["duplicates"]["count"], NUM_JPEGS + 1)
    self.assertEqual(summary["duplicates"]["examples"], self.jpegs[:5])
    self.assertEqual(summary["images_listed"], 2 * NUM_JPEGS + 1 + 3)
    self.assertEqual(summary["shards"]["total"], 1)
    self.assertEqual(sorted(summary["failed"]), ["corrupt_image", "empty_file", "not_an_image"])

  def test_an_image_the_model_cannot_decode_fails_alone(self):
    handler = image_captioning.CaptionModelHandler(self.export_dir)
    model = handler.load_model()
    with open(self.jpegs[0], "rb") as f:
      good = f.read()
    results = handler.run_inference([good, b"\xff\xd8\xff not really", good], model)
    self.assertEqual(len(results), 3)
    self.assertEqual(results[1].inference, {"error": image_captioning.UNDECODABLE_IN_MODEL})
    # The others, as in a batch without it.
    pair = handler.run_inference([good, good], model)
    for result, expected in zip((results[0], results[2]), pair):
      self.assertEqual(image_captioning.image_record("x", result.inference),
                       image_captioning.image_record("x", expected.inference))

  def test_a_batch_an_earlier_savedmodel_rejects_is_captioned_image_by_image(self):
    # SavedModels exported before the "valid" output failed a batch with a bad image as a whole.
    serve = tf.saved_model.load(self.export_dir).signatures["serving_default"]

    def earlier_serve(jpegs):
      outputs = serve(jpegs=jpegs)
      if not bool(tf.reduce_all(outputs.pop("valid"))):
        raise tf.errors.InvalidArgumentError(
            None, None, "{{function_node __inference_serve_1}} Invalid JPEG data or crop window")
      return outputs

    model = mock.Mock(signatures={"serving_default": earlier_serve})
    handler = image_captioning.CaptionModelHandler(self.export_dir)
    with open(self.jpegs[0], "rb") as f:
      good = f.read()
    results = handler.run_inference([good, b"\xff\xd8\xff not really", good], model)
    self.assertEqual(results[1].inference, {"error": "Invalid JPEG data or crop window"})
    alone = handler.run_inference([good], model)[0].inference
    for result in (results[0], results[2]):
      self.assertEqual(image_captioning.image_record("x", result.inference),
                       image_captioning.image_record("x", alone))

  def test_progress_line_sums_the_workers(self):
    tmp_dir = os.path.join(self.tmp, "progress_job")
    workers = [image_captioning.ToRecordFn(total=100, tmp_dir=tmp_dir) for _ in range(2)]
    for k, worker in enumerate(workers):
      worker.setup()
      worker._start -= 10.0  # pylint: disable=protected-access
      worker._count = 20 * (k + 1)  # pylint: disable=protected-access
    now = workers[0]._start + 10.0  # pylint: disable=protected-access
    workers[1]._log_progress(now)  # pylint: disable=protected-access
    with self.assertLogs(image_captioning.__name__, level="INFO") as logs:
      workers[0]._log_progress(now)  # pylint: disable=protected-access
    # 60 of 100 images in 10 s: 6 images/s, 40 left: ETA 7 s.
    self.assertIn("~60 of 100 images captioned (6.0 images/s, this worker 2.0; ETA 0m07s)",
                  logs.output[0])

  def test_bad_flags_and_models_are_errors(self):
    output_dir = os.path.join(self.tmp, "errors")
    self.assertEqual(caption_images.main([
        f"--input_patterns={self.images}/nothing*.jpg", f"--saved_model_dir={self.export_dir}",
        f"--output_dir={output_dir}"]), 2)
    self.assertEqual(caption_images.main([
        f"--input_patterns={self.images}/*.jpg", f"--saved_model_dir={self.tmp}",
        f"--output_dir={output_dir}"]), 2)
    with self.assertRaises(SystemExit):
      caption_images.parse_args([f"--input_list={self.list_file}", "--output_dir=x",
                                 f"--saved_model_dir={self.export_dir}", "--beam_size=2"])
    with self.assertRaises(SystemExit):
      caption_images.parse_args([f"--input_patterns=x", "--base_dir=y", "--output_dir=x",
                                 f"--saved_model_dir={self.export_dir}"])

  def test_check_image_never_decodes_an_image_over_the_limit(self):
    def png_header(width, height):
      """A PNG that claims width x height pixels and holds one: decoding it would fail."""
      buffer = io.BytesIO()
      Image.new("RGB", (1, 1)).save(buffer, "PNG")
      data = bytearray(buffer.getvalue())
      data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
      data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # IHDR's checksum.
      return bytes(data)

    for width, height in ((2000, 1000), (100_000, 100_000)):  # (the second, past PIL's limit)
      with self.assertRaises(image_captioning.Failure) as caught:
        image_captioning.check_image(png_header(width, height), MAX_PIXELS)
      self.assertEqual(caught.exception.reason, "too_many_pixels")
    with self.assertRaises(image_captioning.Failure) as caught:
      image_captioning.check_image(png_header(100, 100), MAX_PIXELS)
    self.assertEqual(caught.exception.reason, "corrupt_image")
    with open(self.jpegs[1], "rb") as f:
      jpeg = f.read()
    self.assertEqual(image_captioning.check_image(jpeg, MAX_PIXELS), (jpeg, ""))


if __name__ == "__main__":
  unittest.main()
