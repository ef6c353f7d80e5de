"""Writers of a folder run: worker processes write the folders that threads write, and their errors come back."""

import json
import os
import pickle

import pytest
from pipeline.photos import fixture_landmarks, sample_photo

from uvidm_backend.devtools.model_folder import write_model_folder
from uvidm_backend.pipeline import GenerateOptions, png
from uvidm_backend.pipeline.files import write_head_folder
from uvidm_backend.pipeline.folder_run import PhotoJob, run_jobs
from uvidm_backend.pipeline.writers import WRITER_NICENESS, FolderWriters, default_write_processes

FAST = {"steps": 4, "texture_size": 256}


def folder_contents(folder):
    """Every file's bytes, result.json without its timings (they differ from run to run)."""
    contents = {}
    for path in sorted(folder.iterdir()):
        if path.name == "result.json":
            info = json.loads(path.read_text())
            info.pop("timings")
            contents[path.name] = info
        else:
            contents[path.name] = path.read_bytes()
    return contents


@pytest.fixture(scope="module")
def full_pipeline(tmp_path_factory):
    """The tiny random-weight model folder with the synthetic ICT head (heads "both" have a FullHead to send)."""
    from uvidm_backend.pipeline.pipeline import Pipeline

    return Pipeline.load(write_model_folder(tmp_path_factory.mktemp("models_full"), seed=0, full_head=True),
                         device="cpu")


def test_processes_write_the_folders_threads_write(tmp_path, full_pipeline, monkeypatch):
    pipeline = full_pipeline
    faces = fixture_landmarks()["t1.jpg"]["faces"]
    photo = tmp_path / "t1.jpg"
    photo.write_bytes(sample_photo("t1.jpg").read_bytes())
    jobs = {kind: [PhotoJob(photo, tmp_path / kind / f"face{i}",
                            GenerateOptions(landmarks=faces[i]["lm5"], seed=i, head="both" if i else "bfm", **FAST))
                   for i in range(2)]
            for kind in ("threads", "processes")}
    with FolderWriters(processes=2) as writers:
        assert writers.slots == 2
        # Also each batch finished on a second thread, as on a GPU: the same files.
        summary = run_jobs(pipeline, jobs["processes"], batch_size=1, writers=writers, finish_beside=True)
        assert len(summary.done) == 2 and not summary.failures
        # The pool outlives a run: a second run writes through the same processes.
        later = PhotoJob(photo, tmp_path / "later", jobs["processes"][0].options)
        assert len(run_jobs(pipeline, [later], batch_size=1, writers=writers).done) == 1
        assert (later.folder / "head.glb").is_file()
    # A writer process compresses each PNG in one band (the bytes depend on the bands, the pixels do not).
    monkeypatch.setattr(png, "_default_threads", 1)
    summary = run_jobs(pipeline, jobs["threads"], batch_size=1, writers=FolderWriters(processes=0))
    assert len(summary.done) == 2
    for by_thread, by_process in zip(jobs["threads"], jobs["processes"], strict=True):
        expected = folder_contents(by_thread.folder)
        assert "head_full.glb" in expected or by_thread.options.head == "bfm"
        assert folder_contents(by_process.folder) == expected


@pytest.fixture(scope="module")
def full_heads(full_pipeline):
    """Three full heads of one model ("both": a BFM head and a FullHead each), seeds 0, 1, 2."""
    faces = fixture_landmarks()["t1.jpg"]["faces"]
    return [full_pipeline.generate(sample_photo("t1.jpg"), GenerateOptions(landmarks=faces[0]["lm5"], head="both",
                                                                            seed=seed, **FAST)) for seed in range(3)]


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="shared memory is listed in /dev/shm on Linux")
def test_arrays_reach_the_processes_through_shared_memory_blocks_reused_until_the_writers_close(
        tmp_path, full_heads, monkeypatch):
    from uvidm_backend.pipeline import writers as writers_module

    heads = full_heads
    monkeypatch.setattr(writers_module, "MIN_SHARED_BYTES", 1024)  # the tiny model's faces too
    # Heads in flight at once get a block each; a written head's block serves the next head.
    transport = writers_module._Transport()
    try:
        first, second = transport.pack(heads[0])[2], transport.pack(heads[1])[2]
        assert first.name != second.name
        transport.release(first)
        third = transport.pack(heads[2])[2]
        assert third.name == first.name
    finally:
        transport.close()
    assert os.path.exists(f"/dev/shm/{second.name}")  # still being written
    for block in (second, third):  # released after the close: removed
        transport.release(block)
    assert not any(os.path.exists(f"/dev/shm/{block.name}") for block in (first, second))

    packed = []
    pack = writers_module._Transport.pack

    def recorded(transport, shared_head):
        payload, places, block = pack(transport, shared_head)
        packed.append((len(payload), block.name, dict(transport._constants)))
        assert os.path.exists(f"/dev/shm/{block.name}")
        return payload, places, block

    monkeypatch.setattr(writers_module._Transport, "pack", recorded)
    with FolderWriters(processes=1) as writers:
        for i, head in enumerate(heads):  # one after another: each head finds the block of the one before
            writers.submit(head, tmp_path / f"head{i}").result()
        constants = [block.name for _, block in writers._transport._constants.values()]
    names = [name for _, name, _ in packed]
    assert len(set(names)) == 1
    assert not any(os.path.exists(f"/dev/shm/{name}") for name in names + constants)  # removed at close
    # The arrays every head shares (the model's faces and UVs) got blocks of their own when they came again.
    first, second, third = (set(map(id, [array for array, _ in kept.values()])) for _, _, kept in packed)
    assert not first and second == third
    assert {id(heads[0].mesh.faces), id(heads[0].mesh.uv)} <= second
    assert id(heads[0].albedo) not in second and id(heads[1].mesh.vertices) not in second
    # The pickle holds no array, only where to find it: tens of kilobytes besides the eyes' PNGs (bytes).
    head = heads[2]
    arrays = head.albedo.nbytes + head.preview.nbytes + head.mesh.vertices.nbytes + head.mesh.faces.nbytes
    pngs = sum(len(data) for data in head.full.pngs.values())
    assert all(size < pngs + 32 * 1024 < arrays for size, _, _ in packed)
    expected = tmp_path / "by_thread"
    monkeypatch.setattr(png, "_default_threads", 1)  # one band a PNG, as in a writer process
    write_head_folder(head, expected)
    assert folder_contents(tmp_path / "head2") == folder_contents(expected)


