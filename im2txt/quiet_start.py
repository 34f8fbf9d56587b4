"""TensorFlow imported without its known-harmless start-up lines, so a binary's console is its own.

Importing TensorFlow 2.15 from its pip wheel prints, before any line of the program, three
`E external/local_xla/.../cuda_dnn.cc] Unable to register cuDNN factory: Attempting to register
factory for plugin cuDNN when one has already been registered` lines (and the same for cuFFT and
cuBLAS: a duplicate registration inside the wheel, harmless, logged at ERROR level even on a
machine without a GPU), a warning that TensorRT is missing, and with TF_CPP_MIN_LOG_LEVEL unset,
INFO notices (oneDNN custom
operations, the CPU instructions it was not built for). They look like errors and bury the
binary's own lines.

The `im2txt` package imports this module first, and so does `beam_jobs`: every binary, whether
run as `python -m im2txt.X`, `bazel run` or a console script, imports TensorFlow here. The import
runs with the process's stderr (file descriptor 2, where TensorFlow's C++ runtime writes) going
through a pipe; afterwards the known-harmless lines are dropped and every other line is written
to stderr as it was. TF_CPP_MIN_LOG_LEVEL defaults to 1 (INFO off; a user's own setting wins),
so TensorFlow's warnings and errors after start-up appear as before. tensorflow-addons' end-of-life
banner is filtered where it is imported (model/tfa_ops.py).
"""

import os
import re
import sys
import threading
from typing import List

# The start-up lines that are dropped: exactly the duplicate factory registrations, and the
# warning that TensorRT (an optional NVIDIA inference library this project does not use) is absent.
HARMLESS_LINE = re.compile(r"Unable to register (cuDNN|cuFFT|cuBLAS) factory: Attempting to "
                           r"register factory for plugin \w+ when one has already been registered|"
                           r"TF-TRT Warning: Could not find TensorRT$")


def _drain(read_fd: int, chunks: List[bytes]) -> None:
  while True:
    chunk = os.read(read_fd, 65536)
    if not chunk:
      return
    chunks.append(chunk)


def kept_lines(text: str) -> str:
  """`text` without the known-harmless start-up lines."""
  return "".join(line for line in text.splitlines(keepends=True) if not HARMLESS_LINE.search(line))


def import_tensorflow() -> None:
  """Imports TensorFlow (once per process) without its known-harmless start-up lines."""
  if "tensorflow" in sys.modules:
    return
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
  try:
    sys.stderr.flush()
    saved = os.dup(2)
  except (AttributeError, OSError, ValueError):  # No usable descriptor 2: nothing to filter.
    import tensorflow  # pylint: disable=import-outside-toplevel,unused-import
    return
  read_fd, write_fd = os.pipe()
  chunks: List[bytes] = []
  # Read while TensorFlow imports, so that a long output cannot fill the pipe and block it.
  reader = threading.Thread(target=_drain, args=(read_fd, chunks), daemon=True)
  reader.start()
  os.dup2(write_fd, 2)
  os.close(write_fd)
  try:
    import tensorflow  # pylint: disable=import-outside-toplevel,unused-import,redefined-outer-name
  finally:
    try:
      sys.stderr.flush()
    except (AttributeError, OSError, ValueError):
      pass
    os.dup2(saved, 2)  # Closes the pipe's last write end: the reader sees its end.
    os.close(saved)
    reader.join()
    os.close(read_fd)
    text = kept_lines(b"".join(chunks).decode("utf-8", "replace"))
    if text:
      os.write(2, text.encode("utf-8"))
