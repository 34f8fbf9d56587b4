#!/usr/bin/env bash
# Runs every benchmark in bench/ (each prints its figures and a ratio against a baseline measured
# in the same run). Not part of the test suite. Run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
source tools/env.sh
python -m bench.bench_build_mscoco_data --sizes=2000,4000
python -m bench.bench_train --compare=phases --image_size=75 --batch_size=32 --steps=20
python -m bench.bench_train --compare=loops --image_size=75 --batch_size=16 --steps=100
python -m bench.bench_train --compare=precision --image_size=150 --batch_size=16 --steps=10
python -m bench.bench_train --compare=devices --image_size=75 --batch_size=16 --steps=20
python -m bench.bench_beam_search --preset=small --num_images=64 --batch_size=32
python -m bench.bench_caption_images --num_images=2000
python -m bench.bench_huge_image --size=12000
python -m bench.bench_feature_cache --preset=small --batch_size=32 --steps=20 --num_images=128
python -m bench.bench_feature_cache --preset=default --batch_size=32 --steps=8 --num_images=128
python -m bench.bench_demo_curve --phase2_steps=1800 --checkpoint_every=300 --seed=0
python -m bench.bench_shape_signal --steps=1000
python -m bench.bench_scst --minutes=3
