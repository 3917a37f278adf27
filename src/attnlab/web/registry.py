"""The walkthrough's views that register themselves: ``create_app`` calls each one's ``routes``.

Adding a view: a module here in ``web/`` (schemas, payload builder, ``routes(router, mount)``; see
``web/view.py``), listed below, and a module in ``static/`` listed in ``static/registry.js``.
"""

from __future__ import annotations

from attnlab.web import arch, attention, experiments, generation, order, qkv, timeline, translation, why
from attnlab.web.view import ViewModule

VIEWS: tuple[ViewModule, ...] = (arch, attention, experiments, generation, order, qkv, timeline, translation, why)
