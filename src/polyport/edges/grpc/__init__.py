"""The gRPC edge: every method on a grpc.aio server, with reflection, health and events."""

from polyport.core.errors import MissingExtra

try:
    from polyport.edges.grpc.binding import GrpcEdge, events_proto, service_proto
except ImportError as exc:  # grpcio, protobuf and friends come with the 'grpc' extra
    if exc.name and exc.name.split(".")[0] in {
        "grpc",
        "grpc_health",
        "grpc_reflection",
        "google",
    }:
        raise MissingExtra("grpc", "the gRPC edge") from exc
    raise

__all__ = ["GrpcEdge", "events_proto", "service_proto"]
