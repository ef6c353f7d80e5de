"""The local backend's helpers: environment setup commands, the step runner, the serve process."""

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from uvidm_blender.backend import (
    TORCH_PIN,
    BackendProcess,
    CommandRunner,
    Step,
    TorchBuild,
    check_python,
    choose_torch_build,
    driver_cuda_version,
    free_port,
    model_subfolders,
    port_in_use,
    serve_command,
    setup_steps,
    stage_backend_source,
    venv_problem,
    venv_python,
)
from uvidm_blender.client import Client

ROOT = Path(__file__).resolve().parents[2]


def test_torch_pin_matches_setup_script():
    """The add-on's environment installs the torch that scripts/setup.sh pins."""
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert TORCH_PIN.split("==")[1] in setup


def test_stage_backend_source(tmp_path):
    staged = stage_backend_source(ROOT, tmp_path / "src")
    assert (staged / "pyproject.toml").read_text() == (ROOT / "pyproject.toml").read_text()
    assert (staged / "README.md").is_file()  # pyproject.toml names it
    assert (staged / "uvidm_backend" / "cli.py").is_file()
    assert not list(staged.rglob("__pycache__"))
    again = stage_backend_source(ROOT, tmp_path / "src")  # a second setup starts from a clean copy
    assert again == staged
    with pytest.raises(FileNotFoundError, match="bundled backend"):
        stage_backend_source(tmp_path / "src" / "uvidm_backend", tmp_path / "other")


def test_setup_steps(tmp_path):
    build = TorchBuild("CUDA 12.8", "https://download.pytorch.org/whl/cu128", "a driver")
    steps = setup_steps("/usr/bin/python3", tmp_path / "venv", tmp_path / "src", build=build)
    assert steps[0].argv == ("/usr/bin/python3", "-m", "venv", str(tmp_path / "venv"))
    python = str(venv_python(tmp_path / "venv"))
    assert all(step.argv[0] == python for step in steps[1:])
    torch_step = next(step for step in steps if TORCH_PIN in step.argv and str(tmp_path / "src") not in step.argv)
    assert "CUDA 12.8" in torch_step.label
    assert steps.index(torch_step) < next(i for i, s in enumerate(steps) if str(tmp_path / "src") in s.argv)
    backend_step = next(step for step in steps if str(tmp_path / "src") in step.argv)
    assert TORCH_PIN in backend_step.argv  # the resolver may not swap torch for another release
    index = torch_step.argv.index("--index-url")
    assert torch_step.argv[index + 1] == build.index_url and "--index-url" not in backend_step.argv
    default = setup_steps("p", tmp_path, tmp_path, build=TorchBuild("default", "", "macOS"))
    assert not any("--index-url" in step.argv for step in default)
    more = setup_steps("p", tmp_path, tmp_path, extra_packages=("nvdiffrast",))
    assert len(more) == len(steps) + 1 and more[-1].argv[-1] == "nvdiffrast"


@pytest.mark.parametrize("choice, system, cuda, label, index", [
    ("AUTO", "Windows", (12, 9), "CUDA 12.8", "/cu128"),
    ("AUTO", "Linux", (13, 1), "CUDA 13.0", "/cu130"),
    ("AUTO", "Linux", (12, 6), "CUDA 12.6", "/cu126"),
    ("AUTO", "Linux", (11, 8), "CPU only", "/cpu"),  # a driver too old for any CUDA build
    ("AUTO", "Windows", None, "CPU only", "/cpu"),
    ("AUTO", "Darwin", None, "default build (Apple GPU)", ""),
    ("CUDA", "Linux", None, "CUDA 13.0", "/cu130"),
    ("CPU", "Linux", (12, 8), "CPU only", "/cpu"),
    ("DEFAULT", "Windows", (12, 8), "package registry default", ""),
])
def test_torch_build_follows_the_gpu(choice, system, cuda, label, index):
    build = choose_torch_build(choice, system, cuda)
    assert build.label == label and build.index_url.endswith(index) and build.reason
    if index:
        assert build.index_url.startswith("https://download.pytorch.org/whl")
    if cuda is not None and choice == "AUTO" and label.startswith("CUDA"):
        assert f"CUDA {cuda[0]}.{cuda[1]}" in build.reason and "nvidia-smi" in build.reason
    custom = choose_torch_build("CUSTOM", system, cuda, "https://mirror.invalid/torch")
    assert custom.index_url == "https://mirror.invalid/torch"


NVIDIA_SMI = """Tue Dec  1 10:00:00 2026
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 570.86.15              Driver Version: 570.86.15      CUDA Version: 12.8     |
|-----------------------------------------+------------------------+----------------------+
"""


def test_driver_cuda_version_from_nvidia_smi(tmp_path, monkeypatch):
    """A real `nvidia-smi` on the PATH (a script printing what the driver's prints) is asked."""
    script = tmp_path / "nvidia-smi"
    script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{NVIDIA_SMI}EOF\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert driver_cuda_version() == (12, 8)
    script.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed'\nexit 9\n")
    assert driver_cuda_version() is None
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert driver_cuda_version() is None


