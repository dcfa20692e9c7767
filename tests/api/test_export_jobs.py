"""Export jobs: a Celery worker writes the files; only the requester downloads them."""

from __future__ import annotations

import io
import json

import pyarrow.parquet as pq
import pytest
from django.core.management import call_command

from preference_app.api.export import ExportQuery
from preference_app.api.models import ExportJob
from preference_app.api.services import export_job_run
from tests.api.conftest import client_for, judge, make_comparison
from tests.conftest import wait_for


def judged_pairs(annotator, count=3):
    for number in range(count):
        judge(make_comparison(texts=(f"good {number}", f"bad {number}")), annotator, "a", 2)


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_worker_writes_the_export_and_the_requester_downloads_it(celery_worker, researcher, annotators):
    judged_pairs(annotators[0])
    client = client_for(researcher)
    created = client.post(
        "/api/export-jobs/", {"dataset": "trl_conversational", "file_format": "parquet", "margin": True}, format="json"
    )
    assert created.status_code == 202 and created.data["status"] == "pending" and created.data["data_url"] is None

    def finished():
        job = ExportJob.objects.get(pk=created.data["id"])
        return job if job.status in (ExportJob.Status.DONE, ExportJob.Status.FAILED) else None

    job = wait_for(finished, timeout=60, message="the export job to finish")
    assert job.status == ExportJob.Status.DONE, job.error
    detail = client.get(f"/api/export-jobs/{job.pk}/").data
    assert detail["rows"] == 3
    data = client.get(detail["data_url"])
    table = pq.read_table(io.BytesIO(b"".join(data.streaming_content)))
    assert table.num_rows == 3 and table.column("margin").to_pylist() == [2.0, 2.0, 2.0]
    card = b"".join(client.get(detail["card_url"]).streaming_content).decode()
    assert "Rows in `trl_conversational.parquet`: 3" in card


def test_a_job_runs_once_however_often_its_message_arrives(researcher, annotators, settings, tmp_path):
    settings.VAR_DIR = tmp_path
    judged_pairs(annotators[0], count=2)
    job = ExportJob.objects.create(requested_by=researcher, options=ExportQuery(dataset="hh").to_json(),
                                   data_file_name="hh.jsonl")
    first = export_job_run(job_id=job.pk)
    (tmp_path / "exports" / str(job.pk) / "hh.jsonl").write_text("")
    second = export_job_run(job_id=job.pk)
    assert first.status == second.status == ExportJob.Status.DONE and first.rows == 2
    # The second delivery did not rewrite the file.
    assert (tmp_path / "exports" / str(job.pk) / "hh.jsonl").read_text() == ""


def test_a_failed_job_records_its_error_and_leaves_no_files(researcher, settings, tmp_path):
    settings.VAR_DIR = tmp_path
    job = ExportJob.objects.create(requested_by=researcher, options={"dataset": "no-such-format"})
    with pytest.raises(KeyError):
        export_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == ExportJob.Status.FAILED and "no-such-format" in job.error
    assert not (tmp_path / "exports" / str(job.pk)).exists()


def test_downloads_of_an_unfinished_job_are_refused(clients, researcher):
    job = ExportJob.objects.create(requested_by=researcher, options=ExportQuery().to_json())
    assert clients["researcher"].get(f"/api/export-jobs/{job.pk}/data/").status_code == 400


def test_the_export_command_writes_data_and_card(annotators, tmp_path, capsys):
    judged_pairs(annotators[0])
    call_command("export_preferences", str(tmp_path), "--dataset", "hh", "--min-strength", "2")
    assert "3 rows written" in capsys.readouterr().out
    rows = [json.loads(line) for line in (tmp_path / "hh.jsonl").read_text().splitlines()]
    assert rows[0]["chosen"] == "\n\nHuman: Hello?\n\nAssistant: good 0"
    card = (tmp_path / "README.md").read_text()
    assert "`min_strength`: 2" in card and "path: hh.jsonl" in card
    assert not list(tmp_path.glob(".*partial"))

    from datasets import load_dataset

    assert load_dataset(str(tmp_path), split="train", cache_dir=str(tmp_path / "cache")).num_rows == 3


def test_the_export_command_refuses_bad_options(db, tmp_path):
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="min_strength"):
        call_command("export_preferences", str(tmp_path), "--min-strength", "7")
    assert not list(tmp_path.iterdir())
