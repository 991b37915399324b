"""Manager behaviour in-process: swaps under load, failed loads, labels, reload, warmup."""

from __future__ import annotations

import asyncio
import shutil
import struct
from concurrent.futures import ThreadPoolExecutor

import ms_models
import numpy as np
import pytest
from google.protobuf import text_format
from ms_models import copy_version

from serving.modelserver import errors
from serving.modelserver.config import ModelServerConfig
from serving.modelserver.dataplane import ServingDataPlane
from serving.modelserver.manager import ManagerOptions, ModelManager
from serving.modelserver.types import ModelRef

X = np.array([1.0], np.float32)


def config(*models: str) -> ModelServerConfig:
    return text_format.Parse(f"model_config_list {{ {' '.join(models)} }}", ModelServerConfig())


def model(name: str, base, extra: str = "") -> str:
    return f'config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow" {extra} }}'


class Harness:
    """A manager + data plane on the current event loop."""

    def __init__(self, pool, **options) -> None:
        opts = dict(file_system_poll_wait_seconds=0.05, max_num_load_retries=1, load_retry_interval_s=0.05)
        opts.update(options)
        self.manager = ModelManager(ManagerOptions(**opts), pool)
        self.plane = ServingDataPlane(self.manager, pool)

    async def version_of(self, name: str = "ver", **ref) -> int:
        res = await self.plane.predict(ModelRef(name, **ref), {"x": X})
        return res.version

    async def wait_for(self, predicate, timeout: float = 60.0) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not predicate():
            assert loop.time() < end, "condition not reached in time"
            await asyncio.sleep(0.02)

    def states(self, name: str = "ver") -> list[tuple[int, str, int]]:
        return [
            (s.version, s.state, int(errors.Code[s.error_code]))
            for s in self.manager.model_status(name)
        ]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


@pytest.fixture(scope="module")
def pool():
    with ThreadPoolExecutor(4) as p:
        yield p


