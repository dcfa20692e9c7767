"""Fuzz the REST API from its own OpenAPI schema with schemathesis, against a live server.

Every operation gets a bounded number of generated requests, valid and invalid, from three kinds of
caller: a superuser, who passes every role check and so reaches every validator (every answer must
also match the schema's documented responses); an anonymous caller and an annotator, whose requests
stop at authentication and permission checks that must answer 4xx too. A stateful run then chains
operations through the links schemathesis infers from the schema (a created prompt's id fed to the
prompt detail, a round's id to its detail, ...). None may answer with a server error.
"""

from __future__ import annotations

import pytest
import schemathesis
from django.apps import apps
from django.contrib.auth import get_user_model
from django.db import connection
from hypothesis import HealthCheck, given, settings
from rest_framework.authtoken.models import Token
from schemathesis import checks

from preference_app.core import roles
from tests.api.conftest import judge, make_comparison, make_model_version, make_round
from tests.conftest import make_user

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# Enough to reach every parameter of every operation a few times while keeping the run under a minute.
SUPERUSER_EXAMPLES = 25
# Callers without every permission get far fewer distinct answers, so fewer examples reach them all.
OTHER_CALLER_EXAMPLES = 10
STATEFUL_SCENARIOS = 30
STEPS_PER_SCENARIO = 6
# Each queues a Celery task that no worker of this test consumes and a later test's worker would
# find; their input is validated by serializers tested in tests/api and tests/rounds.
QUEUEING_OPERATIONS = [
    ("/api/export-jobs/", "POST"), ("/api/import-jobs/", "POST"), ("/api/import-jobs/{id}/resume/", "POST"),
    ("/api/rounds/", "POST"),
]
EXCLUDED_CHECKS = [
    # "Schema-valid request rejected": the schema cannot say that a comparison id must exist and have
    # been given to you, or that a text must not be blank once stripped; those 400s are right.
    checks.positive_data_acceptance,
    # "API accepts invalid authentication": the check spoils only the session cookie, while every
    # request also carries the valid token this test sends, so a 200 is the right answer.
    checks.ignored_auth,
]
HYPOTHESIS = dict(deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True)


def api_schema(live_server):
    schema = schemathesis.openapi.from_url(f"{live_server.url}/api/schema/")
    for path, method in QUEUEING_OPERATIONS:
        schema = schema.exclude(path=path, method=method)
    return schema


def fuzz_every_operation(live_server, headers: dict[str, str], *, examples: int, **validation) -> None:
    """Drive each operation's strategy with Hypothesis (schemathesis's own pytest plugin does not run
    under this pytest) and fail with every failing operation at once."""
    operations = [result.ok() for result in api_schema(live_server).get_all_operations()]
    assert len(operations) > 15

    failures = {}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=examples, print_blob=False, **HYPOTHESIS)
        def fuzz(case):
            case.call_and_validate(base_url=live_server.url, headers=headers, **validation)

        try:
            fuzz()
        except (Exception, BaseExceptionGroup) as error:  # Collected: one run reports every failing operation.
            failures[operation.label] = str(error)
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())


# The apps whose tables a stateful scenario may write to, emptied before each scenario.
APP_LABELS = ("core", "annotation", "rounds", "api")


def world_seed() -> None:
    """One judged comparison, a round and a model version, for list and detail operations to find."""
    comparison = make_comparison(round=make_round(1), model_versions=(make_model_version("fuzz-policy"), None))
    someone = get_user_model().objects.filter(username="someone").first() or make_user("someone", None)
    judge(comparison, someone)


def world_reset() -> None:
    """Empty the apps' tables, ids restarting at 1, and seed the same world again.

    Hypothesis replays the start of earlier scenarios while it explores, and stops with "Inconsistent
    data generation" when a replay draws differently, as it does when the server answers differently
    (a prompt created in an earlier scenario makes the same request a 400). From the same state
    every scenario gets the same answers to the same requests, wherever the suite's other tests
    left the id sequences.
    """
    tables = [connection.ops.quote_name(model._meta.db_table) for label in APP_LABELS
              for model in apps.get_app_config(label).get_models(include_auto_created=True)]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
        else:
            cursor.execute("PRAGMA foreign_keys = OFF")
            for table in tables:
                cursor.execute(f"DELETE FROM {table}")
            cursor.execute("DELETE FROM sqlite_sequence")
            cursor.execute("PRAGMA foreign_keys = ON")
    world_seed()


@pytest.fixture
def superuser_token(db) -> str:
    """A superuser's token, and the world of `world_seed`."""
    user = get_user_model().objects.create_superuser("fuzz", "fuzz@example.org", "correct horse battery")
    world_seed()
    return Token.objects.create(user=user).key


def test_the_api_never_errors_and_matches_its_schema(live_server, superuser_token):
    fuzz_every_operation(live_server, {"Authorization": f"Token {superuser_token}"}, examples=SUPERUSER_EXAMPLES,
                         excluded_checks=EXCLUDED_CHECKS)


@pytest.mark.parametrize("caller", ["anonymous", "annotator"])
def test_no_caller_without_every_permission_gets_a_server_error(caller, live_server, superuser_token):
    if caller == "anonymous":
        headers = {}
    else:
        headers = {"Authorization": f"Token {Token.objects.create(user=make_user('fuzzer', roles.ANNOTATOR)).key}"}
    fuzz_every_operation(live_server, headers, examples=OTHER_CALLER_EXAMPLES, checks=[checks.not_a_server_error])


def test_sequences_of_calls_that_feed_each_other_never_get_a_server_error(live_server, superuser_token):
    headers = {"Authorization": f"Token {superuser_token}"}
    machine = api_schema(live_server).as_state_machine()
    # Without inferred links there would be no sequences, and the test would pass having chained nothing.
    rules = [name for name, value in vars(machine).items() if hasattr(value, "hypothesis_stateful_rule")]
    assert len(set(rules) - machine.root_rules) >= 10

    class AsSuperuser(machine):
        def setup(self):
            world_reset()

        def get_call_kwargs(self, case):
            return {"base_url": live_server.url, "headers": headers}

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            case.validate_response(response, checks=[checks.not_a_server_error], transport_kwargs=kwargs)

    AsSuperuser.run(settings=settings(max_examples=STATEFUL_SCENARIOS, stateful_step_count=STEPS_PER_SCENARIO,
                                      **HYPOTHESIS))
