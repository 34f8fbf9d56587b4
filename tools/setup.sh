#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine for this project, idempotently:
#   - .venv/ in the repo root with the exact packages of requirements.txt (Python 3.11);
#   - Bazel from Debian's bazel-bootstrap (+ bazel-rules-java) when `bazel` is missing;
#   - a Java runtime when `java` is missing (pycocoevalcap's tokenizer and METEOR run on Java).
# Rerunning it does nothing when all is in place (a stamp records the installed requirements).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

log() { printf '[setup] %s\n' "$*" >&2; }

python_bin=""
for candidate in python3.11 python3; do
  if command -v "$candidate" >/dev/null 2>&1 &&
     "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
    python_bin=$(command -v "$candidate"); break
  fi
done

apt_packages=()
command -v bazel >/dev/null 2>&1 || apt_packages+=(bazel-bootstrap)
[ -d /usr/share/bazel/rules/java ] || apt_packages+=(bazel-rules-java)
command -v java >/dev/null 2>&1 || apt_packages+=(default-jre-headless)
[ -n "$python_bin" ] || apt_packages+=(python3.11 python3.11-venv)
if [ -n "$python_bin" ] && ! "$python_bin" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  apt_packages+=(python3.11-venv)
fi
if [ ${#apt_packages[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing Debian packages: ${apt_packages[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${apt_packages[@]}" >/dev/null
  else
    log "missing: ${apt_packages[*]}"
    log "install them as root: apt-get install ${apt_packages[*]}"
    exit 1
  fi
fi
[ -n "$python_bin" ] || python_bin=$(command -v python3.11)

stamp=.venv/.requirements-installed
if [ ! -x .venv/bin/python ]; then
  log "creating virtualenv .venv with $python_bin"
  "$python_bin" -m venv .venv
fi
if ! cmp -s requirements.txt "$stamp" 2>/dev/null; then
  log "installing pinned packages from requirements.txt into .venv (a few minutes the first time)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt
  cp requirements.txt "$stamp"
fi
log "ready: $root/.venv ($(.venv/bin/python --version)), $(bazel --version 2>/dev/null | head -1 || echo bazel)"
