"""Tests of im2txt/file_io.py: atomic outputs, input patterns, TensorFlow errors in a line."""

import os
import shutil
import tempfile
import unittest

import tensorflow as tf

from im2txt import file_io


class AtomicPathTest(unittest.TestCase):

  def setUp(self):
    self.tmp = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.tmp, True)

  def _entries(self, directory=None):
    return sorted(os.listdir(directory or self.tmp))

  def test_write_file_creates_directories_and_leaves_no_temporary(self):
    path = os.path.join(self.tmp, "a", "b", "out.txt")
    file_io.write_file(path, "café\n")
    with open(path, "rb") as f:
      self.assertEqual(f.read(), "café\n".encode("utf-8"))
    self.assertEqual(self._entries(os.path.dirname(path)), ["out.txt"])
    file_io.write_file(path, b"\x00\x01")  # Bytes as they are; overwrites.
    with open(path, "rb") as f:
      self.assertEqual(f.read(), b"\x00\x01")

  def test_write_json_is_sorted_with_final_newline(self):
    path = os.path.join(self.tmp, "x.json")
    file_io.write_json(path, {"b": 1, "a": [1, 2]}, indent=None)
    with open(path) as f:
      self.assertEqual(f.read(), '{"a": [1, 2], "b": 1}\n')

  def test_failure_keeps_the_old_file_and_removes_the_temporary(self):
    path = os.path.join(self.tmp, "state.json")
    file_io.write_file(path, "old")
    with self.assertRaisesRegex(RuntimeError, "killed"):
      with file_io.atomic_path(path) as tmp:
        self.assertEqual(os.path.dirname(tmp), self.tmp)
        self.assertIn(file_io.TMP_MARKER, os.path.basename(tmp))
        with open(tmp, "w") as f:
          f.write("half")
        self.assertFalse(os.path.samefile(tmp, path))
        raise RuntimeError("killed")
    with open(path) as f:
      self.assertEqual(f.read(), "old")
    self.assertEqual(self._entries(), ["state.json"])

  def test_nothing_written_is_an_error(self):
    path = os.path.join(self.tmp, "never")
    with self.assertRaisesRegex(FileNotFoundError, "nothing was written for .*never"):
      with file_io.atomic_path(path):
        pass
    self.assertEqual(self._entries(), [])

  def test_directory_appears_whole_and_may_replace_an_empty_one(self):
    target = os.path.join(self.tmp, "model")
    os.makedirs(target)  # An empty folder the user made beforehand.
    with file_io.atomic_path(target) as tmp:
      os.makedirs(os.path.join(tmp, "variables"))
      with open(os.path.join(tmp, "saved_model.pb"), "w") as f:
        f.write("pb")
      self.assertEqual(os.listdir(target), [])  # Not visible until the block ends.
    self.assertEqual(sorted(os.listdir(target)), ["saved_model.pb", "variables"])
    self.assertEqual(self._entries(), ["model"])

  def test_temporary_in_another_directory(self):
    job_tmp = os.path.join(self.tmp, "job_tmp")
    path = os.path.join(self.tmp, "out", "train-00000-of-00001")
    os.makedirs(os.path.dirname(path))
    with file_io.atomic_path(path, tmp_dir=job_tmp) as tmp:
      self.assertEqual(os.path.dirname(tmp), job_tmp)
      with open(tmp, "w") as f:
        f.write("records")
    self.assertEqual(self._entries(job_tmp), [])
    self.assertEqual(self._entries(os.path.dirname(path)), ["train-00000-of-00001"])

  def test_concurrent_writers_never_share_a_temporary(self):
    path = os.path.join(self.tmp, "f")
    with file_io.atomic_path(path) as first, file_io.atomic_path(path) as second:
      self.assertNotEqual(first, second)
      for name, text in ((first, "1"), (second, "2")):
        with open(name, "w") as f:
          f.write(text)
    with open(path) as f:
      self.assertEqual(f.read(), "1")  # The last to finish (the outer block) wins, whole.


