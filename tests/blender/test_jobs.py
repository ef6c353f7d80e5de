"""A whole Generate without Blender: the worker against the stand-in backend."""

import socket
import time

from uvidm_blender.client import Client, JobOptions
from uvidm_blender.jobs import GenerateJob


def _job(backend_url, photo, tmp_path, **kwargs):
    return GenerateJob(Client(backend_url), photo, JobOptions(steps=3), tmp_path / "results", poll_interval=0.01,
                       **kwargs)


def test_done_downloads_into_a_new_folder(fake_backend, photo, tmp_path):
    first = _job(fake_backend.url, photo, tmp_path).run()
    assert first.state == "done" and first.final and first.progress == 1.0
    assert first.result_dir == tmp_path / "results" / "portrait"
    assert sorted(p.name for p in first.result_dir.iterdir()) == sorted(p.name for p in
                                                                        fake_backend.result_dir.iterdir())
    second = _job(fake_backend.url, photo, tmp_path).run()
    assert second.result_dir == tmp_path / "results" / "portrait-2"  # never over an earlier head
    assert not [p for p in (tmp_path / "results").iterdir() if p.name.startswith(".")]  # no partial left
    assert len(fake_backend.deleted) == 2 and not fake_backend.jobs  # downloaded jobs are deleted there


def test_events_report_progress_in_order(fake_backend, photo, tmp_path):
    fake_backend.polls_until_done = 4
    job = _job(fake_backend.url, photo, tmp_path)
    job.run()
    events = []
    while not job.events.empty():
        events.append(job.events.get())
    states = [e.state for e in events]
    assert states[0] == "waiting" and "uploading" in states and "running" in states
    assert states[-2:] == ["downloading", "done"]
    progress = [e.progress for e in events]
    assert progress == sorted(progress)  # never goes backwards


def test_backend_failure_is_reported(fake_backend, photo, tmp_path):
    fake_backend.fail_with = "no face found in the photo; pass five landmarks"
    event = _job(fake_backend.url, photo, tmp_path).run()
    assert event.state == "failed"
    assert event.message == "The backend could not make this head: no face found in the photo; pass five landmarks"
    assert not (tmp_path / "results").exists()


def test_backend_down(photo, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    event = _job(f"http://127.0.0.1:{port}", photo, tmp_path).run()
    assert event.state == "failed" and event.message.startswith("No UV-IDM backend answers")


def test_waits_for_a_starting_backend(photo, tmp_path):
    """A backend that is not up yet (local start) is waited for, within `wait_for_backend`."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    event = _job(f"http://127.0.0.1:{port}", photo, tmp_path, wait_for_backend=1.5).run()
    assert event.state == "failed" and time.monotonic() - started >= 1.5


def test_full_queue_is_retried(fake_backend, photo, tmp_path):
    fake_backend.queue_full = 2
    event = _job(fake_backend.url, photo, tmp_path).run()
    assert event.state == "done" and len(fake_backend.submissions) == 1


def test_cancel_sends_delete(fake_backend, photo, tmp_path):
    fake_backend.hang = True
    job = _job(fake_backend.url, photo, tmp_path)
    thread = job.start()
    deadline = time.monotonic() + 10
    while not fake_backend.jobs and time.monotonic() < deadline:
        time.sleep(0.01)
    job.cancel()
    thread.join(10)
    assert not thread.is_alive()
    assert job.drain().state == "cancelled"
    assert fake_backend.deleted == list(fake_backend.jobs)
    assert not (tmp_path / "results").exists()


def test_missing_photo(fake_backend, tmp_path):
    event = _job(fake_backend.url, tmp_path / "nope.jpg", tmp_path).run()
    assert event.state == "failed" and "does not exist" in event.message
    assert fake_backend.requests == []


def test_run_never_raises(fake_backend, photo, tmp_path):
    """A bug in the worker ends the job with a message instead of killing the thread silently."""
    job = _job(fake_backend.url, photo, tmp_path)
    job._download = lambda _: (_ for _ in ()).throw(KeyError("boom"))
    assert job.run().message == "Unexpected error: 'boom'"
