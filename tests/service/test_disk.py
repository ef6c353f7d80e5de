"""Full disks: a submission answers 507 and leaves nothing, a job fails with a message, a full temporary folder
has its own message, and start-up removes the folders a cut-short submission left."""

from __future__ import annotations

import errno
import logging
import os
import tempfile

import pytest
from disk_full import WritesFail
from service.live import wait_for


def test_a_full_disk_at_submission_answers_507_and_keeps_nothing(serve, gate, small_disk, small_photo):
    holder, _ = gate
    server = serve(holder, jobs_dir=small_disk.path / "jobs")
    client = server.client()
    small_disk.fill(free=4096)  # smaller than the photo
    response = client.post("/v1/jobs", files=small_photo.form()[0], data=small_photo.form()[1])
    assert response.status_code == 507, response.text
    assert "disk is full" in response.json()["detail"] and str(small_disk.path) not in response.json()["detail"]
    assert list((small_disk.path / "jobs").iterdir()) == [], "nothing of the refused upload may stay"
    assert client.get("/v1/health").json()["queue_length"] == 0

    small_disk.empty()
    response = client.post("/v1/jobs", files=small_photo.form()[0], data=small_photo.form()[1])
    assert response.status_code == 202  # the place the failed submission held is free again


def test_a_full_disk_fails_the_running_job_with_a_message(serve, gate, small_disk, small_photo):
    holder, release = gate
    server = serve(holder, jobs_dir=small_disk.path / "jobs")
    client = server.client()
    job = client.post("/v1/jobs", files=small_photo.form()[0], data=small_photo.form()[1]).json()
    small_disk.fill(free=0)
    release.set()  # the job runs now, and cannot write its result
    failed = wait_for(client, job["id"])
    assert failed["state"] == "failed" and "disk is full" in failed["error"] and failed["files"] == []
    small_disk.empty()
    left = [path.name for path in (small_disk.path / "jobs" / job["id"]).iterdir()]
    assert left in ([], ["job.json"]), left  # no output, no half-written folder


def test_a_full_temporary_folder_has_its_own_message(serve, gate, small_disk, small_photo, monkeypatch):
    from starlette import formparsers

    holder, _ = gate
    server = serve(holder)
    client = server.client()
    if small_disk.mounted:  # uploads above 1 MB are spooled to the temporary folder
        monkeypatch.setattr(tempfile, "tempdir", str(small_disk.path))
        small_disk.fill(free=64 * 1024)
    else:
        class FullSpool(formparsers.SpooledTemporaryFile):
            def rollover(self):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(formparsers, "SpooledTemporaryFile", FullSpool)
    big = small_photo.data + bytes(1_500_000)  # a JPEG with trailing bytes: past the spool's memory
    response = client.post("/v1/jobs", files={"photo": ("big.jpg", big, "image/jpeg")}, data=small_photo.form()[1])
    assert response.status_code == 507, response.text
    assert "temporary folder" in response.json()["detail"] and "parsing" not in response.json()["detail"]
    assert not any(server.settings.jobs_dir.iterdir())
    monkeypatch.undo()
    small_disk.empty()
    assert client.post("/v1/jobs", files=small_photo.form()[0], data=small_photo.form()[1]).status_code == 202


def test_start_up_removes_orphaned_job_folders(serve, gate, tmp_path, caplog, small_photo):
    jobs_dir = tmp_path / "jobs"
    first = serve(gate[0], jobs_dir=jobs_dir)
    kept = first.client().post("/v1/jobs", files=small_photo.form()[0], data=small_photo.form()[1]).json()
    first.stop()
    orphan = jobs_dir / ("C" * 22)  # what a crash between the upload and the record leaves
    (orphan / "upload").mkdir(parents=True)
    (orphan / "upload" / "photo.jpg").write_bytes(small_photo.data)
    other = jobs_dir / "not-a-job"
    other.mkdir()
    with caplog.at_level(logging.WARNING, logger="uvidm_backend.service.jobs"):
        client = serve(gate[0], jobs_dir=jobs_dir).client()
        assert client.get("/v1/health").status_code == 200
    assert not orphan.exists() and other.exists()
    assert client.get(f"/v1/jobs/{kept['id']}").json()["state"] == "failed"  # interrupted, not orphaned
    assert any("orphaned job folder" in record.getMessage() and "1" in record.getMessage()
               for record in caplog.records), [record.getMessage() for record in caplog.records]


@pytest.mark.parametrize("errno_code", [errno.ENOSPC, errno.EDQUOT])
def test_write_bytes_names_a_full_disk(tmp_path, monkeypatch, errno_code):
    from uvidm_backend.pipeline import output_folder

    real_open = open
    monkeypatch.setattr(output_folder, "open",
                        lambda *args, **kwargs: WritesFail(real_open(*args, **kwargs), errno_code), raising=False)
    (tmp_path / "a.txt").write_text("old")
    with pytest.raises(output_folder.DiskFull, match="no space left"):
        output_folder.write_bytes(b"new", tmp_path / "a.txt")
    assert [path.name for path in tmp_path.iterdir()] == ["a.txt"] and (tmp_path / "a.txt").read_text() == "old"
