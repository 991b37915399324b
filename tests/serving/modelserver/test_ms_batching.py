"""Dynamic batching: merging, splitting back, padding, limits; batched == unbatched on a real model."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from serving.modelserver import errors
from serving.modelserver.batching import BatchingOptions, BatchScheduler


class Recorder:
    """A fake model (y = 2x + 1 per row) that can hold its first call until released."""

    def __init__(self, hold_first: bool = True) -> None:
        self.sizes: list[int] = []
        self.release = threading.Event()
        self.started = threading.Event()
        if not hold_first:
            self.release.set()

    def __call__(self, inputs):
        self.sizes.append(inputs["x"].shape[0])
        self.started.set()
        assert self.release.wait(10)
        return {"y": inputs["x"] * 2 + 1, "n": np.full(inputs["x"].shape[0], len(self.sizes))}


async def _wait_started(rec: Recorder) -> None:
    for _ in range(500):
        if rec.started.is_set():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("first batch never started")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


@pytest.fixture(scope="module")
def executor():
    with ThreadPoolExecutor(4) as pool:
        yield pool


def test_concurrent_tasks_merge_into_one_call_and_split_back(executor):
    async def main():
        rec = Recorder()
        sched = BatchScheduler(BatchingOptions(max_batch_size=32, num_batch_threads=1), executor)
        queue = sched.queue(rec)
        first = asyncio.ensure_future(queue.submit({"x": np.array([[0.0]])}))
        await _wait_started(rec)
        rest = [
            asyncio.ensure_future(queue.submit({"x": np.full((i % 3 + 1, 1), float(i))}))
            for i in range(1, 10)
        ]
        await asyncio.sleep(0.05)
        rec.release.set()
        results = await asyncio.gather(first, *rest)
        return rec.sizes, results

    sizes, results = run(main())
    assert sizes == [1, sum(i % 3 + 1 for i in range(1, 10))]
    for i, res in enumerate(results):
        rows = 1 if i == 0 else i % 3 + 1
        np.testing.assert_array_equal(res["y"], np.full((rows, 1), 2.0 * i + 1))
        assert list(res["n"]) == [1 if i == 0 else 2] * rows


def test_tasks_submitted_in_one_loop_turn_share_a_batch_with_a_free_thread(executor):
    """batch_timeout_micros 0 and an idle batch thread: the tasks the loop handles in the same
    turn (as from one read of an HTTP/2 connection) run as one batch, not the first alone."""

    async def main():
        rec = Recorder(hold_first=False)
        sched = BatchScheduler(BatchingOptions(max_batch_size=32, num_batch_threads=1), executor)
        queue = sched.queue(rec)
        same_turn = [queue.submit({"x": np.full((1, 1), float(i))}) for i in range(5)]
        results = await asyncio.gather(*same_turn)
        later = await queue.submit({"x": np.full((2, 1), 9.0)})  # a later turn: its own batch
        return rec.sizes, results, later

    sizes, results, later = run(main())
    assert sizes == [5, 2]
    for i, res in enumerate(results):
        np.testing.assert_array_equal(res["y"], [[2.0 * i + 1]])
    np.testing.assert_array_equal(later["y"], [[19.0], [19.0]])


def test_task_larger_than_max_batch_size(executor):
    async def main():
        queue = BatchScheduler(BatchingOptions(max_batch_size=4), executor).queue(Recorder(False))
        await queue.submit({"x": np.zeros((5, 1))})

    with pytest.raises(errors.InvalidArgument, match="Task size 5 is larger than maximum input batch size 4"):
        run(main())


def test_full_queue_is_unavailable(executor):
    async def main():
        rec = Recorder()
        opts = BatchingOptions(max_batch_size=2, num_batch_threads=1, max_enqueued_batches=1)
        queue = BatchScheduler(opts, executor).queue(rec)
        first = asyncio.ensure_future(queue.submit({"x": np.zeros((2, 1))}))
        await _wait_started(rec)
        second = asyncio.ensure_future(queue.submit({"x": np.zeros((2, 1))}))
        await asyncio.sleep(0.01)
        try:
            with pytest.raises(errors.Unavailable, match="batch scheduling queue .* is full"):
                await queue.submit({"x": np.zeros((1, 1))})
        finally:
            rec.release.set()
        await asyncio.gather(first, second)

    run(main())


def test_padding_to_allowed_batch_sizes_is_stripped(executor):
    async def main():
        rec = Recorder()
        opts = BatchingOptions(max_batch_size=8, num_batch_threads=1, allowed_batch_sizes=(4, 8))
        queue = BatchScheduler(opts, executor).queue(rec)
        first = asyncio.ensure_future(queue.submit({"x": np.array([[5.0]])}))
        await _wait_started(rec)
        tasks = [asyncio.ensure_future(queue.submit({"x": np.array([[float(i)]])})) for i in range(3)]
        await asyncio.sleep(0.02)
        rec.release.set()
        return rec.sizes, await asyncio.gather(first, *tasks)

    sizes, results = run(main())
    assert sizes == [4, 4]  # 1 -> 4 and 3 -> 4
    assert [r["y"].shape for r in results] == [(1, 1)] * 4
    assert [float(r["y"][0, 0]) for r in results] == [11.0, 1.0, 3.0, 5.0]


def test_large_batch_splitting(executor):
    async def main():
        rec = Recorder(False)
        opts = BatchingOptions(
            max_batch_size=16,
            enable_large_batch_splitting=True,
            max_execution_batch_size=4,
            num_batch_threads=1,
        )
        queue = BatchScheduler(opts, executor).queue(rec)
        x = np.arange(10, dtype=np.float64).reshape(10, 1)
        return rec.sizes, x, await queue.submit({"x": x})

    sizes, x, result = run(main())
    assert sorted(sizes) == [2, 4, 4]
    np.testing.assert_array_equal(result["y"], x * 2 + 1)


def test_different_inner_shapes_do_not_share_a_batch(executor):
    async def main():
        rec = Recorder()
        queue = BatchScheduler(BatchingOptions(num_batch_threads=1), executor).queue(rec)
        first = asyncio.ensure_future(queue.submit({"x": np.zeros((1, 1))}))
        await _wait_started(rec)
        a = asyncio.ensure_future(queue.submit({"x": np.ones((1, 2))}))
        b = asyncio.ensure_future(queue.submit({"x": np.ones((1, 3))}))
        await asyncio.sleep(0.02)
        rec.release.set()
        return rec.sizes, await asyncio.gather(first, a, b)

    sizes, results = run(main())
    assert sizes == [1, 1, 1]
    assert results[2]["y"].shape == (1, 3)


def test_a_batch_that_cannot_be_merged_answers_every_caller(executor):
    """With padding on, tasks of different ranks share a batch and the merge fails: every
    caller gets the error (before, the merge raised outside the answer path and they hung)."""

    async def main():
        rec = Recorder()
        opts = BatchingOptions(num_batch_threads=1, pad_variable_length_inputs=True)
        queue = BatchScheduler(opts, executor).queue(rec)
        first = asyncio.ensure_future(queue.submit({"x": np.zeros((1, 1))}))
        await _wait_started(rec)
        a = asyncio.ensure_future(queue.submit({"x": np.ones((1, 2))}))
        b = asyncio.ensure_future(queue.submit({"x": np.ones((1, 2, 2))}))
        await asyncio.sleep(0.02)
        rec.release.set()
        await first
        return await asyncio.gather(a, b, return_exceptions=True)

    results = run(main())
    assert [type(r) for r in results] == [errors.InvalidArgument] * 2
    assert "different ranks" in str(results[0])


def test_batched_results_equal_unbatched_on_mnist(tiny_mnist_repo):
    from serving.modelserver.config import single_model_config
    from serving.modelserver.dataplane import ServingDataPlane
    from serving.modelserver.manager import ManagerOptions, ModelManager
    from serving.modelserver.types import ModelRef

    images = tiny_mnist_repo.test_images[:48]
    base = str(tiny_mnist_repo.repo / tiny_mnist_repo.model_name)

    async def main():
        with ThreadPoolExecutor(4) as pool:
            manager = ModelManager(ManagerOptions(file_system_poll_wait_seconds=0), pool)
            await manager.apply_config(single_model_config("mnist", base), initial=True)
            plain = ServingDataPlane(manager, pool)
            opts = BatchingOptions(max_batch_size=16, num_batch_threads=1, allowed_batch_sizes=(8, 16))
            batched = ServingDataPlane(manager, pool, batch_scheduler=BatchScheduler(opts, pool))
            ref = ModelRef("mnist", signature_name="predict_images")
            singles = [await plain.predict(ref, {"images": images[i : i + 1]}) for i in range(len(images))]
            merged = await asyncio.gather(
                *(batched.predict(ref, {"images": images[i : i + 1]}) for i in range(len(images)))
            )
            await manager.stop()
            return singles, merged

    singles, merged = run(main())
    for a, b in zip(singles, merged, strict=True):
        np.testing.assert_allclose(a.outputs["scores"], b.outputs["scores"], rtol=1e-5, atol=1e-6)
        assert a.outputs["scores"].shape == (1, 10)
    top = np.array([int(np.argmax(r.outputs["scores"])) for r in merged])
    np.testing.assert_array_equal(top, tiny_mnist_repo.predictions[:48])


def _scrape(url: str) -> dict[str, float]:
    """Prometheus text -> {"name{labels}": value} (label-less series keyed by the bare name)."""
    import requests

    text = requests.get(url, timeout=30).text
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            out[series.removesuffix("{}")] = float(value)
    return out


def test_running_server_merges_concurrent_requests_into_batches(model_store, tmp_path):
    """Through a real server: concurrent one-row requests run as fewer, larger TensorFlow
    calls, as the batching metrics on the monitoring path report, and every caller still gets
    its own row back."""
    import grpc
    from ms_models import copy_version
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from clients import codec
    from serving.modelserver.process import EmbeddedServerProcess

    copy_version(model_store, "ver", 1, tmp_path / "ver")
    batching = tmp_path / "batching.config"
    # A long timeout: a batch waits (up to 1 s) for more tasks unless 8 rows fill it first.
    batching.write_text(
        "max_batch_size { value: 8 }\nbatch_timeout_micros { value: 1000000 }\n"
        "num_batch_threads { value: 1 }\nmax_enqueued_batches { value: 100 }\n"
    )
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true path: "/metrics" }')
    requests_sent = 24
    with EmbeddedServerProcess(
        [
            "--model_name=ver",
            f"--model_base_path={tmp_path / 'ver'}",
            "--enable_batching",
            f"--batching_parameters_file={batching}",
            f"--monitoring_config_file={monitoring}",
        ]
    ) as server:
        metrics_url = f"{server.rest_url}/metrics"
        before = _scrape(metrics_url)
        assert before.get(":tensorflow:serving:batching_session:wrapped_run_count", 0) == 0

        channel = grpc.insecure_channel(server.grpc_target)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        start = threading.Barrier(requests_sent)
        answers: dict[int, np.ndarray] = {}

        def call(i: int) -> None:
            req = predict_pb2.PredictRequest()
            req.model_spec.name = "ver"
            codec.fill_tensor_proto(req.inputs["x"], np.array([float(i)], np.float32))
            start.wait(30)
            resp = stub.Predict(req, timeout=60)
            answers[i] = codec.tensor_proto_to_ndarray(resp.outputs["y"])

        threads = [threading.Thread(target=call, args=(i,)) for i in range(requests_sent)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        channel.close()
        assert sorted(answers) == list(range(requests_sent))
        for i, y in answers.items():
            np.testing.assert_array_equal(y, [i + 1.0])  # split back to the right caller

        after = _scrape(metrics_url)
    base = ":tensorflow:serving:batching_session"
    runs = after[f"{base}:wrapped_run_count"]
    print(f"{requests_sent} requests ran as {runs:.0f} batches")
    assert after[f"{base}:input_batch_size_count"] == runs  # one histogram entry per run
    assert after[f"{base}:input_batch_size_sum"] == requests_sent  # every row ran exactly once
    assert runs < requests_sent  # so some runs carried more than one request
    # A batch of one row lands in the first bucket (le="2": limits are exclusive upper bounds).
    assert after[f'{base}:input_batch_size_bucket{{le="2"}}'] < runs
    assert after[f"{base}:processed_batch_size_sum"] >= requests_sent
    queued = f'{base}:queuing_latency_count{{thread_pool_name="batch_threads"}}'
    assert after[queued] == requests_sent  # every request waited in the batching queue
