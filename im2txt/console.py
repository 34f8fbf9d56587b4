"""How every absl binary starts, whether as `python -m im2txt.X`, `bazel run` or a console script.

absl's `--help` lists the flags of the main module, which for a console script
(`im2txt-train`, installed by pip) is the small generated wrapper, not the module defining the
flags; `run` registers the module's flags as the wrapper's so that `--help` lists them.
"""

import sys
from typing import Callable, Sequence

from absl import app
from absl import flags


def run(main: Callable, module_name: str, required: Sequence[str] = ()) -> None:
  """app.run(main) for the binary defined in `module_name`, with `required` flags enforced."""
  for flag in flags.FLAGS.get_key_flags_for_module(module_name):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  # Marked here, not at import, so that tests importing a binary's module run without them.
  if required:
    flags.mark_flags_as_required(list(required))
  app.run(main)
