"""Habits every binary shares: atomic outputs, comma-separated input patterns, and TensorFlow's
errors told in one line (tf_message: what a message names a file's problem with).

Atomic outputs: a file (or a directory: a SavedModel, a converted checkpoint) is written under a
temporary sibling name and renamed into place when complete, so a reader (the evaluator, a
resumed job, a user) never sees half of it, and a killed writer leaves only a `NAME.tmp-XXXX`
entry beside it. Local paths and any tf.io.gfile file system (gs://, hdfs://) work.

  with file_io.atomic_path("out/model") as tmp:   # tmp = "out/model.tmp-3f9c..."
    tf.saved_model.save(module, tmp)              # out/model appears only now, whole.
  file_io.write_json("train/config.json", {...})

tf_message(e) is the first line of a TensorFlow error that says what went wrong, past the
preamble of a tf.function's error and without TensorFlow's decorations:
"Graph execution error: ... {{function_node ...}} Collective ops is aborted by: Socket closed
[Op:CollectiveReduceV2]" -> "Collective ops is aborted by: Socket closed".
"""

import contextlib
import json
import os
import re
import uuid
from typing import Any, Iterator, List, Optional, Union

import tensorflow as tf

TMP_MARKER = ".tmp-"


def remove_quietly(path: str) -> None:
  """Removes the file or folder `path` if it exists, ignoring errors (for cleaning up after a
  failure, when the failure is what the caller reports)."""
  try:
    if tf.io.gfile.isdir(path):
      tf.io.gfile.rmtree(path)
    elif tf.io.gfile.exists(path):
      tf.io.gfile.remove(path)
  except tf.errors.OpError:
    pass


@contextlib.contextmanager
def atomic_path(path: str, tmp_dir: Optional[str] = None) -> Iterator[str]:
  """Yields a temporary path to write `path` at; renames it to `path` when the block succeeds.

  The caller creates the file or directory at the yielded path. On success it replaces `path`
  (a file is overwritten; a directory must not exist yet, or be empty on a local disk). On an
  exception (or when nothing was written) the temporary entry is removed and `path` is untouched.
  `tmp_dir` puts the temporary entry elsewhere on the same file system (a job's temp directory);
  by default it sits beside `path`. Each call gets its own name, so concurrent or retried writers
  never share a temporary file.
  """
  path = path.rstrip("/") or path
  directory = tmp_dir if tmp_dir is not None else os.path.dirname(path)
  if directory:
    tf.io.gfile.makedirs(directory)
  tmp = os.path.join(directory, f"{os.path.basename(path)}{TMP_MARKER}{uuid.uuid4().hex[:12]}")
  try:
    yield tmp
    if not tf.io.gfile.exists(tmp):
      raise FileNotFoundError(f"nothing was written for {path}")
    if tf.io.gfile.isdir(tmp):
      if tf.io.gfile.isdir(path) and not tf.io.gfile.listdir(path):
        tf.io.gfile.rmtree(path)  # Empty: an output folder the user made beforehand.
      tf.io.gfile.rename(tmp, path)
    else:
      tf.io.gfile.rename(tmp, path, overwrite=True)
  except BaseException:
    remove_quietly(tmp)
    raise


def write_file(path: str, contents: Union[str, bytes]) -> None:
  """Writes `contents` (text as UTF-8) to `path` atomically, creating its directory."""
  data = contents.encode("utf-8") if isinstance(contents, str) else contents
  with atomic_path(path) as tmp:
    with tf.io.gfile.GFile(tmp, "wb") as f:
      f.write(data)


def write_json(path: str, value: Any, indent: Optional[int] = 2, sort_keys: bool = True) -> None:
  """Writes `value` as JSON (with a final newline) to `path` atomically."""
  write_file(path, json.dumps(value, indent=indent, sort_keys=sort_keys) + "\n")


def expand_patterns(patterns: str, flag: str) -> List[str]:
  """Files matching comma-separated glob patterns, sorted per pattern, each listed once.

  A pattern that matches nothing is an error naming it and `flag` (the flag that gave it), as is
  a string without any pattern: a typo must not silently shrink a dataset.
  """
  files, seen = [], set()
  for pattern in (p.strip() for p in patterns.split(",")):
    if not pattern:
      continue
    matches = sorted(tf.io.gfile.glob(pattern))
    if not matches:
      raise FileNotFoundError(f"{flag} pattern {pattern!r} matches no file")
    for match in matches:
      if match not in seen:
        seen.add(match)
        files.append(match)
  if not files:
    raise ValueError(f"{flag} names no file pattern (got {patterns!r})")
  return files


# TensorFlow's decorations of an op's error: "{{function_node ...}}" before it, "[Op:Name]" (and
# anything after it on that line, such as " name: ") after it.
_TF_DECORATIONS = re.compile(r"\{\{[^}]*\}\}\s*|\s*\[Op:\w+\].*")


# The preamble of an error raised inside a tf.function ("Graph execution error:", "Detected at
# node ... defined at", the indented Python stack or "<stack traces unavailable>"), a count of
# root errors, and indented trailers ("\t [[{{node X}}]]").
_TF_PREAMBLE = re.compile(r"Graph execution error:|Detected at node |Node: '|<stack traces "
                          r"unavailable>|\d+ root error\(s\) found|\s")
# The first of several root errors: "  (0) INVALID_ARGUMENT:  Invalid JPEG data ...".
_FIRST_ROOT_ERROR = re.compile(r"\s*\(0\) [A-Z_]+:\s*(.*)")


def tf_message(error: BaseException) -> str:
  """One line saying what went wrong: the first line of a TensorFlow error's message (or of any
  other exception's text) past a tf.function's preamble (the first root error's, when there
  are several), without TensorFlow's decorations; the exception's type name if that leaves
  nothing."""
  text = error.message if isinstance(error, tf.errors.OpError) else str(error)
  for line in (text or "").splitlines():
    root = _FIRST_ROOT_ERROR.match(line)
    if root or (line.strip() and not _TF_PREAMBLE.match(line)):
      line = _TF_DECORATIONS.sub("", root.group(1) if root else line).strip()
      if line:
        return line
  return type(error).__name__
