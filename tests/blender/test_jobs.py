"""A whole Generate without Blender: the worker against a real `uvidm serve` on loopback."""

import time

from blender.live import LONG_STEPS, SMALL_JOB, free_port

from uvidm_blender.client import Client, JobOptions
from uvidm_blender.jobs import GenerateJob


def _job(url, photo, tmp_path, landmarks=True, options=None, **kwargs):
    chosen = {**SMALL_JOB, **(options or {})}
    if landmarks:
        chosen["landmarks"] = tuple(map(tuple, photo.landmarks))
    return GenerateJob(Client(url), photo.path, JobOptions(**chosen), tmp_path / "results", poll_interval=0.05,
                       **kwargs)


def _backend_jobs(backend) -> list[dict]:
    """The backend's jobs, read from its jobs folder (one folder per job)."""
    folder = backend.workdir / "jobs"
    return [path for path in folder.iterdir() if path.is_dir()] if folder.is_dir() else []


def test_done_downloads_into_a_new_folder_named_after_photo_and_face(backend, photo, tmp_path):
    before = len(_backend_jobs(backend))
    first = _job(backend.url, photo, tmp_path, options={"face_index": 0}).run()
    assert first.state == "done" and first.final and first.progress == 1.0, first.message
    assert first.result_dir == tmp_path / "results" / "t1-face1"
    assert {"head.glb", "head.obj", "albedo.png", "preview.png", "result.json"} <= \
        {p.name for p in first.result_dir.iterdir()}
    second = _job(backend.url, photo, tmp_path, options={"face_index": 0}).run()
    assert second.result_dir == tmp_path / "results" / "t1-face1-2"  # never over an earlier head
    third = _job(backend.url, photo, tmp_path).run()  # points without a face number: the photo's name
    assert third.result_dir == tmp_path / "results" / "t1"
    assert not [p for p in (tmp_path / "results").iterdir() if p.name.startswith(".")]  # no partial left
    assert len(_backend_jobs(backend)) == before  # downloaded jobs are deleted on the backend


def test_events_report_progress_in_order(backend, photo, tmp_path):
    job = _job(backend.url, photo, tmp_path)
    job.run()
    events = []
    while not job.events.empty():
        events.append(job.events.get())
    states = [e.state for e in events]
    assert states[0] == "waiting" and "uploading" in states and "running" in states
    assert states[-2:] == ["downloading", "done"]
    progress = [e.progress for e in events]
    assert progress == sorted(progress)  # never goes backwards
    for event in events:  # the words say what the bar shows
        if "%" in event.message:
            assert event.message.endswith(f"({round(100 * event.progress)}%)"), event


def test_backend_failure_is_reported_in_blender_words(backend, photo, tmp_path):
    event = _job(backend.url, photo, tmp_path, landmarks=False).run()  # needs the detector, which is absent
    assert event.state == "failed"
    assert event.message.startswith("The backend could not make this head: ") and "buffalo_l" in event.message
    assert "--landmarks" not in event.message and "Download Model Files" in event.message
    assert not (tmp_path / "results").exists()


def test_backend_down(photo, tmp_path):
    event = _job(f"http://127.0.0.1:{free_port()}", photo, tmp_path).run()
    assert event.state == "failed" and event.message.startswith("No UV-IDM backend answers")


def test_waits_for_a_starting_backend(photo, tmp_path):
    """A backend that is not up yet (local start) is waited for, within `wait_for_backend`."""
    started = time.monotonic()
    event = _job(f"http://127.0.0.1:{free_port()}", photo, tmp_path, wait_for_backend=1.5).run()
    assert event.state == "failed" and time.monotonic() - started >= 1.5


def test_full_queue_is_waited_for(start_backend, photo, tmp_path):
    small = start_backend(options=("--queue-capacity", "1"))
    client = Client(small.url)
    blocker = JobOptions(landmarks=tuple(map(tuple, photo.landmarks)), steps=LONG_STEPS, texture_size=256)
    running = client.submit(photo.path, blocker)
    while client.job(running["id"])["state"] != "running":
        time.sleep(0.05)
    queued = client.submit(photo.path, blocker)
    job = _job(small.url, photo, tmp_path)
    thread = job.start()
    deadline = time.monotonic() + 30
    while "busy" not in job.drain().message:  # 429: told to wait, not failed
        assert time.monotonic() < deadline and thread.is_alive(), job.last
        time.sleep(0.05)
    client.cancel(queued["id"])
    client.cancel(running["id"])
    thread.join(120)
    assert job.drain().state == "done", job.last


def test_cancel_sends_delete(backend, photo, tmp_path):
    job = _job(backend.url, photo, tmp_path, options={"steps": LONG_STEPS})
    thread = job.start()
    deadline = time.monotonic() + 30
    while job.drain().state != "running":
        assert time.monotonic() < deadline and thread.is_alive(), job.last
        time.sleep(0.02)
    job.cancel()
    thread.join(30)
    assert not thread.is_alive() and job.drain().state == "cancelled"
    status, remote = backend.request("GET", f"/v1/jobs/{job.job_id}")
    assert status == 200 and remote["cancel_requested"] and remote["state"] in ("running", "cancelled")
    assert not (tmp_path / "results").exists()


def test_missing_photo(backend, photo, tmp_path):
    job = _job(backend.url, photo, tmp_path)
    job.photo = tmp_path / "nope.jpg"
    event = job.run()
    assert event.state == "failed" and "does not exist" in event.message and job.job_id is None


def test_run_never_raises(backend, photo, tmp_path):
    """A bug in the worker ends the job with a message instead of killing the thread silently."""
    job = _job(backend.url, photo, tmp_path)
    job._download = lambda _: (_ for _ in ()).throw(KeyError("boom"))
    assert job.run().message == "Unexpected error: 'boom'"
