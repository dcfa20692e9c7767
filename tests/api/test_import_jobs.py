"""Import jobs: hostile files refused in bounded memory, bad lines reported by file and line,
batches committed so that a killed import resumes without storing a pair twice, and imports
started by upload through the API and the Django admin."""

from __future__ import annotations

import gzip
import json
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from preference_app.api.imports import import_job_create, import_job_run, imports_directory
from preference_app.api.models import ImportedPair, ImportJob
from preference_app.core.models import Comparison, Judgment
from tests.api.conftest import client_for
from tests.api.test_import import MULTI, SINGLE, TRL_CONVERSATIONAL, write_jsonl
from tests.conftest import REPO_ROOT, child_environment, wait_for

MB = 1024 * 1024
# The most memory a whole import process may take, however hostile its file (issue 14).
MAX_RSS_BYTES = 200 * MB

# Runs the management command in a child process, as a shell user would, and reports the peak
# resident set size of the process at exit. VmHWM counts from the exec: getrusage's ru_maxrss of a
# child also counts the pytest process it was forked from (460 MB here, torch loaded).
COMMAND = """
import sys
import django
django.setup()
from django.core.management import call_command
try:
    call_command("import_preferences", *sys.argv[1:])
finally:
    with open("/proc/self/status") as status:
        print(next(line for line in status if line.startswith("VmHWM:")), flush=True)
"""


@dataclass(frozen=True)
class Run:
    returncode: int
    peak_rss_bytes: int
    output: str


def command_start(*arguments, log: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", COMMAND, *map(str, arguments)], cwd=REPO_ROOT, env={**child_environment(), **(env or {})},
        stdout=log.open("w"), stderr=subprocess.STDOUT,
    )


def command_run(*arguments, log: Path, env: dict | None = None) -> Run:
    """Run the command to its end, with its peak memory as the child reported it."""
    returncode = command_start(*arguments, log=log, env=env).wait(timeout=600)
    output = log.read_text()
    peak_kilobytes = re.search(r"^VmHWM:\s+(\d+) kB$", output, re.MULTILINE)
    assert peak_kilobytes, output
    return Run(returncode=returncode, peak_rss_bytes=int(peak_kilobytes[1]) * 1024, output=output)


def gzip_members(*parts: bytes, repeat: tuple[bytes, int] | None = None, tail: bytes = b"") -> bytes:
    """A multi-member gzip file (which every gzip reader reads as one stream): a large file is one
    compressed member written many times, so the test makes gigabytes in milliseconds."""
    data = b"".join(gzip.compress(part) for part in parts)
    if repeat:
        member = gzip.compress(repeat[0], compresslevel=9)
        data += member * repeat[1]
    return data + (gzip.compress(tail) if tail else b"")


def line_of(row: dict) -> bytes:
    return (json.dumps(row) + "\n").encode()


