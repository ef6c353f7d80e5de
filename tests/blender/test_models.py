"""Download Model Files (issue 14, item 7): the plan with sizes and licences, the checkbox, the download's
progress and Cancel, and the set-up steps' state.

The backend's endpoints (GET /v1/models/plan, POST/DELETE /v1/models/download, health's models.download)
are being built on main; until they land, the download itself runs against `SpecBackend`, a loopback
server answering as docs/API.md specifies them. What the real `uvidm serve` of this branch answers
(no such endpoint) is tested against it.
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

bpy = pytest.importorskip("bpy")

from blender.layout import RecordingLayout, _calls, _draw, _labels  # noqa: E402  (needs bpy)

PLAN = {"repository": "luh0502/UV-IDM", "revision": "main", "total_bytes": 3_500_000_000,
        "files": [{"name": "ldm.ckpt", "size": 3_300_000_000}, {"name": "epoch_20.pth", "size": 200_000_000}],
        "licences": "The Basel Face Model is for non-commercial research only.\nUV-IDM's files carry no stated "
                    "licence.\ninsightface's models are for non-commercial research."}


class SpecBackend:
    """Health and the model-download endpoints as docs/API.md specifies them; the download advances one
    step per health request and can be cancelled."""

    def __init__(self, steps: int = 4):
        self.steps, self.done_steps, self.state = steps, 0, "missing"
        self.download: dict | None = None
        self.posts: list[dict] = []
        self.deletes = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _health(self) -> dict:
        if self.download is not None and self.download["state"] == "running":
            self.done_steps += 1
            self.download["done_bytes"] = PLAN["total_bytes"] * self.done_steps // self.steps
            if self.done_steps >= self.steps:
                self.download["state"], self.state = "done", "ready"
        return {"version": "spec", "device": "cpu", "device_warning": None, "queue_length": 0, "queue_capacity": 16,
                "token_required": False, "models": {"state": self.state, "error": None, "loaded": [],
                                                    "missing": [] if self.state == "ready" else ["ldm.ckpt"],
                                                    "download": self.download}}

    def _handler(self):
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, body=None):
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path == "/v1/health":
                    return self._send(200, backend._health())
                if self.path == "/v1/models/plan?revision=main":
                    return self._send(200, PLAN)
                self._send(404, {"detail": "Not Found"})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                backend.posts.append(body)
                if body.get("accept_licences") is not True:
                    return self._send(422, {"detail": "accept the licences first"})
                if backend.download is not None and backend.download["state"] == "running":
                    return self._send(409, {"detail": "a download is already running"})
                backend.state, backend.done_steps = "downloading", 0
                backend.download = {"file": "ldm.ckpt", "done_bytes": 0, "total_bytes": PLAN["total_bytes"],
                                    "state": "running", "error": None}
                self._send(202, backend.download)

            def do_DELETE(self):
                backend.deletes += 1
                if backend.download is not None:
                    backend.download["state"], backend.state = "cancelled", "missing"
                self._send(202, backend.download)

        return Handler

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def spec_backend():
    backend = SpecBackend()
    yield backend
    backend.stop()


def _module(addon, name):
    return sys.modules[f"{addon}.uvidm_blender.{name}"]


def _remote(addon, url):
    prefs = bpy.context.preferences.addons[addon].preferences
    prefs.backend_mode, prefs.remote_url = "REMOTE", url
    return prefs


def test_the_plan_shows_sizes_licences_and_a_checkbox(scene, addon, spec_backend):
    prefs = _remote(addon, spec_backend.url)
    assert bpy.ops.uvidm.plan_models() == {"FINISHED"}
    assert not bpy.ops.uvidm.download_models.poll()  # not before the licences are accepted
    log: list = []
    _module(addon, "preferences").draw_preferences(prefs, bpy.context, RecordingLayout(log))
    labels = " | ".join(_labels(log))
    assert "2 files from luh0502/UV-IDM (main), 3.5 GB in all:" in labels
    assert "ldm.ckpt: 3.3 GB" in labels and "epoch_20.pth: 200.0 MB" in labels
    for paragraph in PLAN["licences"].splitlines():  # the licence text, every word of it (wrapped)
        assert paragraph in " ".join(_labels(log))
    assert ("prop", "accept_licences") in log
    bpy.context.window_manager.uvidm.accept_licences = True
    assert bpy.ops.uvidm.download_models.poll()


def test_download_follows_the_progress_until_the_models_are_ready(scene, addon, spec_backend):
    _remote(addon, spec_backend.url)
    bpy.ops.uvidm.plan_models()
    bpy.context.window_manager.uvidm.accept_licences = True
    assert bpy.ops.uvidm.download_models() == {"FINISHED"}
    assert spec_backend.posts == [{"accept_licences": True, "revision": "main", "full_head": False}]
    runtime = _module(addon, "runtime")
    download = runtime.STATE.model_download
    assert download.done and download.progress == 1.0 and download.error is None
    assert runtime.STATE.model_plan is None and runtime.STATE.health["models"]["state"] == "ready"
    assert _module(addon, "preferences").models_ready(bpy.context.preferences.addons[addon].preferences)


def test_cancel_stops_the_download(scene, addon, spec_backend):
    spec_backend.steps = 1000
    downloads, client = _module(addon, "downloads"), _module(addon, "client")
    download = downloads.ModelDownload(client.Client(spec_backend.url), poll_interval=0.01)
    download.start()
    deadline = time.monotonic() + 20
    while "Downloading ldm.ckpt" not in download.message:
        assert time.monotonic() < deadline, download.message
        time.sleep(0.01)
    assert 0.0 < download.progress < 1.0 and "of 3.5 GB" in download.message
    download.cancel()
    download.join(20)
    assert download.done and spec_backend.deletes == 1 and "cancelled" in download.error


def test_a_backend_without_the_download_says_so(scene, addon, backend):
    _remote(addon, backend.url)  # this branch's real `uvidm serve`
    with pytest.raises(RuntimeError, match="cannot download model files"):
        bpy.ops.uvidm.plan_models()


def test_missing_models_are_said_in_the_panel(scene, addon, spec_backend):
    _remote(addon, spec_backend.url)
    assert bpy.ops.uvidm.check_backend() == {"FINISHED"}  # 'missing' is a warning, not an error
    assert "model file missing; click Download Model Files" in _module(addon, "runtime").STATE.backend_text
    log = _draw(bpy.types.VIEW3D_PT_uvidm)
    assert "Set-up: the model files are missing (ldm.ckpt): download them in the preferences." in \
        " ".join(_labels(log))
    assert _calls(log, "preferences.addon_show")


def test_download_button_against_a_real_serve_and_the_hub_stand_in(scene, addon, start_backend, photo, tmp_path):
    """The whole first run: `uvidm serve` without model files, Download Model Files from the hub stand-in
    (tests/hub_standin.py, HF_ENDPOINT), then a Generate. Skipped while this branch's serve lacks the endpoint."""
    from hub_standin import HubStandIn, release_files

    from uvidm_backend.devtools.model_folder import write_official_release
    from uvidm_backend.registry import HUB_REPOSITORY

    release = write_official_release(tmp_path / "release", seed=3)
    with HubStandIn(HUB_REPOSITORY, release_files(release)) as hub:
        env = {**hub.env(), "HF_HUB_CACHE": str(tmp_path / "hub-cache"), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
        try:
            live = start_backend(models=tmp_path / "models", wait_for="any", env=env)
        except RuntimeError as error:
            pytest.skip(f"this serve does not start without model files yet: {str(error)[:200]}")
        prefs = bpy.context.preferences.addons[addon].preferences
        prefs.port, prefs.results_folder = live.port, str(tmp_path / "results")
        try:
            bpy.ops.uvidm.plan_models()
        except RuntimeError as error:
            if "cannot download model files" in str(error):
                pytest.skip("this serve has no /v1/models/download yet (main's endpoint not merged)")
            raise
        plan = _module(addon, "runtime").STATE.model_plan
        assert plan["files"] and plan["total_bytes"] == sum(item["size"] for item in plan["files"])
        assert "non-commercial" in plan["licences"]
        bpy.context.window_manager.uvidm.accept_licences = True
        assert bpy.ops.uvidm.download_models() == {"FINISHED"}, _module(addon, "runtime").STATE.model_download.error
        assert _module(addon, "preferences").models_ready(prefs)
        settings = scene.uvidm
        settings.photo, settings.landmarks_file = str(photo.path), str(photo.landmarks_file)
        settings.sampler, settings.steps, settings.texture_size = "dpmpp", 2, "256"
        assert bpy.ops.uvidm.generate() == {"FINISHED"}, bpy.context.window_manager.uvidm.message
        assert (tmp_path / "results" / "t1" / "head.glb").is_file()
