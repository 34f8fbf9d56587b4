# Sourced by the tools/ scripts: the project's virtualenv first on PATH, so that Bazel's
# py_binary/py_test (which use the python3 on PATH, see .bazelrc) and plain python3 see it.
_im2txt_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH="$_im2txt_root/.venv/bin:$PATH"
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
unset _im2txt_root
