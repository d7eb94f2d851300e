#!/usr/bin/env bash
# The README's first command: installs the dependencies, builds Switchyard, makes the tiny
# DeepSeek-V3-architecture model and runs the main job on it. Today the main job is to inspect
# the model, tokenize a few prompts (plain and in the chat format) and generate with the
# single-process engine (MTP on); the cluster joins here as it lands. Environment: SY_BUILD_DIR (default build), SY_MODEL_DIR (default <data dir>/models/tiny).
set -euo pipefail
cd "$(dirname "$0")/.."

SY_DATA_DIR=$(./deploy/install-deps.sh | tail -n 1)
export SY_DATA_DIR
build=${SY_BUILD_DIR:-build}
model=${SY_MODEL_DIR:-$SY_DATA_DIR/models/tiny}

if [ ! -f "$build/build.ninja" ]; then
  cmake -S . -B "$build" -G Ninja -DSY_WITH_CUDA="${SY_WITH_CUDA:-AUTO}" >/dev/null
fi
cmake --build "$build" --target switchyard
sy="$build/apps/switchyard"

echo "== make the tiny model in $model =="
"$sy" make-tiny-model "$model" --seed 0
echo
echo "== inspect =="
"$sy" inspect "$model"
echo
echo "== tokenize =="
"$sy" tokenize --model "$model" "Switchyard sorts tokens onto experts." "混合专家模型 🚂 1234567"
echo
echo "== the chat format =="
"$sy" tokenize --model "$model" --chat "What does a switchyard do?"
echo
echo "== generate (single-process engine, cpu backend, MTP drafts; random weights, so the text is noise) =="
"$sy" generate --model "$model" --chat --prompt "What does a switchyard do?" --max-tokens 24 --mtp
echo
echo "quickstart: done. Model at $model; try: $sy inspect $model --tensors"
