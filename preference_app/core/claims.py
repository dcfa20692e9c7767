"""Claims on background work: who holds one, whether that holder is provably dead, and a heartbeat.

A round's step and a generation batch are claimed by the process that runs them, recorded as
`host:pid:start time`. Two things prove a holder dead. Its heartbeat stopped: the claim was not
refreshed for ROUND_STALL_SECONDS. Or it ran on this machine and its process is gone: a pool child
killed by the out-of-memory killer has its task redelivered at once, and the new delivery should
take the work over then, not after the whole stall time. The start time guards against a new
process that was given the dead one's pid.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

import psutil
from django.conf import settings
from django.db import connection

# How many times one step or batch may be claimed before it is failed instead: work that kills its
# worker every time (out of memory) would otherwise be redelivered and retried for ever.
MAX_ATTEMPTS = 3


def _process_holder(process: psutil.Process) -> str:
    return f"{socket.gethostname()}:{process.pid}:{process.create_time():.2f}"


def holder_current() -> str:
    """This process, as it is recorded on the claims it takes."""
    return _process_holder(psutil.Process())


def holder_of(pid: int) -> str:
    """Another process on this machine, as it would record itself on a claim."""
    return _process_holder(psutil.Process(pid))


def holder_is_gone(holder: str) -> bool:
    """True only when the holder provably no longer runs: it ran on this machine and its process is gone.

    A holder on another machine cannot be checked from here, so it counts as alive until its
    heartbeat stops.
    """
    try:
        host, pid, started = holder.rsplit(":", 2)
        pid = int(pid)
    except ValueError:
        return False
    if host != socket.gethostname():
        return False
    try:
        process = psutil.Process(pid)
        return f"{process.create_time():.2f}" != started or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        # Access denied: the process exists, so its holder may still be working.
        return False


def claim_is_dead(*, claimed: datetime | None, holder: str, now: datetime) -> bool:
    """Whether a claim taken at `claimed` (last heartbeat) by `holder` may be taken over."""
    if claimed is None:
        return True
    return claimed < now - timedelta(seconds=settings.ROUND_STALL_SECONDS) or bool(holder and holder_is_gone(holder))


class Heartbeat:
    """Call `refresh` every ROUND_HEARTBEAT_SECONDS while the work inside the `with` block runs.

    A thread rather than a progress callback, because model loading, sampling and checkpoint saving
    report no progress yet can take minutes. The thread dies with its process, so a killed worker's
    claim stops being refreshed and the sweeper can tell it is gone.
    """

    def __init__(self, refresh: Callable[[], object], *, name: str):
        self.refresh = refresh
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name=name, daemon=True)

    def _beat(self) -> None:
        try:
            while not self.stopped.wait(settings.ROUND_HEARTBEAT_SECONDS):
                self.refresh()
        finally:
            # The thread opened its own database connection; leaving it open would leak one per claim.
            connection.close()

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stopped.set()
        self.thread.join()
