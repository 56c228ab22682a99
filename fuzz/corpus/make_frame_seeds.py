#!/usr/bin/env python3
"""Writes the seeds of peer_frame_fuzzer (fuzz/peer_frame_fuzzer.cc): peer-protocol byte streams
(13-byte frame headers, hand-encoded protobuf payloads) with the fuzzer's fixed key and nonces,
so the valid handshakes are accepted and the fuzzer starts from the accepting paths too. The
first byte of each seed is the fuzzer's chunk size (0: the whole stream in one read). Run from
anywhere; the seeds are committed, this only remakes them after a protocol change."""

import hashlib
import hmac
import os
import struct

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peer_frame_fuzzer")
KEY = b"fuzz-cluster-key"
NONCE_C = b"c" * 32
NONCE_S = b"s" * 32
VERSION = 2

HELLO, CHALLENGE, AUTH, FORWARD, PING = 1, 2, 3, 10, 16


def frame(kind, call_id, payload, length=None):
    size = len(payload) if length is None else length
    return struct.pack("<IBQ", size, kind, call_id) + payload


def varint(n):
    out = b""
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out += bytes([byte | 0x80])
        else:
            return out + bytes([byte])


def field_varint(number, value):
    return varint(number << 3) + varint(value)


def field_bytes(number, value):
    return varint((number << 3) | 2) + varint(len(value)) + value


def proof(role, id_c, id_s):
    transcript = b""
    for part in (b"floodgate-peer-auth", role, NONCE_C, NONCE_S, id_c, id_s, str(VERSION).encode()):
        transcript += struct.pack("<I", len(part)) + part
    return hmac.new(KEY, transcript, hashlib.sha256).digest()


def hello(node_id, version=VERSION, nonce=NONCE_C):
    return field_varint(1, version) + field_bytes(2, node_id) + field_bytes(3, nonce)


def write(name, chunk, stream):
    with open(os.path.join(HERE, name), "wb") as out:
        out.write(bytes([chunk]) + stream)


os.makedirs(HERE, exist_ok=True)
challenge = (field_varint(1, VERSION) + field_bytes(2, b"a") + field_bytes(3, NONCE_S) +
             field_bytes(4, proof(b"server", b"b", b"a")))
auth = field_bytes(1, proof(b"client", b"b", b"a"))
forward = field_varint(1, VERSION) + field_bytes(2, b"b")
# A member's side of a connection: the whole handshake, then two calls, in one read.
write("client_stream", 0, frame(HELLO, 0, hello(b"b")) + frame(AUTH, 0, auth) +
      frame(FORWARD, 1, forward) + frame(PING, 2, b""))
# The accepting node's challenge, a byte at a time.
write("server_challenge", 1, frame(CHALLENGE, 0, challenge))
# Refusals: another protocol version, a non-member, a wrong proof, in 7-byte reads.
write("refusals", 7, frame(HELLO, 0, hello(b"b", version=1)) + frame(HELLO, 0, hello(b"z")) +
      frame(AUTH, 0, field_bytes(1, b"\x00" * 32)))
# Broken streams: a frame over 16 MiB, an unknown type.
write("oversized", 0, frame(FORWARD, 3, b"", length=(16 << 20) + 1))
write("unknown_type", 5, frame(HELLO, 0, hello(b"c")) + frame(7, 4, b"xx"))
