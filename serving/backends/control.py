"""Talk to a running model server (TF Serving or the embedded one) over gRPC.

Only what the operator side needs: version states (ModelService.GetModelStatus), config
reload (ModelService.HandleReloadConfigRequest) and which version a label resolves to
(PredictionService.GetModelMetadata answers with the resolved model_spec.version).
The calls are the clients' own ``GrpcClient`` (private copies of TF Serving's messages), so
the operator's commands never import TensorFlow; this module adds the operator's view: typed
``ControlError``s with the target in the message, no retries (a rollout decides itself what a
refused call means) and waiting for versions to become AVAILABLE.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from clients.base import NO_RETRY
from clients.errors import ClientError
from clients.grpc_client import GrpcClient
from clients.types import VersionStatus
from clients.wire import Code, VersionState

__all__ = ["AVAILABLE", "ControlError", "ModelControl", "ReloadUnsupported", "VersionStatus"]

AVAILABLE = VersionState.AVAILABLE.name
_END = VersionState.END.name
# A config reload loads and unloads versions before it answers.
_RELOAD_TIMEOUT_S = 60.0


class ControlError(RuntimeError):
    """The server refused or did not answer; the message says which and why."""


class ReloadUnsupported(ControlError):
    """The server has no usable HandleReloadConfigRequest: fall back to the config poll."""


class ModelControl:
    def __init__(self, target: str, timeout_s: float = 10.0) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self._client = GrpcClient(target, timeout_s=timeout_s, retry=NO_RETRY)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ModelControl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- queries -----------------------------------------------------------------------------
    def status(self, model: str) -> list[VersionStatus]:
        """Every version the server knows for ``model``, oldest first ([] if it knows none)."""
        try:
            rows = self._client.model_status(model=model)
        except ClientError as exc:
            if exc.code == Code.NOT_FOUND.name:
                return []
            raise ControlError(f"GetModelStatus on {self.target}: {exc}") from exc
        return sorted(rows, key=lambda s: s.version)

    def available(self, model: str) -> set[int]:
        return {s.version for s in self.status(model) if s.state == AVAILABLE}

    def resolve_label(self, model: str, label: str) -> int | None:
        """The version ``label`` resolves to now; None if the server does not know the label."""
        try:
            meta = self._client.model_metadata(model=model, label=label)
        except ClientError as exc:
            if exc.code in (Code.INVALID_ARGUMENT.name, Code.NOT_FOUND.name):
                return None
            raise ControlError(f"GetModelMetadata on {self.target}: {exc}") from exc
        return meta.version

    # -- changes -----------------------------------------------------------------------------
    def reload(self, config_text: str) -> None:
        """Apply a ModelServerConfig (text proto) with HandleReloadConfigRequest."""
        try:
            self._client.reload_config(
                config_text, timeout_s=max(self.timeout_s, _RELOAD_TIMEOUT_S)
            )
        except ClientError as exc:
            if exc.code in (Code.UNIMPLEMENTED.name, Code.UNAVAILABLE.name):
                raise ReloadUnsupported(f"config reload over gRPC: {exc}") from exc
            raise ControlError(f"the server refused the config: {exc}") from exc

    # -- waiting -----------------------------------------------------------------------------
    def wait_until(
        self,
        what: str,
        condition: Callable[[], bool],
        timeout_s: float,
        abort: Callable[[], str | None] = lambda: None,
        interval_s: float = 0.1,
    ) -> None:
        """Poll ``condition`` until true; ``abort`` returns a reason to stop early."""
        deadline = time.monotonic() + timeout_s
        last_error = ""
        while True:
            try:
                if condition():
                    return
            except ControlError as exc:
                last_error = f" (last error: {exc})"
            reason = abort()
            if reason:
                raise ControlError(f"gave up waiting for {what}: {reason}")
            if time.monotonic() > deadline:
                raise ControlError(
                    f"timed out after {timeout_s:.0f} s waiting for {what}{last_error}"
                )
            time.sleep(interval_s)

    def wait_available(
        self,
        model: str,
        versions: Iterable[int] | None,
        timeout_s: float,
        abort: Callable[[], str | None] = lambda: None,
    ) -> set[int]:
        """Wait until the versions (any version, if None) are AVAILABLE; fail fast on a
        version that ended with an error (a failed load keeps the old version serving)."""
        wanted = set(versions) if versions is not None else None
        seen: set[int] = set()

        def failed() -> str | None:
            for s in self._last:
                if wanted and s.version in wanted and s.state == _END and s.error_message:
                    return f"version {s.version} of {model} failed to load: {s.error_message}"
            return abort()

        def ready() -> bool:
            self._last = self.status(model)
            seen.clear()
            seen.update(s.version for s in self._last if s.state == AVAILABLE)
            return bool(seen) if wanted is None else wanted <= seen

        self._last: list[VersionStatus] = []
        try:
            self.wait_until(f"{model} to serve", ready, timeout_s, failed)
        except ControlError as exc:
            if not str(exc).startswith("timed out"):
                raise
            missing = "a version" if wanted is None else f"version(s) {sorted(wanted - seen)}"
            states = ", ".join(f"{s.version} {s.state}" for s in self._last) or "none"
            raise ControlError(
                f"{missing} of {model} did not become AVAILABLE within {timeout_s:.0f} s "
                f"(states now: {states})"
            ) from exc
        return set(seen)