class ExpandPatternsTest(unittest.TestCase):

  def setUp(self):
    self.tmp = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.tmp, True)
    self.paths = []
    for name in ("b-1", "a-0", "c-2"):
      self.paths.append(os.path.join(self.tmp, name))
      with open(self.paths[-1], "w") as f:
        f.write(name)

  def test_sorted_per_pattern_each_once(self):
    a, b, c = sorted(self.paths)
    pattern = os.path.join(self.tmp, "*-*")
    self.assertEqual(file_io.expand_patterns(pattern, "--x"), [a, b, c])
    self.assertEqual(file_io.expand_patterns(f" {c} ,{pattern},,{c}", "--x"), [c, a, b])

  def test_pattern_matching_nothing_is_named(self):
    missing = os.path.join(self.tmp, "nothing-*")
    with self.assertRaises(FileNotFoundError) as raised:
      file_io.expand_patterns(f"{self.paths[0]},{missing}", "--input_file_pattern")
    self.assertEqual(str(raised.exception),
                     f"--input_file_pattern pattern {missing!r} matches no file")

  def test_no_pattern_is_an_error(self):
    with self.assertRaisesRegex(ValueError, "--input_files names no file pattern"):
      file_io.expand_patterns(" , ", "--input_files")


class TfMessageTest(unittest.TestCase):
  """file_io.tf_message on the forms TensorFlow 2.15 raises (messages copied from its errors)."""

  def test_an_eager_op_error(self):
    error = tf.errors.UnavailableError(None, None, (
        "{{function_node __wrapped__CollectiveReduceV2_Nordering_token_1_device_/job:worker/"
        "replica:0/task:1/device:CPU:0}} Collective ops is aborted by: Socket closed\n"
        "Additional GRPC error information from remote target /job:worker/replica:0/task:0\n"
        "The error could be from a previous operation. Restart your program to reset. "
        "[Op:CollectiveReduceV2] name: "))
    self.assertEqual(file_io.tf_message(error), "Collective ops is aborted by: Socket closed")

  def test_an_error_inside_a_tf_function(self):
    @tf.function
    def decode(data):
      return tf.io.decode_jpeg(data)

    with self.assertRaises(tf.errors.InvalidArgumentError) as raised:
      decode(tf.constant(b"not an image"))
    self.assertTrue(raised.exception.message.startswith("Graph execution error:"),
                    raised.exception.message)
    self.assertEqual(file_io.tf_message(raised.exception),
                     "Unknown image file format. One of JPEG, PNG, GIF, BMP required.")

  def test_stack_traces_unavailable_and_several_root_errors(self):
    error = tf.errors.InvalidArgumentError(None, None, (
        "Graph execution error:\n\nDetected at node DecodeJpeg defined at (most recent call "
        "last):\n<stack traces unavailable>\n2 root error(s) found.\n  (0) INVALID_ARGUMENT:  "
        "Invalid JPEG data or crop window.\n\t [[{{node DecodeJpeg}}]]\n  (1) "
        "INVALID_ARGUMENT:  Invalid JPEG data or crop window.\n0 successful operations.\n"
        "0 derived errors ignored. [Op:__inference_decode_12]"))
    self.assertEqual(file_io.tf_message(error), "Invalid JPEG data or crop window.")

  def test_a_one_line_error_and_other_exceptions(self):
    error = tf.errors.DataLossError(None, None, "truncated record at 12 [Op:IteratorGetNext]")
    self.assertEqual(file_io.tf_message(error), "truncated record at 12")
    self.assertEqual(file_io.tf_message(OSError("disk full\nmore")), "disk full")
    self.assertEqual(file_io.tf_message(ValueError()), "ValueError")
    self.assertEqual(file_io.tf_message(tf.errors.UnknownError(None, None, "[Op:Foo]")),
                     "UnknownError")


if __name__ == "__main__":
  unittest.main()
