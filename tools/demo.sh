#!/usr/bin/env bash
# README command (1): sets up the machine (tools/setup.sh), then runs the whole flow end to end
# on the embedded sample dataset (demo/run_demo.py): sample data -> Beam job -> concept
# pretraining -> phase 1 with the evaluator alongside -> captions for held-out JPEGs, and a report.
# Outputs go to out/demo (or --output_dir=DIR); extra arguments go to demo/run_demo.py.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
source tools/env.sh
exec python -m demo.run_demo --output_dir=out/demo "$@"
