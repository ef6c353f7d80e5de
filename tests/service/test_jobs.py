"""The job store on its own: records on disk, recovery after a crash, expiry, the queue's bounds."""

from __future__ import annotations

import json
import time

import pytest

from uvidm_backend.service.jobs import RECORD, JobStore, QueueFull, safe_file_name, valid_job_id, write_json_atomic


def _store(root, capacity: int = 4, keep_hours: float = 24.0) -> JobStore:
    store = JobStore(root, capacity, keep_hours)
    store.recover()
    return store


def test_records_are_written_atomically_and_read_back(tmp_path):
    store = _store(tmp_path)
    job = store.create(b"jpeg bytes", "../../My Photo (1).JPG", "jpg", {"steps": 2})
    folder = tmp_path / job["id"]
    assert valid_job_id(job["id"]) and job["photo"] == "My_Photo__1_.JPG"
    assert [path.name for path in (folder / "upload").iterdir()] == ["My_Photo__1_.jpg"]
    record = json.loads((folder / RECORD).read_text())
    assert record["state"] == "queued" and record["options"] == {"steps": 2}
    assert sorted(path.name for path in folder.iterdir()) == [RECORD, "upload"]  # no temporary files left

    taken = store.take(timeout=0)
    assert taken[0] == job["id"] and taken[1].read_bytes() == b"jpeg bytes"
    assert json.loads((folder / RECORD).read_text())["state"] == "running"
    (folder / "output").mkdir()
    (folder / "output" / "head.glb").write_bytes(b"glTF")
    (folder / "output" / "notes.txt").write_text("not an output file")
    store.finish(job["id"], "done")
    done = store.get(job["id"])
    assert done["state"] == "done" and done["files"] == ["head.glb"] and done["progress"] == 1.0
    assert not (folder / "upload").exists()

    again = _store(tmp_path)
    assert again.get(job["id"]) == done
    assert again.output_file(job["id"], "head.glb") == folder / "output" / "head.glb"
    for name in ("notes.txt", "../job.json", "job.json", "head.obj", ""):
        assert again.output_file(job["id"], name) is None


def test_recovery_fails_unfinished_jobs_and_leaves_other_folders_alone(tmp_path):
    store = _store(tmp_path)
    queued = store.create(b"a", "a.jpg", "jpg", {})["id"]
    running = store.create(b"b", "b.jpg", "jpg", {})["id"]
    store.take(timeout=0)  # `queued` is running now
    queued, running = running, queued
    partial = tmp_path / running / ".output.partial-1234"
    partial.mkdir()
    (tmp_path / "not-a-job").mkdir()
    (tmp_path / "not-a-job" / RECORD).write_text("{}")
    broken = tmp_path / ("B" * 22)
    broken.mkdir()
    (broken / RECORD).write_text("{not json")
    (tmp_path / "stray.txt").write_text("keep me")

    # The process dies here: a new store reads the folder.
    again = JobStore(tmp_path, 4)
    assert again.recover() == 2
    for job_id, was in ((queued, "queued"), (running, "running")):
        job = again.get(job_id)
        assert job["state"] == "failed" and f"(it was {was})" in job["error"] and job["finished"]
        assert [path.name for path in (tmp_path / job_id).iterdir()] == [RECORD]
        assert json.loads((tmp_path / job_id / RECORD).read_text())["state"] == "failed"
    assert again.queue_length() == 0 and again.take(timeout=0) is None
    assert again.get("B" * 22) is None and (broken / RECORD).read_text() == "{not json"
    assert (tmp_path / "not-a-job" / RECORD).exists() and (tmp_path / "stray.txt").exists()


def test_queue_capacity_cancel_and_positions(tmp_path):
    store = _store(tmp_path, capacity=3)
    ids = [store.create(b"x", "x.jpg", "jpg", {})["id"] for _ in range(3)]
    with pytest.raises(QueueFull) as full:
        store.create(b"x", "x.jpg", "jpg", {})
    assert full.value.retry_after >= 1 and len(list(tmp_path.iterdir())) == 3
    assert [store.get(job_id)["queue_position"] for job_id in ids] == [0, 1, 2]
    assert store.cancel(ids[1])[0] == "cancelled"
    assert [store.get(job_id)["queue_position"] for job_id in ids] == [0, None, 1]
    assert store.cancel(ids[1])[0] == "finished"
    assert store.take(timeout=0)[0] == ids[0]
    outcome, job = store.cancel(ids[0])
    assert outcome == "cancelling" and job["cancel_requested"] and store.progress(ids[0], "diffusion", 0.5)
    assert store.cancel("../" + ids[0]) == ("unknown", None)
    assert not store.delete(ids[0])  # running: cancel first
    store.finish(ids[0], "cancelled")
    assert store.delete(ids[0]) and not (tmp_path / ids[0]).exists()


def test_expiry_deletes_only_old_finished_jobs(tmp_path):
    store = _store(tmp_path, keep_hours=1.0)
    old, new, waiting = (store.create(b"x", "x.jpg", "jpg", {})["id"] for _ in range(3))
    for job_id in (old, new):
        store.cancel(job_id)
    now = time.time()
    assert store.expire(now + 1800) == []
    store._jobs[old].finished = now - 4000
    assert store.expire(now) == [old]
    assert not (tmp_path / old).exists() and (tmp_path / new).exists()
    assert sorted(store.expire(now + 10 * 3600)) == [new]
    assert store.get(waiting)["state"] == "queued" and (tmp_path / waiting).exists()


def test_helpers(tmp_path):
    for name, safe in [("photo.jpg", "photo.jpg"), ("C:\\Users\\me\\face.png", "face.png"), ("../..", "photo"),
                       (".hidden.jpg", "hidden.jpg"), ("", "photo"), (None, "photo"), ("ünï cødé.jpg", "_n__c_d_.jpg")]:
        assert safe_file_name(name) == safe
    for job_id, valid in [("A" * 22, True), ("a-b_c" * 4, True), ("..", False), ("A" * 15, False),
                          ("A" * 21 + "/", False), ("A" * 21 + ".", False), ("A" * 65, False)]:
        assert valid_job_id(job_id) is valid
    target = tmp_path / "record.json"
    write_json_atomic(target, {"a": 1})
    write_json_atomic(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2} and [path.name for path in tmp_path.iterdir()] == [target.name]
