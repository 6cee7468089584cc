#!/usr/bin/env python3
"""A gRPC server for the tests (Debian's python3-grpcio), with generic
handlers on raw bytes so that no generated code is needed:

  /test.Echo/Unary  answers b"unary:" + the request, trailing metadata
                    x-trailer: yes
  /test.Echo/Bidi   answers each message as it comes: b"echo:" + message
  /test.Echo/Fail   fails with NOT_FOUND, "no such thing"
  /test.Echo/Slow   answers b"slow" after 1.5 s

Usage: grpc_peer.py PORT [CERT KEY]   (TLS with CERT and KEY, else h2c)
Prints "ready" once it serves."""
import sys
import time
from concurrent import futures

import grpc


def unary(request, context):
    context.set_trailing_metadata((("x-trailer", "yes"),))
    return b"unary:" + request


def bidi(requests, context):
    for m in requests:
        yield b"echo:" + m


def fail(request, context):
    context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")


def slow(request, context):
    time.sleep(1.5)
    return b"slow"


class Handler(grpc.GenericRpcHandler):
    def service(self, details):
        m = details.method
        if m == "/test.Echo/Unary":
            return grpc.unary_unary_rpc_method_handler(unary)
        if m == "/test.Echo/Bidi":
            return grpc.stream_stream_rpc_method_handler(bidi)
        if m == "/test.Echo/Fail":
            return grpc.unary_unary_rpc_method_handler(fail)
        if m == "/test.Echo/Slow":
            return grpc.unary_unary_rpc_method_handler(slow)
        return None


def main():
    port = int(sys.argv[1])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), handlers=[Handler()])
    addr = "127.0.0.1:%d" % port
    if len(sys.argv) > 3:
        with open(sys.argv[2], "rb") as f:
            cert = f.read()
        with open(sys.argv[3], "rb") as f:
            key = f.read()
        server.add_secure_port(addr, grpc.ssl_server_credentials(((key, cert),)))
    else:
        server.add_insecure_port(addr)
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
