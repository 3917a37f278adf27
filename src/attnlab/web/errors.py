"""Errors the payload builders raise; the app turns each into a 4xx answer whose message names the problem.

Raise the class whose ``status_code`` fits (the app documents each route's codes in its OpenAPI
schema, ``attnlab.web.app.ERRORS``); a library error (``InputError``, ``ConfigError``,
``GenerationError``) that reaches the app is a 422 too.
"""

from __future__ import annotations


class PayloadError(ValueError):
    """Bad input to a payload builder (empty text, too many tokens, a layer that does not exist...)."""

    status_code = 422


class UnknownModelError(PayloadError):
    status_code = 404


class ModelNotInstalledError(PayloadError):
    """A known catalogue model whose files are missing: the message says what to install."""

    status_code = 503


class NotFoundError(PayloadError):
    status_code = 404
