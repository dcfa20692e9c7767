"""Fuzz the REST API from its own OpenAPI schema with schemathesis, against a live server.

Every operation gets a bounded number of generated requests, valid and invalid; none may answer
with a server error, and every answer must match the schema's documented responses.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from hypothesis import HealthCheck, given, settings
from rest_framework.authtoken.models import Token
from schemathesis import checks

from tests.api.conftest import judge, make_comparison, make_model_version, make_round
from tests.conftest import make_user
from tests.security.test_api_fuzz_roles_and_sequences import api_schema

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# Enough to reach every parameter of every operation a few times while keeping the run under a minute.
EXAMPLES_PER_OPERATION = 25

EXCLUDED_CHECKS = [
    # "Schema-valid request rejected": the schema cannot say that a comparison id must exist and have
    # been given to you, or that a text must not be blank once stripped; those 400s are right.
    checks.positive_data_acceptance,
    # "API accepts invalid authentication": the check spoils only the session cookie, while every
    # request also carries the valid token this test sends, so a 200 is the right answer.
    checks.ignored_auth,
]


@pytest.fixture
def superuser_token(db) -> str:
    """A superuser passes every role check, so the fuzzer reaches every operation's validation."""
    user = get_user_model().objects.create_superuser("fuzz", "fuzz@example.org", "correct horse battery")
    comparison = make_comparison(round=make_round(), model_versions=(make_model_version(), None))
    judge(comparison, make_user("someone", None))
    return Token.objects.create(user=user).key


def test_the_api_never_errors_and_matches_its_schema(live_server, superuser_token):
    # Schemathesis's own pytest plugin does not run under this pytest, so each operation's strategy
    # is driven by Hypothesis directly; the checks are the same.
    # Operations that queue a Celery task are left out (see QUEUEING_OPERATIONS).
    schema = api_schema(live_server)
    headers = {"Authorization": f"Token {superuser_token}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 15

    failures = {}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None, print_blob=False, derandomize=True)
        def fuzz(case):
            case.call_and_validate(base_url=live_server.url, headers=headers, excluded_checks=EXCLUDED_CHECKS)

        try:
            fuzz()
        except (Exception, BaseExceptionGroup) as error:  # Collected: one run reports every failing operation.
            failures[operation.label] = str(error)
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