def test_without_room_in_shared_memory_a_head_travels_whole_in_its_pickle(tmp_path, full_heads, monkeypatch,
                                                                          caplog):
    from uvidm_backend.pipeline import writers as writers_module

    head = full_heads[0]
    monkeypatch.setattr(writers_module, "_new_block", lambda size: None)  # as a full /dev/shm answers
    sizes = []
    pack = writers_module._Transport.pack

    def recorded(transport, shared_head):
        payload, places, block = pack(transport, shared_head)
        assert block is None and not places
        sizes.append(len(payload))
        return payload, places, block

    monkeypatch.setattr(writers_module._Transport, "pack", recorded)
    with FolderWriters(processes=1) as writers:
        writers.submit(head, tmp_path / "whole").result()
    assert sizes[0] > head.albedo.nbytes + head.mesh.vertices.nbytes
    assert "--shm-size" in caplog.text  # the user learns why the run is slower
    monkeypatch.setattr(png, "_default_threads", 1)
    write_head_folder(head, tmp_path / "by_thread")
    assert folder_contents(tmp_path / "whole") == folder_contents(tmp_path / "by_thread")


def test_an_error_in_a_writer_process_fails_that_folder_and_leaves_it_as_it_was(tmp_path, pipeline):
    faces = fixture_landmarks()["t1.jpg"]["faces"]
    head = pipeline.generate(sample_photo("t1.jpg"), GenerateOptions(landmarks=faces[0]["lm5"], **FAST))
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "mine.txt").write_text("the user's file")
    with FolderWriters(processes=1) as writers:
        if hasattr(os, "nice"):  # the writer runs below this process's priority
            assert writers._executor.submit(os.nice, 0).result() == os.nice(0) + WRITER_NICENESS
        with pytest.raises(FileExistsError, match="taken"):
            writers.submit(head, taken).result()
        writers.submit(head, tmp_path / "free").result()
    assert [path.name for path in taken.iterdir()] == ["mine.txt"]
    assert (tmp_path / "free" / "head.glb").is_file()


def test_processes_only_beside_a_gpu_with_cores_to_spare():
    assert default_write_processes("cpu", cores=64) == 0
    assert default_write_processes("cuda", cores=2) == 0
    # A core a process beyond the eight kept for the GPU's process, at least one, at most 8.
    assert default_write_processes("cuda", cores=16) == 8
    assert default_write_processes("cuda", cores=12) == 4
    assert default_write_processes("cuda", cores=128) == 8
    assert default_write_processes("mps", cores=8) == 1


def test_errors_of_every_kind_cross_a_process_boundary_whole():
    from pathlib import Path

    from uvidm_backend.pipeline.errors import ModelFilesMissing
    from uvidm_backend.pipeline.output_folder import OutputFolderExists

    for error in (OutputFolderExists(Path("/out/t1"), "holds files"), ModelFilesMissing(["ldm.ckpt"], "uvidm weights")):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error) and copy.__dict__ == error.__dict__


def test_quick_gil_handoffs_shorten_the_switch_interval_until_the_last_block_ends():
    import sys
    import threading

    from uvidm_backend.pipeline.gil import quick_gil_handoffs

    before = sys.getswitchinterval()
    inside, release = threading.Event(), threading.Event()

    def other_run():
        with quick_gil_handoffs(0.001):
            inside.set()
            release.wait(5)

    thread = threading.Thread(target=other_run)
    with quick_gil_handoffs(0.0005):
        assert sys.getswitchinterval() == 0.0005
        thread.start()
        inside.wait(5)
        assert sys.getswitchinterval() == 0.0005  # never lengthened by a later block
    assert sys.getswitchinterval() == 0.0005  # the other block still runs
    release.set()
    thread.join()
    assert sys.getswitchinterval() == before
