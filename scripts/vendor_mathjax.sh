#!/usr/bin/env bash
# Fetch MathJax 3 for the book, so its equations render with no network (Sphinx's default loads it from
# cdn.jsdelivr.net). Writes book/static/mathjax/: es5/tex-mml-chtml.js (the component Sphinx would load)
# and the CHTML woff-v2 fonts it requests relative to its own location; _config.yml points
# sphinx.config.mathjax_path at it. Needs npm (the registry only), tar, sha256sum.
#   scripts/vendor_mathjax.sh           (re)write book/static/mathjax/
#   scripts/vendor_mathjax.sh --check   fetch again and compare with the committed files
set -euo pipefail
VERSION=3.2.2
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/book/static/mathjax"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
TGZ="$(npm pack --silent "mathjax@$VERSION" 2>/dev/null | tail -n 1)"
tar xzf "$TGZ"
OUT="$WORK/out"
mkdir -p "$OUT/output/chtml/fonts"
cp package/es5/tex-mml-chtml.js "$OUT/"
cp -r package/es5/output/chtml/fonts/woff-v2 "$OUT/output/chtml/fonts/"
cp package/LICENSE "$OUT/LICENSE-mathjax.txt"
{
    echo "mathjax@$VERSION (Apache-2.0) from the npm registry; npm integrity $(npm view "mathjax@$VERSION" dist.integrity 2>/dev/null)"
    (cd "$OUT" && find . -type f ! -name VERSIONS.txt | sort | xargs sha256sum)
} > "$OUT/VERSIONS.txt"
if [[ "${1:-}" == "--check" ]]; then
    diff -r "$OUT" "$DEST" && echo "book/static/mathjax matches mathjax@$VERSION"
    exit
fi
rm -rf "$DEST"
cp -r "$OUT" "$DEST"
du -sh "$DEST"
