"""The model server process: flags -> config -> models AVAILABLE -> gRPC + REST -> SIGTERM.

Start-up follows server.cc: validate flags (``Failed to start server. Error: ...``, exit 255),
read config files, load every configured model *before* any listener opens, then open gRPC
(``Running gRPC ModelServer at <addr>:<port> ...``) and REST
(``Exporting HTTP/REST API at:localhost:<port> ...``) on one asyncio loop (grpc.aio + aiohttp).
SIGTERM/SIGINT stop accepting, let in-flight requests finish within
``--shutdown_grace_seconds`` and exit 0 (TF Serving itself does not drain).

Size: a little over the layout limit because ``ModelServer`` is also the base of the worker and
the control plane of ``--num_workers`` (``workers/``): its small hooks (``_make_manager``,
``_announce``, ``_customize_rest_app``, ``reuse_port``) let them reuse the listeners unchanged.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from serving.modelserver import errors
from serving.modelserver.flags import (
    EXIT_BAD_FLAGS,
    SERVER_VERSION,
    ServerFlags,
    parse_channel_arguments,
    parse_or_exit,
)
from serving.modelserver.workers.ports import check_ports_free, validate_worker_flags

if TYPE_CHECKING:  # the manager imports TensorFlow: only at start-up, not on import
    from serving.modelserver.manager import ManagerOptions

log = logging.getLogger("serving.modelserver")


class StartupError(Exception):
    def __init__(self, error: errors.ServingError, detail: str = "") -> None:
        super().__init__(error.message)
        self.error = error
        self.detail = detail


def _status_text(err: errors.ServingError) -> str:
    return f"{err.code.name}: {err.message}"


def setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(
            "%(asctime)s.%(msecs)03d: %(levelname).1s serving/modelserver] %(message)s",
            "%Y-%m-%d %H:%M:%S",
        )
    )
    root = logging.getLogger("serving.modelserver")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


def version_text() -> str:
    try:
        tf_version = importlib.metadata.version("tensorflow")
    except importlib.metadata.PackageNotFoundError:
        tf_version = "unknown"
    return f"TensorFlow ModelServer: {SERVER_VERSION}\nTensorFlow Library: {tf_version}"


def validate_flags(flags: ServerFlags) -> None:
    """Server::BuildAndStart's checks, with its messages."""
    if flags.port == 0 and not flags.grpc_socket_path:
        raise StartupError(
            errors.InvalidArgument(
                "At least one of server_options.grpc_port or server_options.grpc_socket_path "
                "must be set."
            )
        )
    if flags.use_alts_credentials and flags.ssl_config_file:
        raise StartupError(
            errors.InvalidArgument(
                "Either use_alts_credentials must be false or ssl_config_file must be empty."
            )
        )
    if not flags.model_base_path and not flags.model_config_file:
        raise StartupError(
            errors.InvalidArgument(
                "Both server_options.model_base_path and server_options.model_config_file are "
                "empty!"
            )
        )
    if flags.batching_parameters_file and not flags.enable_batching:
        raise StartupError(
            errors.FailedPrecondition(
                "server_options.batching_parameters_file is set without setting "
                "server_options.enable_batching to true."
            )
        )
    validate_worker_flags(flags)
    if flags.use_alts_credentials:
        # ALTS needs the handshaker service of Google Cloud's own VMs; grpcio's ALTS server
        # credentials cannot complete a handshake anywhere else.
        raise StartupError(
            errors.Unimplemented(
                "--use_alts_credentials is not supported by the embedded server: ALTS needs "
                "Google Cloud's ALTS handshaker service; use --ssl_config_file for TLS"
            )
        )


@dataclass
class LoadedConfig:
    model_config: object
    batching: object | None
    prometheus: object
    session_config: object = None  # tensorflow ConfigProto shared by every model Session
    tls: object = None  # grpc_security.TlsSettings from --ssl_config_file, or None


