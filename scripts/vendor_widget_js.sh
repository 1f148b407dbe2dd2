#!/usr/bin/env bash
# Fetch the JavaScript that renders the book's ipywidgets in the static HTML, so pages need no CDN.
#
#   scripts/vendor_widget_js.sh           (re)write book/static/widgets_js/ from the npm registry
#   scripts/vendor_widget_js.sh --check   fetch again and compare with the committed files' sha256
#
# What the pages load: html-manager's standalone bundle dist/embed.js (the widget manager with the
# built-in @jupyter-widgets/base, controls and output models bundled; no require.js, no CDN fallback:
# a widget module it does not bundle fails to render instead of being fetched) and the Font Awesome
# webfonts it references (icons of the Play button), which it loads from its own folder. Browsers
# request only the woff2 faces, so only those are kept (the eot/ttf/svg/woff fallbacks are ~2.9 MB).
# _config.yml copies book/static/ to _static/ (sphinx.config.html_static_path = [book/static]) and has
# myst-nb load, on pages with widgets only, book/static/widget_fixes.js (ours, not vendored: it keeps the
# theme's Font Awesome and MathJax 3 from breaking the widgets) and then widgets_js/embed.js
# (sphinx.config.nb_ipywidgets_js). tests/test_browser.py drives the result in headless Chromium.
# This script writes only book/static/widgets_js/.
#
# html-manager 1.0.x is the embedder of ipywidgets 8.1 (model versions base 2.0.0, controls 2.0.0).
# Needs npm (the registry only), tar, sha256sum.
set -euo pipefail

HTML_MANAGER_VERSION=1.0.15      # @jupyter-widgets/html-manager; ipywidgets 8.1.x
FONTAWESOME_VERSION=5.15.4       # bundled inside embed.js; fetched only for its LICENSE.txt

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/book/static/widgets_js"
CHECK=0
[[ "${1:-}" == "--check" ]] && CHECK=1

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

pack() {  # pack NAME@VERSION -> prints the tarball name; npm verifies the registry's sha512 integrity
    npm pack --silent "$1" 2>/dev/null | tail -n 1
}
integrity() {  # integrity NAME@VERSION -> the registry's sha512 integrity string
    npm view "$1" dist.integrity 2>/dev/null
}

HM_TGZ="$(pack "@jupyter-widgets/html-manager@$HTML_MANAGER_VERSION")"
FA_TGZ="$(pack "@fortawesome/fontawesome-free@$FONTAWESOME_VERSION")"
mkdir hm fa
tar xzf "$HM_TGZ" -C hm
tar xzf "$FA_TGZ" -C fa package/LICENSE.txt

OUT="$WORK/out"
mkdir "$OUT"
cp hm/package/dist/embed.js hm/package/dist/embed.js.LICENSE.txt hm/package/dist/*.woff2 "$OUT/"
grep -q "Font Awesome Free $FONTAWESOME_VERSION" "$OUT/embed.js" \
    || { echo "embed.js does not bundle Font Awesome $FONTAWESOME_VERSION: update FONTAWESOME_VERSION" >&2; exit 1; }
cp fa/package/LICENSE.txt "$OUT/LICENSE-fontawesome.txt"
# The html-manager tarball ships no LICENSE file; its package.json says BSD-3-Clause, the license of the
# ipywidgets repository it is built from (https://github.com/jupyter-widgets/ipywidgets/blob/main/LICENSE):
cat > "$OUT/LICENSE-html-manager.txt" <<'EOF'
@jupyter-widgets/html-manager (https://github.com/jupyter-widgets/ipywidgets, packages/html-manager)
is distributed under the BSD 3-Clause license of the ipywidgets repository:

Copyright (c) 2015 Project Jupyter Contributors
All rights reserved.

Redistribution and use in source and binary forms, with or without
modification, are permitted provided that the following conditions are met:

1. Redistributions of source code must retain the above copyright notice, this
   list of conditions and the following disclaimer.

2. Redistributions in binary form must reproduce the above copyright notice,
   this list of conditions and the following disclaimer in the documentation
   and/or other materials provided with the distribution.

3. Neither the name of the copyright holder nor the names of its
   contributors may be used to endorse or promote products derived from
   this software without specific prior written permission.

THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS"
AND ANY EXPRESS OR IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE
IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE ARE
DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT HOLDER OR CONTRIBUTORS BE LIABLE
FOR ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR CONSEQUENTIAL
DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR
SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER
CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY,
OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE
OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.
EOF

{
    echo "# Written by scripts/vendor_widget_js.sh; do not edit. Check with: scripts/vendor_widget_js.sh --check"
    echo "# package                                  version  npm integrity"
    echo "@jupyter-widgets/html-manager $HTML_MANAGER_VERSION $(integrity "@jupyter-widgets/html-manager@$HTML_MANAGER_VERSION")"
    echo "@fortawesome/fontawesome-free $FONTAWESOME_VERSION $(integrity "@fortawesome/fontawesome-free@$FONTAWESOME_VERSION")"
    echo "# sha256 of each file (sha256sum -c format)"
    (cd "$OUT" && sha256sum embed.js embed.js.LICENSE.txt *.woff2 LICENSE-*.txt)
} > "$OUT/VERSIONS.txt"

if (( CHECK )); then
    if diff -r "$DEST" "$OUT" >/dev/null; then
        echo "book/static/widgets_js matches html-manager $HTML_MANAGER_VERSION from the registry"
    else
        echo "book/static/widgets_js differs from what the registry serves:" >&2
        diff -r -q "$DEST" "$OUT" >&2 || true
        exit 1
    fi
    exit 0
fi

rm -rf "$DEST"
mkdir -p "$DEST"
cp "$OUT"/* "$DEST/"
echo "wrote $(cd "$ROOT" && echo book/static/widgets_js): $(du -sh "$DEST" | cut -f1) in $(ls "$DEST" | wc -l) files"
