"""Fuzz the REST API as every kind of caller, and in sequences of calls that feed each other.

test_api_fuzz.py fuzzes each operation on its own as a superuser, who passes every role check and so
reaches every validator. Here the same schema is fuzzed as an anonymous caller and as an annotator,
whose requests stop at authentication and permission checks that must answer 4xx too; and
statefully, where schemathesis chains operations through the links it infers from the schema
(a created prompt's id fed to the prompt detail, a round's id to its detail, ...). The property
checked is the one an attacker probes for: no server error, whoever calls and in whatever order.
"""

from __future__ import annotations

import pytest
import schemathesis
from django.contrib.auth import get_user_model
from hypothesis import HealthCheck, given, settings
from rest_framework.authtoken.models import Token
from schemathesis import checks

from preference_app.core import roles
from tests.api.conftest import judge, make_comparison, make_model_version, make_round
from tests.conftest import make_user

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# Callers without every permission get far fewer distinct answers than the superuser, so fewer
# examples reach them all.
EXAMPLES_PER_OPERATION = 10
STATEFUL_SCENARIOS = 30
STEPS_PER_SCENARIO = 6


# Each queues a Celery task that no worker of this test consumes and a later test's worker would
# find; their input is validated by serializers tested in tests/api and tests/rounds.
QUEUEING_OPERATIONS = [
    ("/api/export-jobs/", "POST"), ("/api/import-jobs/", "POST"), ("/api/import-jobs/{id}/resume/", "POST"),
    ("/api/rounds/", "POST"),
]


def api_schema(live_server):
    schema = schemathesis.openapi.from_url(f"{live_server.url}/api/schema/")
    for path, method in QUEUEING_OPERATIONS:
        schema = schema.exclude(path=path, method=method)
    return schema


@pytest.fixture
def data_to_find(db):
    """One judged comparison and a round, so list and detail operations have something to return."""
    comparison = make_comparison(round=make_round(), model_versions=(make_model_version(), None))
    judge(comparison, make_user("someone", None))


def token_for(username: str, role: str | None, *, superuser: bool = False) -> str:
    if superuser:
        user = get_user_model().objects.create_superuser(username, f"{username}@example.org", "correct horse battery")
    else:
        user = make_user(username, role)
    return Token.objects.create(user=user).key


@pytest.mark.parametrize("caller", ["anonymous", "annotator"])
def test_no_caller_without_every_permission_gets_a_server_error(caller, live_server, data_to_find):
    headers = {} if caller == "anonymous" else {"Authorization": f"Token {token_for('fuzzer', roles.ANNOTATOR)}"}
    operations = [result.ok() for result in api_schema(live_server).get_all_operations()]
    assert len(operations) > 15

    failures = {}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None, print_blob=False, derandomize=True)
        def fuzz(case):
            case.call_and_validate(base_url=live_server.url, headers=headers, checks=[checks.not_a_server_error])

        try:
            fuzz()
        except (Exception, BaseExceptionGroup) as error:  # Collected: one run reports every failing operation.
            failures[operation.label] = str(error)
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())


def test_sequences_of_calls_that_feed_each_other_never_get_a_server_error(live_server, data_to_find):
    headers = {"Authorization": f"Token {token_for('stateful', None, superuser=True)}"}
    machine = api_schema(live_server).as_state_machine()
    # Without inferred links there would be no sequences, and the test would pass having chained nothing.
    rules = [name for name, value in vars(machine).items() if hasattr(value, "hypothesis_stateful_rule")]
    assert len(set(rules) - machine.root_rules) >= 10

    class AsSuperuser(machine):
        def get_call_kwargs(self, case):
            return {"base_url": live_server.url, "headers": headers}

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            case.validate_response(response, checks=[checks.not_a_server_error], transport_kwargs=kwargs)

    AsSuperuser.run(settings=settings(max_examples=STATEFUL_SCENARIOS, stateful_step_count=STEPS_PER_SCENARIO,
                                      deadline=None, suppress_health_check=list(HealthCheck), database=None,
                                      derandomize=True))