def read_configs(flags: ServerFlags) -> LoadedConfig:
    from serving.modelserver import config, grpc_security, session_config

    try:
        if flags.model_config_file:
            model_config = config.read_model_server_config(flags.model_config_file)
        else:
            model_config = config.single_model_config(flags.model_name, flags.model_base_path)
        batching = (
            config.read_batching_options(flags.batching_parameters_file)
            if flags.enable_batching
            else None
        )
        # server.cc reads the session config after the model and batching configs.
        session = session_config.build(session_config.SessionFlags.from_flags(flags))
        prometheus = config.read_monitoring_config(flags.monitoring_config_file)
        # TF Serving parses the SSL file only when it opens the listeners, after the models
        # loaded (and aborts on a bad one); reading it here fails just as surely, sooner.
        tls = grpc_security.read_ssl_config(flags.ssl_config_file) if flags.ssl_config_file else None
    except config.ConfigError as exc:
        raise StartupError(exc, exc.detail) from None
    except errors.ServingError as exc:
        raise StartupError(exc) from None
    return LoadedConfig(model_config, batching, prometheus, session, tls)


def manager_options(f: ServerFlags, session_config: object | None = None) -> ManagerOptions:
    """The manager's options from the server flags (one reading for the single process and
    the workers' control plane)."""
    from serving.modelserver.manager import ManagerOptions

    return ManagerOptions(
        file_system_poll_wait_seconds=f.file_system_poll_wait_seconds,
        max_num_load_retries=f.max_num_load_retries,
        load_retry_interval_s=max(0, f.load_retry_interval_micros) / 1e6,
        enable_model_warmup=f.enable_model_warmup,
        num_request_iterations_for_warmup=max(1, f.num_request_iterations_for_warmup),
        allow_version_labels_for_unavailable_models=f.allow_version_labels_for_unavailable_models,
        saved_model_tags=tuple(t for t in f.saved_model_tags.split(",") if t),
        session_config=session_config,
    )


