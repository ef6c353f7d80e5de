"""download_full_head against a loopback HTTP server serving the synthetic fixture, and from a checkout."""

import functools
import hashlib
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from uvidm_backend.devtools.ict_fixture import IDENTITY_COUNT
from uvidm_backend.fullhead.download import (
    BASE_URL_ENV,
    ICT_LICENSE,
    FullHeadDownloadError,
    download_full_head,
)
from uvidm_backend.fullhead.ict_files import CACHE_FILE, load_ict_model

MODEL_FILES = 2 + IDENTITY_COUNT + 53  # neutral mesh, indices, identities, expressions


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def checkout(tmp_path, ict_folder):
    """An ICT-FaceKit checkout: FaceXModel/ and LICENSE."""
    root = tmp_path / "ICT-FaceKit"
    (root / "FaceXModel").mkdir(parents=True)
    for path in ict_folder.glob("*"):
        if path.suffix in (".obj", ".json", ".mtl"):
            (root / "FaceXModel" / path.name).write_bytes(path.read_bytes())
    (root / "LICENSE").write_text(ICT_LICENSE)
    return root


@pytest.fixture
def server(checkout, monkeypatch):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(checkout)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    monkeypatch.setenv(BASE_URL_ENV, base)
    yield base
    httpd.shutdown()
    httpd.server_close()


def test_download_from_a_server(tmp_path, server, checkout):
    shown, seen = [], []
    target = tmp_path / "weights" / "ict_facekit"
    records = download_full_head(target, progress=lambda name, done, count: seen.append((name, done, count)),
                                 identity_count=IDENTITY_COUNT, show_licence=shown.append)
    assert len(records) == MODEL_FILES + 1  # + LICENSE
    for record in records:
        data = (target / record.name).read_bytes()
        assert record.size == len(data) and record.sha256 == hashlib.sha256(data).hexdigest()
        folder = "" if record.name == "LICENSE" else "FaceXModel/"
        assert record.source == f"{server}/{folder}{record.name}"
    assert "MIT License" in shown[0] and "USC Institute for Creative Technologies" in shown[0]
    assert seen[-1] == ("", len(records), len(records))
    assert (target / CACHE_FILE).is_file() and load_ict_model(target).identity.shape[0] == IDENTITY_COUNT
    assert not list(target.glob("*.partial*"))


def test_a_missing_file_is_named_and_nothing_half_written(tmp_path, server, checkout):
    (checkout / "FaceXModel" / "jawOpen.obj").unlink()
    target = tmp_path / "ict"
    with pytest.raises(FullHeadDownloadError, match=r"FaceXModel/jawOpen.obj: the server answered 404"):
        download_full_head(target, identity_count=IDENTITY_COUNT, show_licence=lambda text: None)
    assert not (target / "jawOpen.obj").exists() and not list(target.glob("*.partial*"))
    assert not (target / CACHE_FILE).exists()


def test_copy_from_a_checkout(tmp_path, checkout):
    shown = []
    records = download_full_head(tmp_path / "ict", source_dir=checkout / "FaceXModel", show_licence=shown.append)
    assert len(records) == MODEL_FILES + 1
    assert records[0].source == str((checkout / "FaceXModel" / records[0].name).resolve())
    assert "MIT License" in shown[0]
    assert load_ict_model(tmp_path / "ict").n_vertices > 0
