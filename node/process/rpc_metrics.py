"""A gRPC server interceptor that feeds `node.process.metrics`: every request's latency and status
code, the bytes each Fetch stream serves (listed as a transfer while it runs), advertisements
refused for bad signatures, and requests refused as rate limited (RESOURCE_EXHAUSTED).

    grpc.server(pool, interceptors=[MetricsInterceptor()])

It only observes: requests and replies pass through unchanged, and servicers stay unaware of it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from node.process import metrics
from protos import mergenet_pb2 as pb

FETCH_METHOD = "/mergenet.v1.Transfer/Fetch"


class MetricsInterceptor(grpc.ServerInterceptor):
    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
                          details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None:
            return None
        method = details.method
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _timed_unary(method, handler.unary_unary), handler.request_deserializer, handler.response_serializer)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _timed_stream(method, handler.unary_stream), handler.request_deserializer,
                handler.response_serializer)
        return handler  # no client-streaming methods in the mergenet services


def _code(context: grpc.ServicerContext, failed: bool) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    return grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK


def _finish(method: str, context: grpc.ServicerContext, start: float, failed: bool) -> None:
    code = _code(context, failed)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        metrics.record_refused(metrics.RATE_LIMITED)
    metrics.record_rpc(method, code.name, time.perf_counter() - start)


def _timed_unary(method: str, behavior: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[..., Any]:
    def run(request: Any, context: grpc.ServicerContext) -> Any:
        start = time.perf_counter()
        failed = True
        try:
            reply = behavior(request, context)
            failed = False
        finally:
            _finish(method, context, start, failed)
        if isinstance(reply, pb.AdvertiseReply) and reply.rejected:
            metrics.record_refused(metrics.BAD_AD, reply.rejected)
        return reply
    return run


def _timed_stream(method: str, behavior: Callable[[Any, grpc.ServicerContext], Iterator[Any]]) -> Callable[..., Any]:
    def run(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        start = time.perf_counter()
        fetch = method == FETCH_METHOD
        key = metrics.TRANSFERS.begin(metrics.SERVED, str(request.digest), context.peer()) if fetch else None
        failed = True
        try:
            for message in behavior(request, context):
                if key is not None:
                    metrics.record_served(len(message.data))
                    metrics.TRANSFERS.advance(key, len(message.data), message.total_size)
                yield message
            failed = False
        finally:
            if key is not None:
                metrics.TRANSFERS.end(key)
            _finish(method, context, start, failed)
    return run
