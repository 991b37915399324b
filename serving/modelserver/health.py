"""``--enable_grpc_healthcheck_service``: the standard ``grpc.health.v1.Health`` service.

server.cc enables gRPC's default health service (the server as a whole, service ``""``, is
SERVING once it runs) and marks ``ModelService`` and ``PredictionService`` (those exact names,
not the full proto names) SERVING after ``BuildAndStart``; that is after every configured model
loaded. On shutdown every status turns NOT_SERVING, as gRPC's default service does.
"""

from __future__ import annotations

SERVICES = ("", "ModelService", "PredictionService")


class HealthService:
    def __init__(self) -> None:
        from grpc_health.v1 import health

        self.servicer = health.aio.HealthServicer()

    def add_to(self, server) -> None:
        from grpc_health.v1 import health_pb2_grpc

        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)

    async def mark_serving(self) -> None:
        from grpc_health.v1 import health_pb2

        for name in SERVICES:
            await self.servicer.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def shutdown(self) -> None:
        await self.servicer.enter_graceful_shutdown()