def test_infinity_a_lone_surrogate_and_deep_nesting_are_reported_by_file_and_line(db, tmp_path):
    path = write_jsonl(tmp_path / "hostile.jsonl", [
        TRL_CONVERSATIONAL,
        '{"prompt": "x", "chosen": " y", "rejected": " z", "margin": Infinity}',
        '{"prompt": "x", "chosen": " y", "rejected": " z", "margin": 1e999}',
        '{"prompt": "\\ud800", "chosen": " y", "rejected": " z"}',
        "[" * 100_000 + "]" * 100_000,
        {"prompt": "The sky is", "chosen": " blue.", "rejected": " green."},
    ])
    job = import_job_run(job_id=import_job_create(path=path, file_format="trl").pk)
    assert job.errors == [
        "hostile.jsonl:2: not valid JSON (Infinity is not part of JSON)",
        'hostile.jsonl:3: "margin" must be finite, not inf.',
        'hostile.jsonl:4: "prompt" contains a lone surrogate (U+D800), which is not text.',
        "hostile.jsonl:5: not valid JSON (nested too deeply)",
    ]
    assert (job.status, job.lines_read, job.pairs_stored, job.lines_skipped) == ("done", 6, 2, 4)
    assert sorted(ImportedPair.objects.values_list("line", flat=True)) == [1, 6]
    assert Comparison.objects.count() == Judgment.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_gzip_bomb_is_refused_before_anything_is_stored_in_bounded_memory(tmp_path):
    # One good line, then 1 GiB of zero bytes in a 1 MB file. The limit is lowered to 256 MiB
    # only to keep the test quick: the refusal works the same at the default 2 GiB.
    path = tmp_path / "bomb.jsonl.gz"
    path.write_bytes(gzip_members(line_of(SINGLE), repeat=(bytes(64 * MB), 16)))
    run = command_run(path, "--format", "hh", log=tmp_path / "bomb.log",
                      env={"IMPORT_MAX_DECOMPRESSED_BYTES": str(256 * MB)})
    job = ImportJob.objects.get()
    assert run.returncode == 1 and job.status == ImportJob.Status.FAILED, run.output
    assert "bomb.jsonl.gz decompresses to more than 268.4 MB" in job.error and "IMPORT_MAX_DECOMPRESSED_BYTES" in job.error
    assert not ImportedPair.objects.exists() and not Comparison.objects.exists()
    print(f"peak RSS {run.peak_rss_bytes / MB:.0f} MB")
    assert run.peak_rss_bytes < MAX_RSS_BYTES


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_2_gb_line_is_skipped_in_bounded_memory_and_the_other_lines_are_imported(tmp_path):
    # A 2 MB file: a good line, a line of 2,000,000,000 bytes, another good line.
    path = tmp_path / "long.jsonl.gz"
    path.write_bytes(gzip_members(line_of(SINGLE) + b'{"chosen": "', repeat=(b"a" * 16_000_000, 125),
                                  tail=b'", "rejected": "x"}\n' + line_of(MULTI)))
    run = command_run(path, "--format", "hh", log=tmp_path / "long.log")
    job = ImportJob.objects.get()
    assert run.returncode == 0 and job.status == ImportJob.Status.DONE, run.output
    assert job.errors == [
        "long.jsonl.gz:2: the line is longer than 4194304 bytes (IMPORT_MAX_LINE_BYTES), so it was skipped."
    ]
    assert sorted(ImportedPair.objects.values_list("line", flat=True)) == [1, 3]
    print(f"peak RSS {run.peak_rss_bytes / MB:.0f} MB")
    assert run.peak_rss_bytes < MAX_RSS_BYTES


PAIRS = 100_000