def test_swap_under_load_has_zero_failures_and_failed_version_keeps_old(model_store, tmp_path, pool):
    base = tmp_path / "ver"
    copy_version(model_store, "ver", 1, base)

    async def main():
        h = Harness(pool)
        await h.manager.apply_config(config(model("ver", base)), initial=True)
        h.manager.start_polling()
        assert await h.version_of() == 1
        seen: list[int] = []
        failures: list[Exception] = []
        stop = asyncio.Event()

        async def client():
            while not stop.is_set():
                try:
                    seen.append(await h.version_of())
                except Exception as exc:  # any failure is a defect
                    failures.append(exc)
                await asyncio.sleep(0)

        clients = [asyncio.create_task(client()) for _ in range(4)]
        copy_version(model_store, "ver", 2, base)
        await h.wait_for(lambda: seen and seen[-1] == 2)
        await h.wait_for(lambda: h.states()[1][1] == "END")
        # A broken version 3 fails to load (after its retry) and never takes version 2 down.
        broken = base / "3"
        broken.mkdir()
        (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
        await h.wait_for(lambda: h.states()[0][1] == "END")
        stop.set()
        await asyncio.gather(*clients)
        assert failures == []
        assert seen.count(1) > 0 and seen.count(2) > 0
        assert sorted(set(seen)) == [1, 2]
        assert seen == sorted(seen)  # never back to 1 once 2 served
        assert await h.version_of() == 2
        states = h.states()
        assert states[1:] == [(2, "AVAILABLE", 0), (1, "END", 0)]
        assert states[0][:2] == (3, "END") and states[0][2] != 0
        # Removing the broken directory un-aspires it; version 2 is untouched.
        shutil.rmtree(broken)
        await asyncio.sleep(0.3)
        assert await h.version_of() == 2
        await h.manager.stop()

    run(main())


def test_labels_rules(model_store, tmp_path, pool):
    base = tmp_path / "ver"
    copy_version(model_store, "ver", 1, base)
    copy_version(model_store, "ver", 2, base)
    every = "model_version_policy { all {} }"

    async def main():
        strict = Harness(pool)
        with pytest.raises(errors.FailedPrecondition) as info:
            await strict.manager.apply_config(
                config(model("ver", base, every + ' version_labels { key: "stable" value: 1 }')),
                initial=True,
            )
        assert info.value.message == (
            "Request to assign label to version 1 of model ver, which is not currently "
            "available for inference"
        )

        h = Harness(pool, allow_version_labels_for_unavailable_models=True)
        labels = ' version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 2 }'
        await h.manager.apply_config(config(model("ver", base, every + labels)), initial=True)
        assert await h.version_of(label="stable") == 1
        assert await h.version_of(label="canary") == 2
        with pytest.raises(errors.InvalidArgument, match="Unrecognized servable version label: x"):
            await h.version_of(label="x")
        # Moving an existing label onto a version that is not available: refused, even with
        # the flag (it only covers new labels).
        with pytest.raises(errors.FailedPrecondition):
            await h.manager.apply_config(
                config(model("ver", base, every + ' version_labels { key: "stable" value: 9 }'))
            )
        assert await h.version_of(label="stable") == 1  # the old config stays in force
        # Moving it onto an available version works.
        await h.manager.apply_config(
            config(model("ver", base, every + ' version_labels { key: "stable" value: 2 }'))
        )
        assert await h.version_of(label="stable") == 2
        await h.manager.stop()
        await strict.manager.stop()

    run(main())


def test_reload_replaces_config_and_reports_failed_new_models(model_store, tmp_path, pool):
    copy_version(model_store, "ver", 1, tmp_path / "ver")
    copy_version(model_store, "echo", 1, tmp_path / "echo")
    bad = tmp_path / "bad" / "1"
    bad.mkdir(parents=True)

    async def main():
        h = Harness(pool)
        await h.manager.apply_config(config(model("ver", tmp_path / "ver")), initial=True)
        # Replace: echo in, ver out. The call returns once echo is AVAILABLE.
        await h.manager.apply_config(config(model("echo", tmp_path / "echo")))
        assert h.states("echo") == [(1, "AVAILABLE", 0)]
        with pytest.raises(errors.NotFound, match=r"Latest\(ver\)"):
            await h.version_of()
        await h.wait_for(lambda: h.states("ver") == [(1, "END", 0)])
        # Identical config again: accepted.
        await h.manager.apply_config(config(model("echo", tmp_path / "echo")))
        # A new model that cannot load: UNKNOWN with TF Serving's summary.
        with pytest.raises(errors.Unknown) as info:
            await h.manager.apply_config(
                config(model("echo", tmp_path / "echo"), model("bad", tmp_path / "bad"))
            )
        assert info.value.message.startswith("1 servable(s) did not become available: {{name: bad version: 1}")
        with pytest.raises(errors.InvalidArgument, match="multiple times"):
            await h.manager.apply_config(config(model("echo", tmp_path / "echo"), model("echo", tmp_path / "x")))
        await h.manager.stop()

    run(main())


def test_warmup_runs_and_its_limits_fail_the_load(model_store, tmp_path, pool):
    base = tmp_path / "warm"
    copy_version(model_store, "ver", 1, base)  # carries one warmup record
    too_many = copy_version(model_store, "ver", 2, tmp_path / "many")
    ms_models.write_warmup(str(too_many), [np.array([1.0], np.float32)], count=1001)
    corrupt = copy_version(model_store, "ver", 2, tmp_path / "corrupt")
    (corrupt / "assets.extra").mkdir()
    # A whole record whose checksums are wrong (a truncated tail would read as end-of-file).
    record = struct.pack("<Q", 5) + b"\0\0\0\0" + b"hello" + b"\0\0\0\0"
    (corrupt / "assets.extra" / "tf_serving_warmup_requests").write_bytes(record)

    async def main():
        h = Harness(pool, max_num_load_retries=0)
        await h.manager.apply_config(config(model("warm", base)), initial=True)
        assert await h.version_of("warm") == 1
        for name, path, code in (
            ("many", tmp_path / "many", errors.Code.INVALID_ARGUMENT),
            ("corrupt", tmp_path / "corrupt", errors.Code.DATA_LOSS),
        ):
            with pytest.raises(errors.Unknown):
                await h.manager.apply_config(config(model("warm", base), model(name, path)))
            status = h.manager.model_status(name)[0]
            assert (status.state, status.error_code) == ("END", code.name)
            if name == "many":
                assert "Number of warmup records exceeds the maximum (1000)" in status.error_message
            else:
                assert "Please verify your warmup data is in TFRecord format." in status.error_message
        await h.manager.stop()

    run(main())


def test_empty_base_path_unloads_and_missing_base_path_skips_the_poll(model_store, tmp_path, pool):
    copy_version(model_store, "ver", 1, tmp_path / "a")
    copy_version(model_store, "echo", 1, tmp_path / "b")

    async def main():
        h = Harness(pool)
        await h.manager.apply_config(
            config(model("ver", tmp_path / "a"), model("echo", tmp_path / "b")), initial=True
        )
        h.manager.start_polling()
        # A missing base path skips the whole poll: nothing changes for either model.
        (tmp_path / "b").rename(tmp_path / "b-moved")
        shutil.rmtree(tmp_path / "a" / "1")
        await asyncio.sleep(0.3)
        assert h.states("ver") == [(1, "AVAILABLE", 0)]
        # Both paths present again, ver's now empty: its version is unloaded.
        (tmp_path / "b-moved").rename(tmp_path / "b")
        await h.wait_for(lambda: h.states("ver") == [(1, "END", 0)])
        assert h.states("echo") == [(1, "AVAILABLE", 0)]
        await h.manager.stop()

    run(main())
