"""What the demo shows on the console of its binaries' output, and where its own stderr goes.

The console shows the demo's own lines and the binaries' progress lines, without the libraries'
log lines and warnings (TensorFlow's C++ runtime, Beam, Python warnings); every byte of output
stays in the log files.
"""

import contextlib
import functools
import os
import re
import sys
from typing import FrozenSet, Optional

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The packages whose log lines may be shown live; the libraries' go to the log files only.
OWN_PACKAGES = ("im2txt", "beam_jobs")


# absl's format (the binaries' Python logs) and abseil's (some of TensorFlow's C++ logs):
# "I1203 05:03:17.973429 139694710709120 trainer.py:334] Training phase 1 ...".
_ABSL_LINE = re.compile(r"^[IWEF]\d{4} [\d:.]+\s+\d+ ([^\s:\]]+):\d+\] ?(.*)$")
# Python logging's default format, e.g. in Beam's workers: "INFO:beam_jobs.shard_writer:Wrote ...".
_LOGGING_LINE = re.compile(r"^(?:DEBUG|INFO|WARNING|ERROR|CRITICAL):([\w.]+):(.*)$")
# TensorFlow's C++ log lines ("2026-12-03 05:02:48.712775: E external/.../cuda_dnn.cc:9261] ...",
# oneDNN and cpu_feature_guard notices), Python warnings and their source lines, deprecations.
_NOISE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[.\d]*: [IWEF] |warn|deprecat", re.I)
# Progress lines worth showing live.
_PROGRESS_KEYS = ("step ", "records", "summary", "split", "train ", "val ", "test ", "vocabulary",
                  "images dropped", "phase", "calibrat")


@functools.lru_cache(maxsize=None)
def own_source_files() -> FrozenSet[str]:
  """The file names that absl's log lines of the product's own modules carry (trainer.py, ...),
  in the packages and their sub-packages."""
  folders = [os.path.join(REPO_ROOT, package) for package in OWN_PACKAGES]
  return frozenset(name for folder in folders for _, _, names in os.walk(folder)
                   for name in names if name.endswith(".py"))


def shown_text(line: str) -> Optional[str]:
  """What to show live of a binary's output line (its full output is in the step's log file):
  the message of the product's own progress lines, without their log prefix; None for the
  rest, and always for libraries' log lines and warnings.
  """
  text = line.rstrip()
  absl_line, logging_line = _ABSL_LINE.match(text), _LOGGING_LINE.match(text)
  if absl_line:
    if absl_line.group(1) not in own_source_files():
      return None
    text = absl_line.group(2)
  elif logging_line:
    if not logging_line.group(1).startswith(OWN_PACKAGES):
      return None
    text = logging_line.group(2)
  if _NOISE.search(text) or not any(k in text for k in _PROGRESS_KEYS):
    return None
  return text


@contextlib.contextmanager
def stderr_to(path: str, stdout: bool = False):
  """Points this process's stderr at the file `path` while the demo runs, restored after; with
  `stdout`, its stdout as well (how a test sees what a user's console shows).

  The file descriptor as well as sys.stderr: TensorFlow's C++ runtime writes to descriptor 2
  itself (e.g. its cuDNN/cuFFT/cuBLAS registration errors at import, which TF_CPP_MIN_LOG_LEVEL=2
  does not silence); Python warnings and absl's and Beam's log lines go to sys.stderr, which a
  test runner may have replaced. The demo prints its own lines to stdout; an exception's
  traceback is printed after the restore.
  """
  descriptors = (1, 2) if stdout else (2,)
  sys.stdout.flush()
  sys.stderr.flush()
  saved = [os.dup(fd) for fd in descriptors]
  try:
    # Line-buffered: Python's lines and the C++ runtime's interleave in order.
    with open(path, "a", buffering=1) as log, contextlib.redirect_stderr(log), \
         (contextlib.redirect_stdout(log) if stdout else contextlib.nullcontext()):
      for fd in descriptors:
        os.dup2(log.fileno(), fd)
      yield
  finally:
    sys.stdout.flush()
    sys.stderr.flush()
    for fd, copy in zip(descriptors, saved):
      os.dup2(copy, fd)
      os.close(copy)
