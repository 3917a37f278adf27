"""The API keeps its own OpenAPI schema: ``schemathesis`` generates requests from it and checks the answers.

Every operation is fuzzed in-process (ASGI) with a fixed seed and a bounded number of cases, in the
three phases schemathesis runs from a test (the schema's examples, boundary values of every limit, and
random valid and invalid requests), with every built-in check: no 5xx, every status code and body
documented, invalid requests refused, the security-relevant ones (unsupported methods answered 405).

One check is replaced by a stricter one of ours. Schemathesis's ``positive_data_acceptance`` wants a
schema-valid request answered 2xx or 404; here a schema-valid request may also be a 422 when the
chosen model cannot do it (text over its token limit or with characters its tokenizer lacks, a
layer past its depth, a decoder asked to translate): limits JSON Schema cannot state. Such a 422 must
then *not* be a schema violation on the server's side (``errors`` empty), and must say what it is.
So a limit the server enforces but the schema does not state still fails this test.

The models: the ``--demo`` tiny random-weight ones plus the bundled ``shakespeare-char``; names the
fuzzer invents are 404s, and the schema's examples and defaults name the real ones.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import schemathesis  # a test-only dependency: the `dev` extra (pyproject.toml)
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import positive_data_acceptance

from attnlab.web.app import create_app
from attnlab.web.demo import register_demo_models

SEED = 20261129
MAX_EXAMPLES = 10  # per operation and phase (~100 s on a busy 2-core machine)
CONFIG = SchemathesisConfig.from_dict({
    "seed": SEED,
    "generation": {"max-examples": MAX_EXAMPLES, "mode": "all", "deterministic": True},
    "phases": {"stateful": {"enabled": False}},
})


# The app holds no model: building it (and reading its schema) at collection changes nothing global.
# schemathesis's ASGI client sends `Host: testserver`: allowed here as `--allow-host testserver` would.
schema = schemathesis.openapi.from_asgi(
    "/openapi.json", create_app(experiments_dir=Path(tempfile.mkdtemp(prefix="attnlab-no-runs-")),
                                allowed_hosts=["testserver"]), config=CONFIG)


@pytest.fixture(scope="module", autouse=True)
def demo_models(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The models are registered at test time, not at collection."""
    register_demo_models(tmp_path_factory.mktemp("timeline"))


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory):
    """POST /api/heads/contexts caches its corpus passes under $XDG_CACHE_HOME: a temporary one here."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        yield


@schemathesis.check
def schema_valid_is_accepted_or_a_model_limit(ctx, response, case) -> bool | None:
    """A schema-valid request is answered 2xx or 404, or a 422 that is no schema violation (a model limit)."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code < 400:
        return None
    if response.status_code == 404:
        return True
    body = response.json()
    assert response.status_code == 422, f"schema-valid request answered {response.status_code}: {body}"
    assert body["errors"] == [], f"the schema allows what the server's validation refuses: {body['detail']}"
    assert body["detail"], "a 422 without a message"
    return True


@schema.parametrize()
def test_api_keeps_its_schema(case) -> None:
    case.call_and_validate(excluded_checks=[positive_data_acceptance],
                           additional_checks=[schema_valid_is_accepted_or_a_model_limit])