def numbered_pairs(count: int) -> bytes:
    lines = []
    for number in range(count):
        prompt = f"\n\nHuman: Question {number}: what comes after {number}?\n\nAssistant:"
        lines.append(json.dumps({"chosen": f"{prompt} {number + 1}.", "rejected": f"{prompt} Not {number + 1}."}))
    return gzip.compress(("\n".join(lines) + "\n").encode(), compresslevel=1)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_100k_pair_import_killed_midway_resumes_to_exactly_100k_pairs(tmp_path):
    path = tmp_path / "pairs.jsonl.gz"
    path.write_bytes(numbered_pairs(PAIRS))
    started = time.monotonic()
    process = command_start(path, "--format", "hh", log=tmp_path / "first.log")
    job = wait_for(lambda: ImportJob.objects.filter(pairs_stored__gte=PAIRS * 2 // 5).first(), timeout=600,
                   interval=0.1, message="the import to pass 40% (log: first.log)")
    process.send_signal(signal.SIGKILL)
    process.wait()
    job.refresh_from_db()
    # Killed mid-run: the job shows its committed batches, and exactly their pairs are stored.
    assert job.status == ImportJob.Status.RUNNING and PAIRS * 2 // 5 <= job.pairs_stored < PAIRS
    assert job.pairs_stored == job.lines_read == ImportedPair.objects.count() == Judgment.objects.count()

    # The same command again finds the unfinished job and continues from its last committed batch.
    run = command_run(path, "--format", "hh", log=tmp_path / "second.log")
    assert run.returncode == 0, run.output
    assert f"Resuming import job {job.pk} after line {job.lines_read}." in run.output
    job.refresh_from_db()
    assert (job.status, job.lines_read, job.pairs_stored, job.duplicates_skipped, job.lines_skipped) == (
        "done", PAIRS, PAIRS, 0, 0
    )
    assert ImportedPair.objects.count() == Comparison.objects.count() == Judgment.objects.count() == PAIRS
    assert sorted(ImportedPair.objects.values_list("line", flat=True)) == list(range(1, PAIRS + 1))
    print(f"100k pairs imported in {time.monotonic() - started:.0f} s, kill and resume included")


@pytest.mark.django_db(transaction=True)
def test_two_runs_of_one_job_at_once_store_each_pair_once(tmp_path):
    path = tmp_path / "pairs.jsonl.gz"
    path.write_bytes(numbered_pairs(3000))
    job = import_job_create(path=path, file_format="hh")
    runs = [command_start("--resume", job.pk, log=tmp_path / f"run{number}.log") for number in range(2)]
    codes = [run.wait(timeout=300) for run in runs]
    job.refresh_from_db()
    # One run commits each batch; a run that finds the offset moved past its batch stops.
    assert 0 in codes and job.status == ImportJob.Status.DONE
    assert job.pairs_stored == ImportedPair.objects.count() == Comparison.objects.count() == 3000
    assert job.duplicates_skipped == 0  # No batch was stored, or counted, by both runs.
    assert import_job_run(job_id=job.pk).pairs_stored == 3000  # A third run of a done job does nothing.


def test_a_resumed_job_continues_from_its_committed_offset(db, tmp_path):
    path = write_jsonl(tmp_path / "hh.jsonl", [SINGLE, "{", MULTI])
    job = import_job_create(path=path, file_format="hh")
    first_line = len(json.dumps(SINGLE)) + 1
    # As a run killed after committing its first line would have left the job.
    ImportJob.objects.filter(pk=job.pk).update(status="running", byte_offset=first_line, lines_read=1)
    job = import_job_run(job_id=job.pk)
    assert (job.status, job.lines_read, job.pairs_stored, job.lines_skipped) == ("done", 3, 1, 1)
    assert job.errors == ["hh.jsonl:2: not valid JSON (Expecting property name enclosed in double quotes)"]
    assert list(ImportedPair.objects.values_list("line", flat=True)) == [3]


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_researcher_uploads_a_file_and_a_worker_imports_it(celery_worker, researcher):
    client = client_for(researcher)
    upload = SimpleUploadedFile("pairs.jsonl.gz", gzip.compress(line_of(SINGLE) + b"{\n" + line_of(MULTI)))
    created = client.post("/api/import-jobs/", {"file": upload, "file_format": "hh"}, format="multipart")
    assert created.status_code == 202 and created.data["status"] == "pending", created.data
    assert "source_path" not in created.data

    def finished():
        data = client.get(f"/api/import-jobs/{created.data['id']}/").data
        return data if data["status"] in ("done", "failed") else None

    job = wait_for(finished, timeout=60, message="the import job to finish")
    assert (job["status"], job["pairs_stored"], job["lines_read"]) == ("done", 2, 3)
    assert job["errors"] == ["pairs.jsonl.gz:2: not valid JSON (Expecting property name enclosed in double quotes)"]
    # The app's copy of the upload is removed once the import is done.
    assert not (imports_directory() / created.data["id"]).exists()


def test_an_upload_over_the_size_limit_is_refused_and_nothing_is_kept(researcher, settings, tmp_path):
    settings.VAR_DIR, settings.IMPORT_MAX_BYTES = tmp_path, 100
    upload = SimpleUploadedFile("big.jsonl", line_of(SINGLE) * 3)
    response = client_for(researcher).post("/api/import-jobs/", {"file": upload, "file_format": "hh"},
                                           format="multipart")
    assert response.status_code == 400 and "(IMPORT_MAX_BYTES)" in response.data["detail"]
    assert not ImportJob.objects.exists() and not list(tmp_path.glob("imports/*"))


def test_an_admin_uploads_an_import_in_the_django_admin_and_resumes_it(client, admin_user, settings, tmp_path,
                                                                        django_capture_on_commit_callbacks):
    settings.VAR_DIR = tmp_path
    client.force_login(admin_user)
    assert client.get("/admin/api/importjob/add/").status_code == 200
    upload = SimpleUploadedFile("pairs.jsonl", line_of(SINGLE))
    with django_capture_on_commit_callbacks() as queued:
        response = client.post("/admin/api/importjob/add/", {"upload": upload, "file_format": "hh", "strength": 3})
    assert response.status_code == 302, response.content.decode()[-2000:]
    job = ImportJob.objects.get()
    assert (job.file_name, job.requested_by, job.uploaded, job.strength, len(queued)) == ("pairs.jsonl", admin_user,
                                                                                          True, 3, 1)
    with django_capture_on_commit_callbacks() as queued:
        client.post("/admin/api/importjob/", {"action": "resume", "_selected_action": [job.pk]})
    assert len(queued) == 1
    job = import_job_run(job_id=job.pk)
    assert (job.status, job.pairs_stored, Judgment.objects.get().strength) == ("done", 1, 3)
    assert client.get(f"/admin/api/importjob/{job.pk}/change/").status_code == 200
