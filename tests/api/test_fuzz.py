"""Schemathesis against a live uvicorn and worker: requests generated from /api/schema/.

Every operation of the schema, with data that fits it (positive) and data that
does not (negative), through all of Schemathesis's default checks: no server
error, only documented status codes, content types and headers, bodies that
match the response schemas, invalid data refused, missing auth refused,
undocumented methods answered 405.

Bounded for `make test`: a few examples per operation and mode, generated
deterministically (`derandomize`), so a run is repeatable and costs well under
a minute per database. `TASKRUNNER_FUZZ_EXAMPLES=200` runs many more, with
fresh random data each time (README, "API schema").

The streams are fuzzed too, not excluded: the server closes every stream after
one second (TASKRUNNER_SSE_MAX_SECONDS=1, the lifetime cap clients already
reconnect after), so a stream of a running run or the dashboard feed ends and
its response can be checked.
"""

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from populated import populate
from schemathesis import GenerationMode

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(600)]

EXAMPLES = int(os.environ.get("TASKRUNNER_FUZZ_EXAMPLES", "0"))


def fuzz_settings():
    return settings(
        max_examples=EXAMPLES or 6,
        derandomize=not EXAMPLES,
        deadline=None,  # a request on a loaded machine may be slow; speed is for `make bench`
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: report what failed, fast
        suppress_health_check=list(HealthCheck),
    )


@pytest.fixture
def populated(start_server, start_worker, make_task, tokens, tmp_path):
    data = populate(
        start_server, start_worker, make_task, tokens, tmp_path, TASKRUNNER_SSE_MAX_SECONDS="1"
    )
    yield data
    data.http.close()


def test_generated_requests_get_only_described_answers(populated):
    document = populated.http.get("/api/schema/").json()
    schema = schemathesis.openapi.from_dict(document)
    headers = {"Authorization": f"Bearer {populated.token}"}
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @fuzz_settings()
            @given(case=operation.as_strategy(generation_mode=mode))
            def check(case):
                case.call_and_validate(base_url=populated.api.url, headers=headers, timeout=30)

            try:
                check()
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - collect them all
                failures.append(f"{operation.label} ({mode}):\n{exc}")
    assert operations == sum(
        len([m for m in item if m != "parameters"]) for item in document["paths"].values()
    )
    assert not failures, "\n\n".join(failures)
