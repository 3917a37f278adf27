"""The classroom edition: the walkthrough as a static folder that opens from any file host, offline.

``attnlab site OUT`` (``export.export_site``) runs the real app in process, records the answer to every
request the page makes for a chosen set of models and sentences, and writes them beside a copy of the
page; the page's fetch layer (``web/static/site.js``) answers from those files when it was opened from
such a folder. ``onnx`` exports the small models (the character model, MiniLM) for onnxruntime-web, so the
page (``web/static/live.js``) can answer a sentence that was not recorded.
"""
