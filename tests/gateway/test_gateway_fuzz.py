"""Schema fuzzing: schemathesis drives the real gateway (and Triton) from the gateway's own OpenAPI.

A bounded number of valid and invalid examples per operation. Every answer must match the documented
statuses, content types and schemas; no 5xx other than the documented 503/504; the process survives.
(schemathesis' lazy `from_fixture` loader does not run on pytest 9, so hypothesis drives the
operations' strategies directly.)
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from gateway_process import SERVED_NAME, Gateway
from hypothesis import HealthCheck, given, settings
from schemathesis import Case, CheckContext, GenerationMode, Response
from schemathesis.checks import not_a_server_error, positive_data_acceptance

MAX_EXAMPLES = 60
OPERATIONS = [
    ("POST", "/v1/embeddings"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/{model}"),
    ("GET", "/health"),
    ("GET", "/metrics"),
    ("POST", "/tokenize"),
    ("POST", "/embed"),
    ("GET", "/info"),
    ("GET", "/version"),
]
CASES = [(method, path, GenerationMode.POSITIVE) for method, path in OPERATIONS] + [
    (method, path, GenerationMode.NEGATIVE) for method, path in OPERATIONS if method == "POST"
]  # the GETs take no input to get wrong
RANDOM_IDS_MISS = {"/v1/models/{model}"}  # a generated model id is not the served one: 404 is the right answer


# Replaced by the check below; and schema-valid requests may still be refused with a 400 on purpose
# (e.g. `dimensions` other than the model's, more inputs than MAX_INPUTS, 123.0 for an integer).
EXCLUDED = [not_a_server_error, positive_data_acceptance]


@schemathesis.check
def only_documented_server_errors(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """503 (Triton down) and 504 (deadline) are part of the contract; any other 5xx is a bug."""
    if response.status_code >= 500 and response.status_code not in (503, 504):
        raise AssertionError(f"undocumented server error {response.status_code}: {response.text[:500]}")
    return None


@pytest.fixture(scope="module")
def api_schema(gateway: Gateway) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_url(f"{gateway.url}/openapi.json")
    schema.config.update(base_url=gateway.url)
    return schema


def test_schema_lists_every_operation(api_schema: schemathesis.BaseSchema) -> None:
    found = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert found == set(OPERATIONS)


@pytest.mark.parametrize(("method", "path", "mode"), CASES, ids=[f"{m} {p} {g.value}" for m, p, g in CASES])
def test_gateway_conforms_to_its_openapi(
    api_schema: schemathesis.BaseSchema, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]
    statuses: list[int] = []

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def exercise(case: Case) -> None:
        if mode is GenerationMode.POSITIVE and isinstance(case.body, dict):
            case.body["model"] = SERVED_NAME  # else nearly every example stops at 404 model_not_found
        response = case.call_and_validate(excluded_checks=EXCLUDED, additional_checks=[only_documented_server_errors])
        statuses.append(response.status_code)

    exercise()
    if mode is GenerationMode.POSITIVE and path not in RANDOM_IDS_MISS:
        assert 200 in statuses, sorted(set(statuses))  # the fuzzing reached Triton, not only validation


def test_gateway_survives_the_fuzzing(gateway: Gateway) -> None:
    assert gateway.process.poll() is None, gateway.log()
    assert httpx.get(f"{gateway.url}/health").status_code == 200
