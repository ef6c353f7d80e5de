"""The pipeline's fast path on a GPU (bf16 hoisted UNet replayed from CUDA graphs) against float32."""

import numpy as np
import pytest
from pipeline.photos import fixture_landmarks, sample_photo

from uvidm_backend.pipeline import GenerateOptions
from uvidm_backend.pipeline.pipeline import Pipeline

pytestmark = pytest.mark.gpu


def _difference(actual: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    diff = np.abs(actual.astype(np.int32) - expected.astype(np.int32))
    return float(diff.mean()), float(np.percentile(diff, 99))


def test_fast_pipeline_gives_the_float32_heads(model_paths):
    faces = fixture_landmarks()["t1.jpg"]["faces"]
    photo = sample_photo("t1.jpg")
    options = [GenerateOptions(landmarks=faces[i]["lm5"], steps=10, seed=3, texture_size=512) for i in (0, 1)]
    reference = Pipeline.load(model_paths, device="cuda", fast="off")
    fast = Pipeline.load(model_paths, device="cuda", fast="graph")
    assert fast.describe()["fast"] == "graph"
    expected = [reference.generate(photo, option) for option in options]
    # Face 0, face 1, face 0 again: each generation must use its own condition (the cross-attention keys
    # and values are computed per condition tensor), and replays are deterministic.
    first, second, again = (fast.generate(photo, option) for option in (options[0], options[1], options[0]))
    np.testing.assert_array_equal(first.albedo_model, again.albedo_model)
    assert fast.condition_stage.fuse_tokens.captured_shapes  # the condition fuser ran from its CUDA graph
    for actual, wanted in ((first, expected[0]), (second, expected[1])):
        mean, p99 = _difference(actual.albedo_model, wanted.albedo_model)
        assert mean < 2.0 and p99 < 12, f"model texture differs from float32: mean {mean:.2f}, 99th pct {p99:.1f}"
        mean, p99 = _difference(actual.albedo, wanted.albedo)
        assert mean < 2.0 and p99 < 12, f"albedo differs from float32: mean {mean:.2f}, 99th pct {p99:.1f}"
        np.testing.assert_allclose(actual.mesh.vertices, wanted.mesh.vertices, atol=1e-5)  # float32 in both
    # Two faces, two textures (close with random weights: 0.29 levels apart on average on an H200).
    assert not np.array_equal(first.albedo_model, second.albedo_model)


def test_background_compilation_takes_over_between_generations(model_paths):
    """`serve`'s default: graph mode answers at once while the UNet compiles in a background thread, then
    the compiled UNet (and fused sampler updates) run the next generations, computing the same heads."""
    faces = fixture_landmarks()["t1.jpg"]["faces"]
    photo = sample_photo("t1.jpg")
    options = GenerateOptions(landmarks=faces[0]["lm5"], steps=10, seed=3, texture_size=512, sampler="dpmpp")
    reference = Pipeline.load(model_paths, device="cuda", fast="off").generate(photo, options)
    pipeline = Pipeline.load(model_paths, device="cuda", fast="graph", background_compile=True)
    graph_unet = pipeline.fast_path.eps_model
    while_compiling = pipeline.generate(photo, options)  # runs beside the compiler, not after it
    assert pipeline.wait_compiled(timeout=900), "the background compilation failed (see the log)"
    described = pipeline.describe()
    assert described["fast"] == "compile" and not described["compiling"]
    assert pipeline.fast_path.eps_model is not graph_unet and pipeline.fast_path.eps_model.compile_mode == "default"
    compiled = pipeline.generate(photo, options)
    # result.json tells the three arithmetics apart (the first head may have run before or after the swap)
    assert reference.info["precision"]["unet"] == "float32"
    assert while_compiling.info["precision"]["unet"] in ("bf16 graph", "bf16 compiled")
    assert compiled.info["precision"]["unet"] == "bf16 compiled"
    assert compiled.info["precision"]["sampler_update"] == "float32 compiled"
    for head in (while_compiling, compiled):
        mean, p99 = _difference(head.albedo_model, reference.albedo_model)
        assert mean < 2.0 and p99 < 12, f"model texture differs from float32: mean {mean:.2f}, 99th pct {p99:.1f}"



def test_graph_mode_batches_give_the_heads_of_one_by_one(model_paths):
    """The graphed UNet, fuser and decoder are captured per batch size: a batch of three (and one padded to
    four) gives each photo the head it gets alone, within bf16's tolerance."""
    from uvidm_backend.pipeline.pipeline import Request

    faces = fixture_landmarks()["t1.jpg"]["faces"]
    photo = sample_photo("t1.jpg")
    fast = Pipeline.load(model_paths, device="cuda", fast="graph")
    requests = [Request(photo, GenerateOptions(landmarks=faces[i]["lm5"], steps=10, seed=3 + i, texture_size=512))
                for i in range(3)]
    alone = [fast.generate(request.photo, request.options) for request in requests]
    for run_batch in (None, 4):
        together = fast.generate_batch(requests, run_batch=run_batch)
        for head, expected in zip(together, alone, strict=True):
            mean, p99 = _difference(head.albedo_model, expected.albedo_model)
            assert mean < 0.5 and p99 < 4, f"batch {run_batch}: mean {mean:.2f}, 99th pct {p99:.1f}"
            np.testing.assert_allclose(head.mesh.vertices, expected.mesh.vertices, atol=1e-5)
    shapes = fast.fast_path.decode._graphed.captured_shapes
    assert {shape[0][0] for shape in shapes} >= {1, 3, 4}


def test_a_folder_run_finishing_beside_the_networks_writes_the_heads_of_one_by_one(model_paths, tmp_path):
    """On CUDA a folder run finishes one batch on its own stream and thread while the next batch's networks run:
    every folder holds the head its photo gets alone."""
    from PIL import Image

    from uvidm_backend.pipeline.folder_run import PhotoJob, run_jobs

    faces = fixture_landmarks()["t1.jpg"]["faces"]
    photo = sample_photo("t1.jpg")
    fast = Pipeline.load(model_paths, device="cuda", fast="graph")
    jobs = [PhotoJob(photo, tmp_path / f"face{i}",
                     GenerateOptions(landmarks=faces[i % 3]["lm5"], steps=10, seed=i, texture_size=512))
            for i in range(7)]
    summary = run_jobs(fast, jobs, batch_size=2)
    assert len(summary.done) == 7 and not summary.failures
    for job in jobs:
        alone = fast.generate(job.photo, job.options)
        for name in ("albedo", "albedo_model", "preview"):
            with Image.open(job.folder / f"{name}.png") as written:
                mean, p99 = _difference(np.asarray(written), getattr(alone, name))
            # a batch of two runs other bf16 kernels than a batch of one: the tolerance of the batch test above
            assert mean < 0.5 and p99 < 4, f"{job.folder.name} {name}: mean {mean:.3f}, 99th pct {p99:.1f}"