def test_venv_problem(tmp_path):
    assert venv_problem(sys.executable) is None
    fake = tmp_path / "python3"
    fake.write_text(f"#!{sys.executable}\nimport sys\nsys.exit('ModuleNotFoundError: No module named venv')\n")
    fake.chmod(0o755)
    problem = venv_problem(str(fake))
    assert "lacks the venv module" in problem and "python3-venv" in problem
    assert "Cannot run" in venv_problem(str(tmp_path / "missing"))


def _py(code: str) -> tuple[str, ...]:
    return (sys.executable, "-c", textwrap.dedent(code))


def test_runner_reports_progress_and_output(tmp_path):
    marker = tmp_path / "ready"
    runner = CommandRunner([Step("one", _py("print('hello')"), 1), Step("two", _py("print('world')"), 3)],
                           log_file=tmp_path / "setup.log", on_success=lambda: marker.write_text("ok"))
    runner.start()
    runner.join(30)
    assert runner.done and runner.error is None and runner.progress == 1.0 and runner.message == "Done"
    assert list(runner.tail) == ["hello", "world"] and marker.is_file()
    log = (tmp_path / "setup.log").read_text()
    assert "hello" in log and "world" in log and "$ " in log


def test_runner_failure_names_the_step(tmp_path):
    runner = CommandRunner([Step("ok", _py("pass")), Step("Installing torch", _py(
        "import sys; print('ERROR: No matching distribution found for torch'); sys.exit(3)")), Step("never", _py(""))],
        on_success=lambda: pytest.fail("no success"))
    assert runner.run() is False
    assert runner.error == "Installing torch failed (exit code 3): ERROR: No matching distribution found for torch"
    assert runner.progress == pytest.approx(1 / 3)
    missing = CommandRunner([Step("gone", ("/no/such/python", "-V"))])
    assert missing.run() is False and "cannot run" in missing.error


def test_runner_cancel_stops_the_running_command(tmp_path):
    runner = CommandRunner([Step("slow", _py("import time; print('started', flush=True); time.sleep(60)"))])
    runner.start()
    deadline = time.monotonic() + 20
    while not runner.tail and time.monotonic() < deadline:
        time.sleep(0.02)
    runner.cancel()
    runner.join(20)
    assert not runner.running and runner.error == "Cancelled"


def test_serve_command():
    argv = serve_command("/env/bin/python", port=9000, weights="/m/weights", bfm="/m/BFM", device="cuda",
                         jobs_dir="/u/jobs")
    assert argv == ["/env/bin/python", "-m", "uvidm_backend.cli", "serve", "--host", "127.0.0.1", "--port", "9000",
                    "--jobs-dir", "/u/jobs", "--weights", "/m/weights", "--bfm", "/m/BFM", "--device", "cuda"]
    assert "--device" not in serve_command("python")
    assert model_subfolders("/models") == (str(Path("/models/weights")), str(Path("/models/BFM")))
    assert model_subfolders("") == ("", "")


def test_serve_command_matches_the_cli():
    """Every option the add-on passes is one `uvidm serve` takes."""
    from uvidm_backend.cli import build_parser

    argv = serve_command("python", port=9000, weights="w", bfm="b", device="cpu", jobs_dir="j")
    args = build_parser().parse_args(argv[3:])
    assert (args.port, args.weights, args.bfm, args.device, args.jobs_dir, args.host) == \
        (9000, "w", "b", "cpu", "j", "127.0.0.1")


FAKE_SERVE = """
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

class Health(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"version": "fake", "device": "cpu", "models": {"state": "ready"}}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

print("serving", flush=True)
HTTPServer(("127.0.0.1", int(sys.argv[1])), Health).serve_forever()
"""


def test_backend_process_start_stop(tmp_path):
    script = tmp_path / "serve.py"
    script.write_text(FAKE_SERVE)
    port = free_port()
    assert not port_in_use(port)
    process = BackendProcess()
    process.start([sys.executable, str(script), str(port)], tmp_path / "logs" / "backend.log")
    process.start([sys.executable, "-c", "raise SystemExit(9)"], tmp_path / "other.log")  # no second process
    try:
        deadline = time.monotonic() + 20
        while not port_in_use(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process.running
        assert Client(f"http://127.0.0.1:{port}").health()["version"] == "fake"
        assert "serving" in process.log_tail()
    finally:
        process.stop()
    assert not process.running and not port_in_use(port)
    process.stop()  # stopping twice is fine


def test_check_python(tmp_path):
    ok, words = check_python(sys.executable)  # this environment has the backend installed
    assert ok and words.startswith("backend ")
    ok, words = check_python(str(tmp_path / "missing-python"))
    assert not ok and "Cannot run" in words


def test_free_port_is_free():
    port = free_port()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))


def test_staged_source_builds_the_backend_package(tmp_path):
    """What Set Up Environment pip-installs: a wheel with uvidm_backend and the `uvidm` command."""
    import zipfile

    staged = stage_backend_source(ROOT, tmp_path / "src")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(tmp_path / "wheels"), str(staged)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = (tmp_path / "wheels").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "uvidm_backend/cli.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "uvidm = uvidm_backend.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