class ModelServer:
    """Everything one process serves; ``run()`` until a stop signal."""

    def __init__(self, flags: ServerFlags, configs: LoadedConfig) -> None:
        self.flags = flags
        self.configs = configs
        self.grpc_port: int | None = None
        self.health = None
        self.rest_port: int | None = None
        self._stop = asyncio.Event()
        # Worker processes (--num_workers > 1) share the ports with SO_REUSEPORT; the single
        # process turns gRPC's default SO_REUSEPORT off so a held port fails to bind.
        self.reuse_port = False

    async def _build(self):
        from serving.modelserver import session_config
        from serving.modelserver.batching import BatchScheduler
        from serving.modelserver.dataplane import ServingDataPlane
        from serving.modelserver.metrics import Metrics

        f = self.flags
        cpus = os.cpu_count() or 1
        session_config.apply_to_eager_context(self.configs.session_config)
        self.metrics = Metrics()
        self.infer_executor = ThreadPoolExecutor(
            max_workers=max(4, 2 * cpus), thread_name_prefix="inference"
        )
        self.load_executor = ThreadPoolExecutor(
            max_workers=max(2, f.num_load_threads or 4 * cpus), thread_name_prefix="load"
        )
        options = manager_options(f, session_config=self.configs.session_config)
        self.manager = self._make_manager(options)
        scheduler = None
        if self.configs.batching is not None:
            scheduler = BatchScheduler(self.configs.batching, self.infer_executor, self.metrics)
        self.dataplane = ServingDataPlane(
            self.manager,
            self.infer_executor,
            batch_scheduler=scheduler,
            metrics=self.metrics,
            enable_signature_method_name_check=f.enable_signature_method_name_check,
        )

    def _make_manager(self, options):
        from serving.modelserver.manager import ModelManager

        return ModelManager(options, self.load_executor, self.metrics)

    def _announce(self, what: str, port: int) -> None:
        """The ready lines that process.py and the backends wait for."""
        if what == "grpc":
            log.info("Running gRPC ModelServer at %s:%d ...", self.flags.bind_address, port)
        else:
            log.info("Exporting HTTP/REST API at:localhost:%d ...", port)

    def _customize_rest_app(self, app) -> None:
        """Hook before the REST app starts (workers answer the monitoring path themselves)."""

    async def run(self) -> int:
        await self._build()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        # Polling runs while the initial load waits: a version may appear only later.
        self.manager.start_polling()
        initial = loop.create_task(
            self.manager.apply_config(self.configs.model_config, initial=True)
        )
        stopper = loop.create_task(self._stop.wait())
        await asyncio.wait([initial, stopper], return_when=asyncio.FIRST_COMPLETED)
        if not initial.done():  # stopped while the models were still loading
            initial.cancel()
            await self.manager.stop()
            self.load_executor.shutdown(wait=False, cancel_futures=True)
            return 0
        stopper.cancel()
        try:
            initial.result()
        except errors.ServingError as exc:
            print(f"Failed to start server. Error: {_status_text(exc)}", file=sys.stderr, flush=True)
            await self.manager.stop()
            return EXIT_BAD_FLAGS
        config_poll = None
        if self.flags.model_config_file and self.flags.model_config_file_poll_wait_seconds > 0:
            config_poll = loop.create_task(self._poll_config_file())

        grpc_server = await self._start_grpc()
        if grpc_server is None:
            await self.manager.stop()
            return EXIT_BAD_FLAGS
        runner = await self._start_rest()

        await self._stop.wait()
        log.info("Received stop signal; draining in-flight requests")
        grace = max(0.0, self.flags.shutdown_grace_seconds)
        if config_poll is not None:
            config_poll.cancel()
        if self.health is not None:
            await self.health.shutdown()
        stops = [grpc_server.stop(grace)]
        if runner is not None:
            stops.append(runner.cleanup())
        await asyncio.gather(*stops, return_exceptions=True)
        await self.manager.stop()
        self.infer_executor.shutdown(wait=False, cancel_futures=True)
        self.load_executor.shutdown(wait=False, cancel_futures=True)
        log.info("Server stopped")
        return 0

    async def _start_grpc(self):
        """server.cc: a TCP listener unless ``--port=0``, a Unix-socket listener when
        ``--grpc_socket_path`` is set, both with the same credentials; the health service
        when asked for."""
        import grpc

        from serving.modelserver import grpc_api, grpc_security
        from serving.modelserver.health import HealthService

        f = self.flags
        options = grpc_api.server_options(parse_channel_arguments(f.grpc_channel_arguments))
        options.append(("grpc.so_reuseport", 1 if self.reuse_port else 0))
        server = grpc.aio.server(options=options)
        grpc_api.add_services(
            server,
            self.dataplane,
            self.metrics,
            tensor_content=f.enable_serialization_as_tensor_content,
        )
        self.health = HealthService() if f.enable_grpc_healthcheck_service else None
        if self.health is not None:
            self.health.add_to(server)
        tls = self.configs.tls
        if tls is None:
            log.info("Using InsecureServerCredentials")
        else:
            log.info("Using SSL credentials")
        addresses = []
        if f.port != 0:
            addresses.append(f"{f.bind_address}:{f.port}")
        if f.grpc_socket_path:
            addresses.append(f"unix:{f.grpc_socket_path}")
        for address in addresses:
            try:
                if tls is None:
                    port = server.add_insecure_port(address)
                else:
                    port = server.add_secure_port(
                        address, grpc_security.server_credentials(tls)
                    )
            except RuntimeError as exc:
                port = 0
                log.error("%s", exc)
            if not port:
                # With TLS the usual cause is a key or certificate gRPC cannot use (it logs
                # why); TF Serving's BuildAndStart then fails as a whole.
                detail = (
                    "Failed to BuildAndStart gRPC server"
                    if tls is not None
                    else f"Failed to bind to address {address}"
                )
                code = "INVALID_ARGUMENT" if tls is not None else "UNKNOWN"
                print(f"Failed to start server. Error: {code}: {detail}", file=sys.stderr, flush=True)
                return None
            if not address.startswith("unix:"):
                self.grpc_port = port
        await server.start()
        if self.health is not None:
            await self.health.mark_serving()
        if f.port != 0:
            self._announce("grpc", self.grpc_port)
        if f.grpc_socket_path:
            log.info("Running gRPC ModelServer at UNIX socket %s ...", f.grpc_socket_path)
        return server

    async def _start_rest(self):
        f = self.flags
        if f.rest_api_port == 0:
            return None
        if f.rest_api_port == f.port:
            log.error(
                "--rest_api_port cannot be same as --port. Please use a different port for "
                "HTTP/REST API. Skipped exporting HTTP/REST API."
            )
            return None
        from aiohttp import web

        from serving.modelserver import rest

        prom = self.configs.prometheus
        app = rest.create_rest_app(
            self.dataplane,
            self.metrics,
            rest_api_timeout_ms=f.rest_api_timeout_in_ms,
            monitoring_path=prom.path if prom.enabled else None,
            enable_cors=f.rest_api_enable_cors_support,
        )
        self._customize_rest_app(app)
        runner = web.AppRunner(app, **rest.RUNNER_OPTIONS)
        await runner.setup()
        grace = max(0.0, f.shutdown_grace_seconds)
        site = web.TCPSite(
            runner,
            f.bind_address,
            f.rest_api_port,
            shutdown_timeout=grace,
            reuse_port=self.reuse_port or None,
        )
        try:
            await site.start()
        except OSError as exc:
            log.error("Failed to start HTTP Server at localhost:%d: %s", f.rest_api_port, exc)
            await runner.cleanup()
            return None
        self.rest_port = f.rest_api_port
        self._announce("rest", f.rest_api_port)
        return runner

    async def _poll_config_file(self) -> None:
        """server.cc's PollFilesystemAndReloadConfig: parse the file, ServerCore::ReloadConfig;
        either failing is logged and the old config keeps serving. A file caught empty while
        it is rewritten in place parses to a config with nothing set, which ReloadConfig
        refuses once a ModelConfigList serves."""
        from serving.modelserver import config

        wait = self.flags.model_config_file_poll_wait_seconds
        while True:
            await asyncio.sleep(wait)
            try:
                new = config.read_model_server_config(self.flags.model_config_file)
            except errors.ServingError as exc:
                detail = getattr(exc, "detail", "")
                log.error(
                    "Failed to read ModelServerConfig file: %s%s",
                    exc.message,
                    f" ({detail})" if detail else "",
                )
                continue
            if new == self.manager.config:
                continue
            log.info("Model config file changed; reloading")
            try:
                await self.manager.reload_config(new)
            except errors.ServingError as exc:
                log.error("PollFilesystemAndReloadConfig failed to ReloadConfig: %s", exc.message)


def main(argv: list[str] | None = None) -> int:
    flags = parse_or_exit(list(sys.argv[1:] if argv is None else argv))
    if flags.version:
        print(version_text(), flush=True)
        return 0
    setup_logging()
    try:
        validate_flags(flags)
        configs = read_configs(flags)
        check_ports_free(flags)
    except StartupError as exc:
        if exc.detail:
            print(exc.detail, file=sys.stderr)
        print(f"Failed to start server. Error: {_status_text(exc.error)}", file=sys.stderr, flush=True)
        return EXIT_BAD_FLAGS
    if flags.num_workers > 1:
        from serving.modelserver.workers.control_plane import run_control_plane

        return run_control_plane(flags, configs, list(sys.argv[1:] if argv is None else argv))
    from serving.modelserver import event_loop

    return event_loop.run(ModelServer(flags, configs).run())
