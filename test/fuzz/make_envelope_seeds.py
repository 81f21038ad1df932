#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_envelope: valid envelopes of every kind
(docs/protocol.md §3), msgpack-encoded by the small encoder below (no dependency)."""
import os
import struct
import sys


def pack(v):
    if v is None:
        return b"\xc0"
    if v is True:
        return b"\xc3"
    if v is False:
        return b"\xc2"
    if isinstance(v, int):
        if 0 <= v < 128:
            return bytes([v])
        if -32 <= v < 0:
            return struct.pack("b", v)
        return b"\xd3" + struct.pack(">q", v)
    if isinstance(v, float):
        return b"\xcb" + struct.pack(">d", v)
    if isinstance(v, bytes):
        return b"\xc4" + bytes([len(v)]) + v if len(v) < 256 else b"\xc5" + struct.pack(">H", len(v)) + v
    if isinstance(v, str):
        b = v.encode()
        return (bytes([0xA0 | len(b)]) if len(b) < 32 else b"\xd9" + bytes([len(b)])) + b
    if isinstance(v, list):
        return bytes([0x90 | len(v)]) + b"".join(pack(x) for x in v)
    if isinstance(v, dict):
        return bytes([0x80 | len(v)]) + b"".join(pack(k) + pack(x) for k, x in v.items())
    raise TypeError(v)


attachment = {"data": b"\x89PNG\r\n", "mimetype": "image/png", "filename": "a.png", "source_url": ""}
seeds = {
    "inbound_minimal": {"v": 1, "type": "inbound", "platform": "redis", "channel_id": "c1", "content": "hi"},
    "inbound_full": {"v": 1, "type": "inbound", "platform": "discord", "channel_id": "42", "user_id": "u",
                     "username": "Ann", "content": "hello @Star", "is_addressed": True,
                     "attachments": [attachment], "room_name": "general", "timestamp": 1700000000.5,
                     "message_id": "m1", "reply_to": "m0", "unified_user_id": "uu", "user_aliases": ["a", "b"],
                     "guild_id": "g", "guild_name": "G", "is_dm": False, "member_roles": ["admin"],
                     "member_count": 12, "trace_id": "t", "response_nonce": "n", "extra": {"k": "v"}},
    "inbound_seed_base64": {"platform": "web", "channel_id": "c", "content": "x",
                            "attachments": [{"data": "aGVsbG8=", "mimetype": "text/plain"}]},
    "outbound_message": {"v": 1, "type": "message", "channel_id": "c", "text": "reply", "trace_id": "t"},
    "outbound_file": {"v": 1, "type": "file", "channel_id": "c", "file_data": b"abc", "filename": "f.txt",
                      "mimetype": "text/plain"},
    "outbound_buttons": {"v": 1, "type": "buttons", "channel_id": "c", "text": "pick",
                         "buttons": [{"label": "A", "id": "a", "url": ""}]},
    "outbound_reaction": {"v": 1, "type": "reaction", "channel_id": "c", "message_id": "m", "emoji": "+1"},
    "outbound_rpc": {"v": 1, "type": "rpc_request", "rpc_method": "fetch_channel_history",
                     "rpc_args": "{\"limit\":5}", "reply_key": "r", "request_id": "q", "deadline": 1700000010.0},
    "outbound_turn_complete": {"v": 1, "type": "turn_complete", "channel_id": "c", "response_nonce": "n"},
    "tool_request": {"v": 1, "type": "tool_request", "request_id": "r", "reply_stream": "s",
                     "tool_name": "calculator", "tool_args": "{\"expression\":\"1+1\"}",
                     "tool_ctx": {"platform": "redis", "channel_id": "c"}, "deadline": 1700000010.0},
    "tool_reply": {"v": 1, "type": "tool_reply", "request_id": "r", "ok": True, "result": "2",
                   "media": [attachment], "trace_id": "t"},
}

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus", "fuzz_envelope")
os.makedirs(out, exist_ok=True)
for name, value in seeds.items():
    with open(os.path.join(out, name + ".msgpack"), "wb") as f:
        f.write(pack(value))
