#!/usr/bin/env bash
# Rebuilds the seed corpus of the pipeline target from the Postfix fixtures: every fixture
# whole, and every request block of it on its own (libFuzzer mutates small inputs faster).
# Run it from anywhere after the fixtures change; it replaces corpus/pipeline/ entirely.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
fixtures="$here/../tests/fixtures/postfix-3.7.11"
out="$here/corpus/pipeline"
rm -rf "$out"
mkdir -p "$out"
for f in "$fixtures"/*.txt; do
  name="$(basename "$f" .txt)"
  cp "$f" "$out/$name.txt"
  # Paragraph mode: one record per request block, the blank line that ends it put back.
  awk -v dir="$out" -v name="$name" 'BEGIN { RS = ""; ORS = "\n\n" }
    { n++; print > sprintf("%s/%s-%02d.txt", dir, name, n); close(sprintf("%s/%s-%02d.txt", dir, name, n)) }' "$f"
done
echo "$(find "$out" -type f | wc -l) seed files in corpus/pipeline"
