"""One numpy-only processing module per model family: `image`, `tune`, `text`.

Pre- and post-processing, labels, tokenizer handling and sampling live here once, and the
server's runners, batch jobs, the Python client and the edge runner all import them, so
they agree by construction. `edgestack bundle` copies this package's `common.py` and the
family's module into every bundle (as `edge_runner/families/`), so these modules import
nothing but the standard library, numpy, and each other relatively (plus, where a family
needs it, Pillow or `tokenizers`, imported when used). The families' registry (which module
does what for each family) is `edgestack/registry.py`.
"""
