"""The walkthrough's views in a notebook, as self-contained HTML (no CDN, no server, no internet).

``attnlab.show.attention("shakespeare-char", "To be, or not to be")`` returns a ``View``: Jupyter
displays it (``_repr_html_``) and ``view.save("view.html")`` writes a page that opens offline. The
drawing code is the walkthrough's own ``web/static/views.js``, inlined when a view renders, and the
data of ``attention``, ``head_finder``, ``head_contexts`` and ``why`` is built by the walkthrough's own
payload builders (``attnlab.web``; see ``views.py``).
"""

from attnlab.show._html import View
from attnlab.show.corpus import head_contexts
from attnlab.show.views import attention, head_effects, head_finder, logit_lens, saliency, why

__all__ = ["View", "attention", "head_contexts", "head_effects", "head_finder", "logit_lens", "saliency", "why"]
