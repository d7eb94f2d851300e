#!/usr/bin/env bash
# The dependency direction of DESIGN.md: gpu/, model/, balance/ and transport/ never include CAF.
set -euo pipefail
cd "${SY_SOURCE_DIR:-$(dirname "$0")/..}"
bad=$(grep -rlE '#include\s*[<"]caf/' gpu model balance transport 2>/dev/null || true)
if [ -n "$bad" ]; then
  echo "CAF included below actors/: $bad"
  exit 1
fi
echo "layering: gpu/ model/ balance/ transport/ are free of CAF"
