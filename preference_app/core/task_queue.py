"""Queueing a Celery task after the current transaction commits, surviving a broker outage."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import transaction
from kombu.exceptions import OperationalError as BrokerUnavailable

logger = logging.getLogger(__name__)


def task_enqueue_on_commit(task, *args, unavailable: Callable[[Exception], None], queue: str | None = None) -> None:
    """Queue `task` once the current transaction commits (on `queue`, else its routed queue); call
    `unavailable` if the broker is down.

    The rows the task will read are committed by then, so a broker outage must not turn the request
    into an error page: the data is safe, only the background work is delayed. `unavailable` records
    that on the rows (in its own transaction), so the page can say so and offer a retry.
    """

    def enqueue() -> None:
        try:
            if queue:
                task.apply_async(args, queue=queue)
            else:
                task.delay(*args)
        except (BrokerUnavailable, OSError) as error:
            logger.error("Could not queue %s%r: %s", task.name, args, error)
            unavailable(error)

    transaction.on_commit(enqueue)
