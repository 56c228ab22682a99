#!/usr/bin/env python3
"""Writes the seeds of h2_input_fuzzer: HTTP/2 frames a gRPC client sends after the connection
preface (the target sends the preface itself). Headers are HPACK literals without indexing, so
that no encoder is needed; the message bodies are grpc_message_fuzzer's seeds with gRPC's 5-byte
prefix. Run after make_proto_seeds.sh; the seeds are committed."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
RLS = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
HEALTH = "/grpc.health.v1.Health/Check"


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def literal(name, value):
    out = b"\x00"
    for s in (name.encode(), value.encode()):
        assert len(s) < 127
        out += bytes([len(s)]) + s
    return out


def headers(stream, path, end_stream=False, method="POST", content_type="application/grpc"):
    block = b"".join(literal(n, v) for n, v in [
        (":method", method), (":scheme", "http"), (":path", path), (":authority", "localhost"),
        ("content-type", content_type), ("te", "trailers")])
    return frame(0x1, 0x4 | (0x1 if end_stream else 0), stream, block)


def grpc_body(message):
    return b"\x00" + struct.pack(">I", len(message)) + message


def data(stream, payload, end_stream=True):
    return frame(0x0, 0x1 if end_stream else 0, stream, payload)


SETTINGS = frame(0x4, 0, 0)
seeds = {}
messages = sorted(os.listdir(os.path.join(HERE, "grpc_message_fuzzer")))
for i, name in enumerate(messages):
    with open(os.path.join(HERE, "grpc_message_fuzzer", name), "rb") as f:
        seeds["call_" + name] = SETTINGS + headers(1, RLS) + data(1, grpc_body(f.read()))
with open(os.path.join(HERE, "grpc_message_fuzzer", messages[0]), "rb") as f:
    body = grpc_body(f.read())
# Two calls on one connection, the second's message in two DATA frames.
seeds["two_calls_split"] = (SETTINGS + headers(1, RLS) + data(1, body) + headers(3, RLS) +
                            data(3, body[:4], end_stream=False) + data(3, body[4:]))
seeds["health"] = SETTINGS + headers(1, HEALTH) + data(1, grpc_body(b""))
seeds["get_and_wrong_type"] = (SETTINGS + headers(1, RLS, end_stream=True, method="GET") +
                               headers(3, RLS, content_type="text/plain") + data(3, body))
# A ping, a window update, a reset and a goaway around a call.
seeds["control_frames"] = (SETTINGS + frame(0x6, 0, 0, b"12345678") +
                           frame(0x8, 0, 0, struct.pack(">I", 65535)) + headers(1, RLS) +
                           frame(0x3, 0, 1, struct.pack(">I", 8)) + headers(3, RLS) +
                           data(3, body) + frame(0x7, 0, 0, struct.pack(">II", 3, 0)))
# The headers split over HEADERS + CONTINUATION.
block = b"".join(literal(n, v) for n, v in [(":method", "POST"), (":scheme", "http"),
                                              (":path", RLS), ("content-type", "application/grpc")])
seeds["continuation"] = (SETTINGS + frame(0x1, 0, 1, block[:20]) + frame(0x9, 0x4, 1, block[20:]) +
                         data(1, body))
out_dir = os.path.join(HERE, "h2_input_fuzzer")
os.makedirs(out_dir, exist_ok=True)
for name, payload in seeds.items():
    with open(os.path.join(out_dir, name), "wb") as f:
        f.write(payload)
