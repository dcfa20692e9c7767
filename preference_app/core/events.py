"""Events the core app publishes once a write has committed, for the apps built on core to react to.

Core is the bottom layer: it never imports annotation, api or rounds. When one of them must learn
that something happened here (rounds count judgments towards a round's target), it connects a
receiver in its AppConfig.ready(), and core publishes the event after the transaction commits.
A receiver should only call a service of its own app.
"""

from __future__ import annotations

from django.db import transaction
from django.dispatch import Signal

# Sent with `comparison` (the Comparison judged) after a new judgment has been committed; a repeated
# submit that stored nothing sends nothing.
judgment_recorded = Signal()


def publish_on_commit(event: Signal, *, sender, **payload) -> None:
    """Send `event` once the current transaction commits (at once when there is none).

    The write is already committed when receivers run, so a receiver's failure must not turn the
    request that made it into an error: `send_robust` logs the exception (logger django.dispatch)
    and the remaining receivers still run. Nothing is sent if the transaction rolls back.
    """
    transaction.on_commit(lambda: event.send_robust(sender=sender, **payload))
