"""Export throughput and memory: 100,000 judgments as JSONL and Parquet, at 10k and 100k rows.

    .venv/bin/python bench/export.py [--judgments 100000] [--datasets raw,trl_conversational]

Seeds its own database once (bulk_create; var/bench-export/ unless DATABASE_URL or VAR_DIR say
otherwise): comparisons with two judgments each, the first tenth in round 1 and the rest in
round 2, so `round=1` selects a tenth of the rows and no filter selects all of them. Pair formats
have fewer rows than judgments: two judgments make one pair, and split votes make no pair. Each export
then runs in a fresh child process that streams `export_chunks` (what GET /api/export/ sends) to
/dev/null and reports rows/s and its peak RSS (sampled per chunk) above the RSS it had before
exporting; a second child
repeats it under tracemalloc for the peak of Python allocations. Flat memory means the 100k figures
match the 10k ones.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("VAR_DIR", str(REPO_ROOT / "var" / "bench-export"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "preference_app.settings")

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import transaction  # noqa: E402

from preference_app.api.export import ExportQuery, RowCounter, export_chunks, export_rows  # noqa: E402
from preference_app.api.filters import PreferenceFilters  # noqa: E402
from preference_app.core.models import (  # noqa: E402
    Candidate,
    Comparison,
    Conversation,
    Judgment,
    TrainingRound,
    Turn,
)

BATCH = 5000
ANNOTATORS = 20


def seed(judgments: int) -> None:
    """Two judgments per comparison from distinct annotators; about one in five disagrees."""
    if Judgment.objects.count() == judgments:
        return
    if Judgment.objects.exists():
        raise SystemExit(f"The bench database in {os.environ['VAR_DIR']} holds another size; delete it first.")
    started = time.perf_counter()
    users = [
        get_user_model().objects.get_or_create(username=f"bench-{number}")[0] for number in range(ANNOTATORS)
    ]
    rounds = [TrainingRound.objects.get_or_create(number=number)[0] for number in (1, 2)]
    comparisons = judgments // 2
    for start in range(0, comparisons, BATCH):
        size = min(BATCH, comparisons - start)
        with transaction.atomic():
            conversations = Conversation.objects.bulk_create(
                [Conversation(source=Conversation.Source.PROMPT) for _ in range(size)], batch_size=BATCH
            )
            Turn.objects.bulk_create(
                [
                    Turn(conversation=conversation, index=0, role="user",
                         text=f"Prompt {start + offset}: explain something useful in a paragraph or two.")
                    for offset, conversation in enumerate(conversations)
                ],
                batch_size=BATCH,
            )
            candidates = Candidate.objects.bulk_create(
                [
                    Candidate(conversation=conversation, context_length=1, text=f"Reply {side} " + "lorem ipsum " * 40)
                    for conversation in conversations
                    for side in ("A", "B")
                ],
                batch_size=BATCH,
            )
            made = Comparison.objects.bulk_create(
                [
                    Comparison(
                        conversation=conversation, context_length=1, candidate_a=candidates[2 * offset],
                        candidate_b=candidates[2 * offset + 1],
                        training_round=rounds[0] if start + offset < comparisons // 10 else rounds[1],
                    )
                    for offset, conversation in enumerate(conversations)
                ],
                batch_size=BATCH,
            )
            Judgment.objects.bulk_create(
                [
                    Judgment(
                        comparison=comparison, annotator=users[(number + second) % ANNOTATORS],
                        choice="b" if second and number % 5 == 0 else "a", strength=1 + (number + second) % 4,
                        left_candidate="a", seconds_spent=10.0,
                    )
                    for number, comparison in enumerate(made, start=start)
                    for second in (0, 1)
                ],
                batch_size=BATCH,
            )
    print(f"seeded {judgments} judgments in {time.perf_counter() - started:.1f} s")


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("No VmRSS in /proc/self/status.")


def child(dataset: str, file_format: str, round_number: int | None, trace: bool) -> None:
    import tracemalloc

    query = ExportQuery(dataset=dataset, file_format=file_format, filters=PreferenceFilters(round_number=round_number))
    # Import and warm the format code paths so their one-off allocations are not counted as export memory.
    for _ in export_chunks(ExportQuery(dataset=dataset, file_format=file_format,
                                       filters=PreferenceFilters(round_number=999))):
        pass
    before = rss_kib()
    if trace:
        tracemalloc.start()
    started = time.perf_counter()
    written = 0
    peak = before
    counter = RowCounter(export_rows(query))
    with open(os.devnull, "wb") as sink:
        for chunk in export_chunks(query, iter(counter)):
            sink.write(chunk)
            written += len(chunk)
            # Sampled once per chunk (1,000 rows): the process's lifetime peak (ru_maxrss) would
            # include start-up spikes that are not the export's.
            peak = max(peak, rss_kib())
    seconds = time.perf_counter() - started
    result = {"rows": counter.count, "seconds": seconds, "bytes": written, "rss_before_kib": before, "rss_peak_kib": peak}
    if trace:
        result["traced_peak_bytes"] = tracemalloc.get_traced_memory()[1]
    print(json.dumps(result))


def run_child(*args: str) -> dict:
    output = subprocess.run([sys.executable, __file__, "--child", *args], check=True, capture_output=True, text=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--judgments", type=int, default=100_000)
    parser.add_argument("--datasets", default="raw,trl_conversational")
    parser.add_argument("--file-formats", default="jsonl,parquet")
    parser.add_argument("--child", nargs=4, metavar=("DATASET", "FILE_FORMAT", "ROUND", "TRACE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        dataset, file_format, round_number, trace = args.child
        child(dataset, file_format, int(round_number) or None, trace == "1")
        return

    call_command("migrate", verbosity=0)
    seed(args.judgments)
    total = Judgment.objects.count()
    print(f"database={django.db.connection.vendor} judgments={total} comparisons={Comparison.objects.count()} "
          f"cpus={os.cpu_count()}")
    print(f"{'dataset':<20}{'file':<9}{'selection':<11}{'rows':>8}{'rows/s':>10}{'MB out':>9}"
          f"{'RSS before':>12}{'RSS peak':>10}{'growth':>9}{'py peak':>9}")
    for dataset in args.datasets.split(","):
        for file_format in args.file_formats.split(","):
            for label, round_number in (("round 1", 1), ("all", 0)):
                timed = run_child(dataset, file_format, str(round_number), "0")
                traced = run_child(dataset, file_format, str(round_number), "1")
                growth = timed["rss_peak_kib"] - timed["rss_before_kib"]
                rows = timed["rows"]
                print(f"{dataset:<20}{file_format:<9}{label:<11}{rows:>8}{rows / timed['seconds']:>10.0f}"
                      f"{timed['bytes'] / 1e6:>9.2f}{timed['rss_before_kib'] / 1024:>10.0f}MB"
                      f"{timed['rss_peak_kib'] / 1024:>8.0f}MB{growth / 1024:>7.0f}MB"
                      f"{traced['traced_peak_bytes'] / 1e6:>7.1f}MB")


if __name__ == "__main__":
    main()
