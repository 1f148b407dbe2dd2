"""A local Sphinx extension for the book's pages (loaded through `sphinx.local_extensions` in _config.yml).

Some extensions register their inline configuration scripts on every `env-before-read-docs`, and a
jupyter-book build fires it more than once: every page then carried sphinx-thebe's
`const THEBE_JS_URL = ...` twice, and the second copy threw "Identifier 'THEBE_JS_URL' has already been
declared" in every reader's console (togglebutton's selector script was doubled too). This drops the
repeats from each page's script list, keeping the first of each.
"""

from __future__ import annotations


def _script_key(js) -> tuple:
    attributes = getattr(js, "attributes", {}) or {}
    filename = getattr(js, "filename", js) or ""          # an inline script: None or "", by who added it
    return str(filename), tuple(sorted((k, str(v)) for k, v in attributes.items()))


def drop_repeated_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for js in scripts:
        key = _script_key(js)
        if key not in seen:
            seen.add(key)
            unique.append(js)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", drop_repeated_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1.0"}
