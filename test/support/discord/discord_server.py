#!/usr/bin/python3
"""A Discord API test server: REST (v10) + WebSocket gateway + a control API.

Implements the behaviour documented in discord/discord-api-docs (Gateway,
Opcodes and Status Codes, Rate Limits, Message and Channel resources,
Interactions) closely enough that a real client library (discord.py) runs
against it unchanged, so that our C++ Discord adapter can be tested against
it.  See README.md next to this file for what is and is not implemented.

Usage:  discord_server.py --port 0 --token TOKEN [options]
Prints one line "READY port=<n>" on stdout once it listens.

Dependencies: Debian 12 python3 + python3-aiohttp (3.8).
"""

import argparse
import asyncio
import base64
import hashlib
import json
import math
import os
import re
import secrets
import signal
import socket
import sys
import time
import zlib
from collections import deque
from datetime import datetime, timezone
from urllib.parse import unquote, parse_qs

from aiohttp import web, WSMsgType

API_VERSIONS = (9, 10)
DISCORD_EPOCH_MS = 1420070400000

# ---------------------------------------------------------------- opcodes
OP_DISPATCH = 0
OP_HEARTBEAT = 1
OP_IDENTIFY = 2
OP_PRESENCE_UPDATE = 3
OP_VOICE_STATE_UPDATE = 4
OP_RESUME = 6
OP_RECONNECT = 7
OP_REQUEST_GUILD_MEMBERS = 8
OP_INVALID_SESSION = 9
OP_HELLO = 10
OP_HEARTBEAT_ACK = 11
OP_REQUEST_SOUNDBOARD_SOUNDS = 31
OP_REQUEST_CHANNEL_INFO = 43
# Send events a client may send once identified (besides heartbeat/identify/resume).
CLIENT_COMMANDS_AFTER_IDENTIFY = {OP_PRESENCE_UPDATE, OP_VOICE_STATE_UPDATE,
                                  OP_REQUEST_GUILD_MEMBERS,
                                  OP_REQUEST_SOUNDBOARD_SOUNDS,
                                  OP_REQUEST_CHANNEL_INFO}

# ---------------------------------------------------------------- close codes
CLOSE_UNKNOWN_ERROR = 4000
CLOSE_UNKNOWN_OPCODE = 4001
CLOSE_DECODE_ERROR = 4002
CLOSE_NOT_AUTHENTICATED = 4003
CLOSE_AUTHENTICATION_FAILED = 4004
CLOSE_ALREADY_AUTHENTICATED = 4005
CLOSE_INVALID_SEQ = 4007
CLOSE_RATE_LIMITED = 4008
CLOSE_SESSION_TIMED_OUT = 4009
CLOSE_INVALID_SHARD = 4010
CLOSE_SHARDING_REQUIRED = 4011
CLOSE_INVALID_API_VERSION = 4012
CLOSE_INVALID_INTENTS = 4013
CLOSE_DISALLOWED_INTENTS = 4014
CLOSE_REASONS = {
    4000: "Unknown error.", 4001: "Unknown opcode.", 4002: "Decode error.",
    4003: "Not authenticated.", 4004: "Authentication failed.",
    4005: "Already authenticated.", 4007: "Invalid seq.", 4008: "Rate limited.",
    4009: "Session timed out.", 4010: "Invalid shard.",
    4011: "Sharding required.", 4012: "Invalid API version.",
    4013: "Invalid intent(s).", 4014: "Disallowed intent(s).",
}
# Close codes after which the session can no longer be resumed (the table's
# "Reconnect: false" codes, plus 4007/4009 whose text says "start a new one").
SESSION_ENDING_CLOSE_CODES = {4004, 4007, 4009, 4010, 4011, 4012, 4013, 4014}

# ---------------------------------------------------------------- intents
INTENT_GUILDS = 1 << 0
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_PRESENCES = 1 << 8
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_GUILD_MESSAGE_REACTIONS = 1 << 10
INTENT_GUILD_MESSAGE_TYPING = 1 << 11
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_DIRECT_MESSAGE_REACTIONS = 1 << 13
INTENT_DIRECT_MESSAGE_TYPING = 1 << 14
INTENT_MESSAGE_CONTENT = 1 << 15
VALID_INTENTS = 0
for _bit in list(range(0, 17)) + [20, 21, 24, 25]:
    VALID_INTENTS |= 1 << _bit
PRIVILEGED_INTENTS = INTENT_GUILD_MEMBERS | INTENT_GUILD_PRESENCES | INTENT_MESSAGE_CONTENT

# Application flags (resources/application): the *_LIMITED ones apply to
# bots in fewer than 100 servers.
APP_FLAG_GATEWAY_PRESENCE_LIMITED = 1 << 13
APP_FLAG_GATEWAY_GUILD_MEMBERS_LIMITED = 1 << 15
APP_FLAG_GATEWAY_MESSAGE_CONTENT_LIMITED = 1 << 19

# Permissions granted to @everyone in the test guilds.
DEFAULT_PERMISSIONS = ((1 << 6) | (1 << 10) | (1 << 11) | (1 << 14) | (1 << 15)
                       | (1 << 16) | (1 << 17) | (1 << 18))

# Message flags a client may set on create (resources/message: Create Message).
SETTABLE_MESSAGE_FLAGS = (1 << 2) | (1 << 12) | (1 << 13) | (1 << 15)
MESSAGE_TYPE_DEFAULT = 0
MESSAGE_TYPE_REPLY = 19

CHANNEL_GUILD_TEXT = 0
CHANNEL_DM = 1

INTERACTION_MESSAGE_COMPONENT = 3
CALLBACK_TYPES_FOR_COMPONENTS = {4, 5, 6, 7, 9}
ALL_CALLBACK_TYPES = {1, 4, 5, 6, 7, 8, 9, 10, 12}

PRESENCE_STATUSES = {"online", "dnd", "idle", "invisible", "offline"}


def now_s():
    return time.time()


def iso(ts):
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="microseconds")


def dumps(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def is_snowflake(v):
    return isinstance(v, str) and v.isdigit() and len(v) <= 20 or (
        isinstance(v, int) and not isinstance(v, bool) and v >= 0)


# ============================================================ snowflakes
class Snowflakes:
    """Twitter-format snowflakes with the Discord epoch (reference: Snowflakes)."""

    def __init__(self, worker=1, process=1):
        self.worker = worker & 0x1F
        self.process = process & 0x1F
        self.last_ms = 0
        self.inc = 0

    def next(self):
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        if ms <= self.last_ms:
            ms = self.last_ms
            self.inc += 1
            if self.inc > 0xFFF:
                ms += 1
                self.inc = 0
        else:
            self.inc = 0
        self.last_ms = ms
        return str((ms << 22) | (self.worker << 17) | (self.process << 12) | self.inc)


# ============================================================ rate limits
class Bucket:
    """A fixed-window bucket: `limit` requests per `window` seconds, the window
    starting with the first request after the previous one expired."""

    def __init__(self, limit, window):
        self.limit = limit
        self.window = window
        self.reset_at = 0.0
        self.remaining = limit

    def take(self, now):
        """Returns (allowed, remaining, reset_at)."""
        if now >= self.reset_at:
            self.reset_at = now + self.window
            self.remaining = self.limit
        if self.remaining <= 0:
            return False, 0, self.reset_at
        self.remaining -= 1
        return True, self.remaining, self.reset_at


# ============================================================ errors
class ApiError(Exception):
    def __init__(self, status, code, message, errors=None, headers=None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors
        self.headers = headers or {}

    def body(self):
        b = {"message": self.message, "code": self.code}
        if self.errors is not None:
            b["errors"] = self.errors
        return b


class FormErrors:
    """Collects errors in Discord's nested "Invalid Form Body" format
    (reference: Error Messages)."""

    def __init__(self):
        self.tree = {}

    def add(self, path, code, message):
        node = self.tree
        for key in path:
            node = node.setdefault(str(key), {})
        node.setdefault("_errors", []).append({"code": code, "message": message})

    def __bool__(self):
        return bool(self.tree)

    def raise_if_any(self):
        if self.tree:
            raise ApiError(400, 50035, "Invalid Form Body", self.tree)


def unknown(kind):
    codes = {"channel": (10003, "Unknown Channel"), "message": (10008, "Unknown Message"),
             "emoji": (10014, "Unknown Emoji"), "interaction": (10062, "Unknown interaction"),
             "guild": (10004, "Unknown Guild"), "user": (10013, "Unknown User")}
    code, msg = codes[kind]
    return ApiError(404, code, msg)


# ============================================================ gateway objects
class Connection:
    _ids = 0

    def __init__(self, server, ws, transport, query, path):
        Connection._ids += 1
        self.id = Connection._ids
        self.server = server
        self.ws = ws
        self.transport = transport
        self.query = query
        self.path = path
        self.via_resume_url = path.endswith("-resume")
        self.zlib = zlib.compressobj() if query.get("compress") == "zlib-stream" else None
        self.lock = asyncio.Lock()
        self.session = None
        self.hello_sent = False
        self.opened_at = now_s()
        self.last_heartbeat_at = None
        self.heartbeats = 0
        self.cmd_window_start = 0.0
        self.cmd_count = 0
        self.closed = False
        self.close_code = None
        self.closed_by = None
        self.frames_sent = 0
        self.binary_frames_sent = 0
        self.tasks = []
        self.pending_close = None

    @property
    def open(self):
        return not self.closed and not self.ws.closed

    async def send_obj(self, obj):
        return await self.send_text(dumps(obj), obj)

    async def send_text(self, text, obj=None):
        async with self.lock:
            if not self.open:
                return False
            try:
                if self.zlib is not None:
                    data = self.zlib.compress(text.encode("utf-8"))
                    data += self.zlib.flush(zlib.Z_SYNC_FLUSH)
                    chunk = int(self.server.cfg.zlib_chunk_size or 0)
                    pieces = [data]
                    if chunk > 0:
                        # Frames of `chunk` bytes; the last frame always holds the
                        # whole 00 00 ff ff suffix (clients test each frame's tail).
                        body = data[:-4]
                        pieces = [body[i:i + chunk] for i in range(0, len(body), chunk)]
                        if pieces and len(pieces[-1]) + 4 <= max(chunk, 4):
                            pieces[-1] += data[-4:]
                        else:
                            pieces.append(data[-4:])
                        if pieces[-1][-4:] != data[-4:] or b"".join(pieces) != data:
                            pieces = [data]
                    for piece in pieces:
                        await self.ws.send_bytes(piece)
                        self.frames_sent += 1
                        self.binary_frames_sent += 1
                else:
                    await self.ws.send_str(text)
                    self.frames_sent += 1
            except (ConnectionResetError, RuntimeError, OSError):
                self.closed = True
                return False
        if obj is not None:
            self.server.record_sent(self, obj)
        return True

    async def send_raw(self, text=None, data=None, through_zlib=True):
        """Test hook: send arbitrary frames (malformed JSON, invalid zlib...)."""
        async with self.lock:
            if not self.open:
                return False
            try:
                if text is not None:
                    payload = text.encode("utf-8")
                    if self.zlib is not None and through_zlib:
                        payload = self.zlib.compress(payload) + self.zlib.flush(zlib.Z_SYNC_FLUSH)
                        await self.ws.send_bytes(payload)
                    else:
                        await self.ws.send_str(text)
                if data is not None:
                    if self.zlib is not None and through_zlib:
                        data = self.zlib.compress(data) + self.zlib.flush(zlib.Z_SYNC_FLUSH)
                    await self.ws.send_bytes(data)
            except (ConnectionResetError, RuntimeError, OSError):
                self.closed = True
                return False
        return True

    async def close(self, code, reason=None):
        if self.closed:
            return
        self.closed_by = "server"
        self.close_code = code
        self.server.on_server_close(self, code)
        msg = (reason or CLOSE_REASONS.get(code, "")).encode("utf-8")[:120]
        # When called from another task, ws.close() first wakes the handler's
        # receive loop; the handler then finishes the close with this code
        # (otherwise aiohttp's write_eof() would close with 1000 first).
        self.pending_close = (code, msg)
        try:
            await self.ws.close(code=code, message=msg)
        except Exception:
            pass
        self.closed = True

    def drop(self):
        """Abrupt TCP drop, no close frame."""
        self.closed_by = "server-drop"
        self.close_code = 1006
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def info(self):
        return {"id": self.id, "open": self.open, "path": self.path,
                "via_resume_url": self.via_resume_url,
                "query": self.query, "zlib_stream": self.zlib is not None,
                "session_id": self.session.id if self.session else None,
                "opened_at": self.opened_at, "heartbeats": self.heartbeats,
                "frames_sent": self.frames_sent, "binary_frames_sent": self.binary_frames_sent,
                "close_code": self.close_code, "closed_by": self.closed_by}


class Session:
    def __init__(self, server, sid, shard_id, num_shards, intents, properties, shard_given):
        self.server = server
        self.id = sid
        self.shard_id = shard_id
        self.num_shards = num_shards
        self.shard_given = shard_given
        self.intents = intents
        self.properties = properties
        self.seq = 0
        self.buffer = deque()          # (seq, t, text)
        self.conn = None
        self.invalidated = False
        self.invalidated_reason = None
        self.created_at = now_s()
        self.disconnected_at = None
        self.presence = None
        self.presence_history = []
        self.ack_heartbeats = None    # None: follow server config
        self.resumes = 0
        self.connections = []

    def alive(self):
        if self.invalidated:
            return False
        if self.conn is not None:
            return True
        timeout = self.server.cfg.session_timeout_s
        return self.disconnected_at is None or now_s() - self.disconnected_at < timeout

    def routes(self, guild_id):
        if guild_id is None:
            return self.shard_id == 0
        return (int(guild_id) >> 22) % self.num_shards == self.shard_id

    def invalidate(self, reason):
        if not self.invalidated:
            self.invalidated = True
            self.invalidated_reason = reason

    async def dispatch(self, t, d, buffered=True):
        self.seq += 1
        payload = {"op": OP_DISPATCH, "d": d, "s": self.seq, "t": t}
        text = dumps(payload)
        if buffered:
            self.buffer.append((self.seq, t, text))
            while len(self.buffer) > self.server.cfg.replay_buffer:
                self.buffer.popleft()
        conn = self.conn
        if conn is not None and conn.open:
            ok = await conn.send_text(text, payload)
            return "delivered" if ok else "queued"
        return "queued"

    def info(self):
        return {"session_id": self.id, "shard": [self.shard_id, self.num_shards],
                "shard_given": self.shard_given, "intents": self.intents,
                "seq": self.seq, "connected": self.conn is not None and self.conn.open,
                "connection_id": self.conn.id if self.conn else None,
                "alive": self.alive(), "invalidated": self.invalidated,
                "invalidated_reason": self.invalidated_reason,
                "presence": self.presence, "resumes": self.resumes,
                "buffered": len(self.buffer), "created_at": self.created_at,
                "disconnected_at": self.disconnected_at,
                "properties": self.properties}


# ============================================================ configuration
class Config:
    """Runtime-changeable settings (POST /_test/config)."""

    FIELDS = {
        "shards": int, "max_concurrency": int, "session_start_total": int,
        "heartbeat_ms": int, "heartbeat_timeout_factor": float,
        "privileged_allowed": int, "gateway_limit": int, "gateway_window_s": float,
        "max_payload_bytes": int, "max_guilds_per_shard": int, "shard_multiple": int,
        "session_timeout_s": float, "identify_window_s": float, "resume_delay_ms": int,
        "hello_delay_ms": int, "ack_heartbeats": bool, "zlib_chunk_size": int,
        "reconnect_close_after_s": float, "replay_buffer": int,
        "channel_limit": int, "channel_window_s": float, "route_limit": int,
        "route_window_s": float, "reaction_limit": int, "reaction_window_s": float,
        "global_limit": int, "global_window_s": float, "nonce_window_s": float,
        "upload_limit": int, "file_limit": int, "interaction_deadline_s": float,
        "interaction_token_ttl_s": float,
    }

    def __init__(self, args):
        self.shards = args.shards
        self.max_concurrency = args.max_concurrency
        self.session_start_total = args.session_start_total
        self.heartbeat_ms = args.heartbeat_ms
        self.heartbeat_timeout_factor = args.heartbeat_timeout_factor
        self.privileged_allowed = 0 if args.no_privileged else PRIVILEGED_INTENTS
        self.gateway_limit = args.gateway_limit
        self.gateway_window_s = args.gateway_window_s
        self.max_payload_bytes = 4096
        self.max_guilds_per_shard = args.max_guilds_per_shard
        self.shard_multiple = args.shard_multiple
        self.session_timeout_s = args.session_timeout_s
        self.identify_window_s = args.identify_window_s
        self.resume_delay_ms = 0
        self.hello_delay_ms = 0
        self.ack_heartbeats = True
        self.zlib_chunk_size = args.zlib_chunk_size
        self.reconnect_close_after_s = 5.0
        self.replay_buffer = 10000
        self.channel_limit = args.channel_limit
        self.channel_window_s = args.channel_window_s
        self.route_limit = args.route_limit
        self.route_window_s = args.route_window_s
        self.reaction_limit = args.reaction_limit
        self.reaction_window_s = args.reaction_window_s
        self.global_limit = args.global_limit
        self.global_window_s = 1.0
        self.nonce_window_s = args.nonce_window_s
        self.upload_limit = args.upload_limit
        self.file_limit = args.file_limit or args.upload_limit
        self.interaction_deadline_s = 3.0
        self.interaction_token_ttl_s = 900.0

    def update(self, values):
        for k, v in values.items():
            if k not in self.FIELDS:
                raise ValueError(f"unknown config key {k!r}")
            setattr(self, k, self.FIELDS[k](v))

    def as_dict(self):
        return {k: getattr(self, k) for k in self.FIELDS}


# ============================================================ the server
class DiscordTestServer:
    def __init__(self, args):
        self.args = args
        self.token = args.token
        self.cfg = Config(args)
        self.port = None
        self.flakes = Snowflakes()
        self.started_at = now_s()
        self.app_start_limit_reset_at = self.started_at + 86400
        self.session_start_remaining = self.cfg.session_start_total
        self.sessions = {}
        self.connections = {}
        self.last_identify_by_key = {}
        self.records = []
        self.record_base = 0
        self.counters = {}
        self.buckets = {}
        self.global_bucket = None
        self.forced = []
        self._build_world()

    # ------------------------------------------------------------ world
    def _build_world(self):
        # Guild i gets id ((BASE + i) << 22): BASE is a multiple of lcm(1..16),
        # so guild i is routed to shard i % num_shards for num_shards <= 16.
        base_ms = ((1600000000000 - DISCORD_EPOCH_MS) // 720720) * 720720
        self.bot_user = {"id": str(((base_ms - 7) << 22) | 1), "username": self.args.bot_username,
                         "discriminator": "0", "global_name": None, "avatar": None,
                         "bot": True, "system": False, "mfa_enabled": False, "flags": 0,
                         "public_flags": 0, "verified": True, "email": None, "locale": "en-US"}
        self.owner_user = {"id": str(((base_ms - 9) << 22) | 2), "username": "guild-owner",
                           "discriminator": "0", "global_name": "Guild Owner", "avatar": None}
        self.users = {self.bot_user["id"]: self.bot_user, self.owner_user["id"]: self.owner_user}
        self.guilds = {}
        self.channels = {}
        self.messages = {}            # channel_id -> list of message dicts (ascending id)
        self.message_index = {}       # message_id -> message dict
        self.attachments = {}         # attachment_id -> (bytes, content_type, filename)
        self.nonces = {}              # (channel_id, author_id, nonce) -> (message_id, time)
        self.interactions = {}
        self.members = {}             # guild_id -> {user_id: member}
        self.joined_at = iso(self.started_at)
        self.guild_seq = 0
        for i in range(self.args.guilds):
            gid = str((base_ms + i) << 22)
            self._create_guild(gid, f"Test Guild {i}", [f"general-{i}", f"random-{i}"][: self.args.channels]
                               + [f"channel-{i}-{k}" for k in range(2, self.args.channels)])
        self.base_ms = base_ms

    def _create_guild(self, gid, name, channel_names):
        guild = {"id": gid, "name": name, "owner_id": self.owner_user["id"], "channel_ids": []}
        self.guilds[gid] = guild
        self.members[gid] = {}
        self._add_member(gid, self.bot_user)
        self._add_member(gid, self.owner_user)
        for k, cname in enumerate(channel_names):
            cid = str(int(gid) + k + 1)
            self._create_channel(cid, gid, cname, k)
        return guild

    def _create_channel(self, cid, gid, name, position=0, ctype=CHANNEL_GUILD_TEXT, recipient=None):
        ch = {"id": cid, "type": ctype, "last_message_id": None, "flags": 0}
        if gid is not None:
            ch.update({"guild_id": gid, "name": name, "position": position,
                       "permission_overwrites": [], "rate_limit_per_user": 0, "nsfw": False,
                       "topic": None, "parent_id": None})
            self.guilds[gid]["channel_ids"].append(cid)
        else:
            ch["recipients"] = [self.public_user(recipient)]
        self.channels[cid] = ch
        self.messages[cid] = []
        return ch

    def _add_member(self, gid, user):
        m = self.members[gid].get(user["id"])
        if m is None:
            m = {"user": self.public_user(user), "nick": None, "avatar": None, "banner": None,
                 "roles": [], "joined_at": iso(now_s()), "premium_since": None, "deaf": False,
                 "mute": False, "flags": 0, "pending": False,
                 "communication_disabled_until": None}
            self.members[gid][user["id"]] = m
        return m

    def public_user(self, u):
        out = {"id": u["id"], "username": u["username"], "discriminator": u.get("discriminator", "0"),
               "global_name": u.get("global_name"), "avatar": u.get("avatar")}
        if u.get("bot"):
            out["bot"] = True
        if u.get("public_flags") is not None:
            out["public_flags"] = u["public_flags"]
        return out

    def register_user(self, spec):
        if not isinstance(spec, dict) or not is_snowflake(spec.get("id")) or not spec.get("username"):
            raise ApiError(400, 50035, "Invalid Form Body",
                           {"author": {"_errors": [{"code": "BASE_TYPE_REQUIRED",
                                                    "message": "author needs id (snowflake) and username"}]}})
        uid = str(spec["id"])
        u = self.users.get(uid, {})
        u.update({"id": uid, "username": spec["username"], "discriminator": spec.get("discriminator", "0"),
                  "global_name": spec.get("global_name"), "avatar": spec.get("avatar"),
                  "bot": bool(spec.get("bot", False))})
        self.users[uid] = u
        return u

    def guild_shard(self, gid, num_shards):
        return (int(gid) >> 22) % num_shards

    def channel_obj(self, ch, with_guild_id=True):
        out = {k: v for k, v in ch.items()}
        if not with_guild_id:
            out.pop("guild_id", None)
        return out

    def everyone_role(self, gid):
        return {"id": gid, "name": "@everyone", "color": 0,
                "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
                "hoist": False, "icon": None, "unicode_emoji": None, "position": 0,
                "permissions": str(DEFAULT_PERMISSIONS), "managed": False, "mentionable": False,
                "flags": 0}

    def guild_create_payload(self, gid):
        g = self.guilds[gid]
        chans = [self.channel_obj(self.channels[c], with_guild_id=False) for c in g["channel_ids"]]
        members = list(self.members[gid].values())
        return {
            "id": gid, "name": g["name"], "icon": None, "icon_hash": None, "splash": None,
            "discovery_splash": None, "owner_id": g["owner_id"], "afk_channel_id": None,
            "afk_timeout": 300, "widget_enabled": False, "widget_channel_id": None,
            "verification_level": 0, "default_message_notifications": 0,
            "explicit_content_filter": 0, "roles": [self.everyone_role(gid)], "emojis": [],
            "features": [], "mfa_level": 0, "application_id": None,
            "system_channel_id": g["channel_ids"][0] if g["channel_ids"] else None,
            "system_channel_flags": 0, "rules_channel_id": None, "max_presences": None,
            "max_members": 500000, "vanity_url_code": None, "description": None, "banner": None,
            "premium_tier": 0, "premium_subscription_count": 0, "preferred_locale": "en-US",
            "public_updates_channel_id": None, "max_video_channel_users": 25,
            "max_stage_video_channel_users": 50, "nsfw_level": 0, "stickers": [],
            "premium_progress_bar_enabled": False, "safety_alerts_channel_id": None,
            "incidents_data": None,
            # GUILD_CREATE extra fields
            "joined_at": self.joined_at, "large": False, "unavailable": False,
            "member_count": len(members), "voice_states": [], "members": members,
            "channels": chans, "threads": [], "presences": [], "stage_instances": [],
            "guild_scheduled_events": [], "soundboard_sounds": [],
        }

    def application(self):
        flags = 0
        if self.cfg.privileged_allowed & INTENT_GUILD_PRESENCES:
            flags |= APP_FLAG_GATEWAY_PRESENCE_LIMITED
        if self.cfg.privileged_allowed & INTENT_GUILD_MEMBERS:
            flags |= APP_FLAG_GATEWAY_GUILD_MEMBERS_LIMITED
        if self.cfg.privileged_allowed & INTENT_MESSAGE_CONTENT:
            flags |= APP_FLAG_GATEWAY_MESSAGE_CONTENT_LIMITED
        return {"id": self.bot_user["id"], "name": self.bot_user["username"], "icon": None,
                "description": "", "rpc_origins": [], "bot_public": True,
                "bot_require_code_grant": False, "bot": self.public_user(self.bot_user),
                "verify_key": hashlib.sha256(self.bot_user["id"].encode()).hexdigest(),
                "owner": self.public_user(self.owner_user), "team": None, "flags": flags,
                "summary": "", "tags": [], "install_params": None,
                "approximate_guild_count": len(self.guilds)}

    # ------------------------------------------------------------ recording
    def count(self, key, n=1):
        self.counters[key] = self.counters.get(key, 0) + n

    def record(self, entry):
        entry["i"] = self.record_base + len(self.records)
        entry.setdefault("time", now_s())
        self.records.append(entry)
        if len(self.records) > 200000:
            drop = len(self.records) - 200000
            del self.records[:drop]
            self.record_base += drop
        return entry

    def record_sent(self, conn, obj):
        self.record({"kind": "gateway_sent", "connection_id": conn.id,
                     "session_id": conn.session.id if conn.session else None,
                     "op": obj.get("op"), "t": obj.get("t"), "s": obj.get("s"),
                     "d": obj.get("d") if obj.get("op") != OP_DISPATCH else None,
                     "binary": conn.zlib is not None})

    # ------------------------------------------------------------ gateway
    def gateway_url(self):
        return f"ws://127.0.0.1:{self.port}/gateway"

    def resume_gateway_url(self):
        return f"ws://127.0.0.1:{self.port}/gateway-resume"

    async def gateway_handler(self, request):
        ws = web.WebSocketResponse(autoclose=True, autoping=True, heartbeat=None,
                                   compress=False, max_msg_size=1 << 20, timeout=2.0)
        transport = request.transport
        await ws.prepare(request)
        query = {k: v for k, v in request.query.items()}
        conn = Connection(self, ws, transport, query, request.path)
        self.connections[conn.id] = conn
        self.count("gateway_connections")
        self.record({"kind": "gateway_open", "connection_id": conn.id, "path": request.path,
                     "query": query, "via_resume_url": conn.via_resume_url,
                     "headers": {"User-Agent": request.headers.get("User-Agent")}})
        try:
            # Parameters (Gateway: Connecting, Encoding and Compression).
            v = query.get("v")
            if v is not None and (not v.isdigit() or int(v) not in API_VERSIONS):
                await conn.close(CLOSE_INVALID_API_VERSION)
                return ws
            if query.get("encoding", "json") != "json":
                await conn.close(CLOSE_UNKNOWN_ERROR, "test server implements encoding=json only")
                return ws
            if query.get("compress") not in (None, "zlib-stream"):
                await conn.close(CLOSE_UNKNOWN_ERROR, "test server implements compress=zlib-stream only")
                return ws
            if self.cfg.hello_delay_ms > 0:
                conn.tasks.append(asyncio.ensure_future(self._delayed_hello(conn)))
            else:
                await self._send_hello(conn)
            conn.tasks.append(asyncio.ensure_future(self._heartbeat_watchdog(conn)))
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    raw = msg.data
                    size = len(raw.encode("utf-8"))
                elif msg.type == WSMsgType.BINARY:
                    raw = msg.data
                    size = len(raw)
                else:
                    break
                await self._on_gateway_payload(conn, raw, size)
                if conn.closed:
                    break
        finally:
            if conn.pending_close is not None and not ws.closed:
                try:
                    await ws.close(code=conn.pending_close[0], message=conn.pending_close[1])
                except Exception:
                    pass
            for t in conn.tasks:
                t.cancel()
            self._on_connection_closed(conn, ws.close_code)
        return ws

    async def _send_hello(self, conn):
        conn.hello_sent = True
        conn.last_heartbeat_at = now_s()
        await conn.send_obj({"op": OP_HELLO, "d": {"heartbeat_interval": self.cfg.heartbeat_ms},
                             "s": None, "t": None})

    async def _delayed_hello(self, conn):
        await asyncio.sleep(self.cfg.hello_delay_ms / 1000.0)
        if conn.open:
            await self._send_hello(conn)

    async def _heartbeat_watchdog(self, conn):
        # "If your app fails to send a heartbeat event in time, your connection
        # will be closed and you will be forced to Resume."
        try:
            while conn.open:
                await asyncio.sleep(0.1)
                factor = self.cfg.heartbeat_timeout_factor
                if factor <= 0 or not conn.hello_sent:
                    continue
                limit = self.cfg.heartbeat_ms / 1000.0 * factor
                if now_s() - conn.last_heartbeat_at > limit:
                    self.count("heartbeat_timeouts")
                    await conn.close(CLOSE_UNKNOWN_ERROR, "heartbeat timed out")
                    return
        except asyncio.CancelledError:
            pass

    def _on_connection_closed(self, conn, ws_close_code):
        if conn.closed_by is None:
            conn.closed_by = "client"
            conn.close_code = ws_close_code
        conn.closed = True
        s = conn.session
        if s is not None and s.conn is conn:
            s.conn = None
            s.disconnected_at = now_s()
            # Gateway: Initiating a Disconnect -- 1000/1001 from the client
            # invalidates the session; other codes or a dropped TCP keep it.
            if conn.closed_by == "client" and conn.close_code in (1000, 1001):
                s.invalidate(f"client closed with {conn.close_code}")
        self.record({"kind": "gateway_close", "connection_id": conn.id,
                     "session_id": s.id if s else None, "code": conn.close_code,
                     "by": conn.closed_by})

    def on_server_close(self, conn, code):
        s = conn.session
        if s is not None and code in SESSION_ENDING_CLOSE_CODES:
            s.invalidate(f"server closed with {code}")

    async def _on_gateway_payload(self, conn, raw, size):
        cfg = self.cfg
        # Rate limit: 120 gateway events per connection every 60 seconds.
        t = now_s()
        if t - conn.cmd_window_start >= cfg.gateway_window_s:
            conn.cmd_window_start = t
            conn.cmd_count = 0
        conn.cmd_count += 1
        if size > cfg.max_payload_bytes:
            self.record({"kind": "gateway_recv", "connection_id": conn.id, "op": None,
                         "error": f"payload of {size} bytes exceeds {cfg.max_payload_bytes}"})
            await conn.close(CLOSE_DECODE_ERROR, "payload too large")
            return
        try:
            if isinstance(raw, bytes):
                raw = raw.decode("utf-8")
            payload = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            self.record({"kind": "gateway_recv", "connection_id": conn.id, "op": None,
                         "error": "invalid JSON", "raw": raw[:200] if isinstance(raw, str) else None})
            await conn.close(CLOSE_DECODE_ERROR)
            return
        if not isinstance(payload, dict):
            await conn.close(CLOSE_DECODE_ERROR)
            return
        op = payload.get("op")
        d = payload.get("d")
        rec = {"kind": "gateway_recv", "connection_id": conn.id,
               "session_id": conn.session.id if conn.session else None, "op": op,
               "d": self._redact(op, d)}
        self.record(rec)
        self.count(f"gateway_op_{op}")
        if conn.cmd_count > cfg.gateway_limit:
            self.count("gateway_rate_limited")
            rec["error"] = "rate limited"
            await conn.close(CLOSE_RATE_LIMITED)
            return
        if not conn.hello_sent:
            rec["error"] = "payload before hello"
            await conn.close(CLOSE_NOT_AUTHENTICATED, "payload sent before Hello")
            return
        if not isinstance(op, int) or isinstance(op, bool):
            await conn.close(CLOSE_UNKNOWN_OPCODE)
            return
        if op == OP_HEARTBEAT:
            await self._on_heartbeat(conn, d)
        elif op == OP_IDENTIFY:
            await self._on_identify(conn, d, rec)
        elif op == OP_RESUME:
            await self._on_resume(conn, d, rec)
        elif op in CLIENT_COMMANDS_AFTER_IDENTIFY:
            if conn.session is None:
                rec["error"] = "not authenticated"
                await conn.close(CLOSE_NOT_AUTHENTICATED)
                return
            if op == OP_PRESENCE_UPDATE:
                await self._on_presence(conn, d, rec)
        else:
            rec["error"] = "unknown opcode"
            await conn.close(CLOSE_UNKNOWN_OPCODE)

    def _redact(self, op, d):
        if op in (OP_IDENTIFY, OP_RESUME) and isinstance(d, dict) and "token" in d:
            d = dict(d)
            d["token_valid"] = d.get("token") == self.token
            d["token"] = "<redacted>"
        return d

    async def _on_heartbeat(self, conn, d):
        conn.last_heartbeat_at = now_s()
        conn.heartbeats += 1
        ack = self.cfg.ack_heartbeats
        if conn.session is not None and conn.session.ack_heartbeats is not None:
            ack = conn.session.ack_heartbeats
        if ack:
            await conn.send_obj({"op": OP_HEARTBEAT_ACK, "d": None, "s": None, "t": None})
        else:
            self.count("heartbeats_not_acked")

    async def _on_identify(self, conn, d, rec):
        cfg = self.cfg
        if conn.session is not None and conn.session.invalidated:
            # re-identifying on the same connection after op 9 d:false
            if conn.session.conn is conn:
                conn.session.conn = None
            conn.session = None
        if conn.session is not None:
            rec["error"] = "already authenticated"
            await conn.close(CLOSE_ALREADY_AUTHENTICATED)
            return
        if not isinstance(d, dict):
            rec["error"] = "identify d is not an object"
            await conn.close(CLOSE_UNKNOWN_OPCODE, "invalid payload for identify")
            return
        if d.get("token") != self.token:
            rec["error"] = "bad token"
            await conn.close(CLOSE_AUTHENTICATION_FAILED)
            return
        props = d.get("properties")
        if not isinstance(props, dict):
            rec["error"] = "properties missing"
            await conn.close(CLOSE_UNKNOWN_OPCODE, "identify.properties is required")
            return
        lt = d.get("large_threshold")
        if lt is not None and (not isinstance(lt, int) or not 50 <= lt <= 250):
            rec["error"] = "large_threshold out of range"
            await conn.close(CLOSE_UNKNOWN_OPCODE, "large_threshold must be 50..250")
            return
        intents = d.get("intents")
        if intents is None or not isinstance(intents, int) or isinstance(intents, bool):
            rec["error"] = "intents missing or not an integer"
            await conn.close(CLOSE_INVALID_INTENTS, "intents are required (integer)")
            return
        if intents < 0 or intents & ~VALID_INTENTS:
            rec["error"] = "invalid intents"
            await conn.close(CLOSE_INVALID_INTENTS)
            return
        if intents & PRIVILEGED_INTENTS & ~cfg.privileged_allowed:
            rec["error"] = "disallowed intents"
            await conn.close(CLOSE_DISALLOWED_INTENTS)
            return
        shard = d.get("shard")
        if shard is None:
            shard_id, num_shards, shard_given = 0, 1, False
        else:
            ok = (isinstance(shard, list) and len(shard) == 2
                  and all(isinstance(x, int) and not isinstance(x, bool) for x in shard)
                  and shard[1] >= 1 and 0 <= shard[0] < shard[1]
                  and shard[1] % max(1, cfg.shard_multiple) == 0)
            if not ok:
                rec["error"] = "invalid shard"
                await conn.close(CLOSE_INVALID_SHARD)
                return
            shard_id, num_shards, shard_given = shard[0], shard[1], True
        n_guilds = sum(1 for g in self.guilds if self.guild_shard(g, num_shards) == shard_id)
        if n_guilds > cfg.max_guilds_per_shard:
            rec["error"] = "sharding required"
            await conn.close(CLOSE_SHARDING_REQUIRED)
            return
        presence = d.get("presence")
        if presence is not None and not isinstance(presence, dict):
            rec["error"] = "presence is not an object"
            await conn.close(CLOSE_UNKNOWN_OPCODE, "invalid presence")
            return
        if self.session_start_remaining <= 0:
            rec["error"] = "session start limit exhausted"
            await conn.close(CLOSE_AUTHENTICATION_FAILED, "session start limit exhausted")
            return
        # max_concurrency: one identify per rate-limit key per 5 seconds, else op 9.
        key = shard_id % max(1, cfg.max_concurrency)
        t = now_s()
        last = self.last_identify_by_key.get(key)
        if last is not None and t - last < cfg.identify_window_s:
            rec["error"] = "identify concurrency limit (op 9)"
            self.count("identify_concurrency_rejections")
            await conn.send_obj({"op": OP_INVALID_SESSION, "d": False, "s": None, "t": None})
            return
        self.last_identify_by_key[key] = t
        self.session_start_remaining -= 1
        self.count("identifies")
        sid = secrets.token_hex(16)
        s = Session(self, sid, shard_id, num_shards, intents, props, shard_given)
        s.presence = presence
        self.sessions[sid] = s
        s.connections.append(conn.id)
        conn.session = s
        s.conn = conn
        rec["session_id"] = sid
        guild_ids = [g for g in self.guilds if self.guild_shard(g, num_shards) == shard_id]
        ready = {"v": 10, "user": self.public_user(self.bot_user) | {"mfa_enabled": False,
                                                                     "verified": True, "flags": 0,
                                                                     "email": None},
                 "guilds": [{"id": g, "unavailable": True} for g in guild_ids],
                 "session_id": sid, "resume_gateway_url": self.resume_gateway_url(),
                 "application": {"id": self.bot_user["id"], "flags": self.application()["flags"]},
                 "private_channels": [], "relationships": [], "presences": [],
                 "user_settings": {}, "session_type": "normal", "auth": {},
                 "guild_join_requests": [], "geo_ordered_rtc_regions": [],
                 "_trace": ["discord-test-server"]}
        if shard_given:
            ready["shard"] = [shard_id, num_shards]
        await s.dispatch("READY", ready, buffered=False)
        if intents & INTENT_GUILDS:
            for g in guild_ids:
                await s.dispatch("GUILD_CREATE", self.guild_create_payload(g))

    async def _on_resume(self, conn, d, rec):
        if conn.session is not None:
            rec["error"] = "already authenticated"
            await conn.close(CLOSE_ALREADY_AUTHENTICATED)
            return
        if not isinstance(d, dict):
            await conn.close(CLOSE_UNKNOWN_OPCODE, "invalid payload for resume")
            return
        if d.get("token") != self.token:
            rec["error"] = "bad token"
            await conn.close(CLOSE_AUTHENTICATION_FAILED)
            return
        s = self.sessions.get(d.get("session_id"))
        seq = d.get("seq")
        if seq is None:
            seq = 0
        if s is None or not s.alive():
            rec["error"] = "session not resumable (op 9 d:false)"
            self.count("resume_rejected")
            await conn.send_obj({"op": OP_INVALID_SESSION, "d": False, "s": None, "t": None})
            return
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0 or seq > s.seq:
            rec["error"] = f"invalid seq {seq!r} (session at {s.seq})"
            await conn.close(CLOSE_INVALID_SEQ)
            return
        if s.buffer and seq < s.buffer[0][0] - 1:
            rec["error"] = "events after seq no longer buffered (op 9 d:false)"
            s.invalidate("replay buffer overflow")
            await conn.send_obj({"op": OP_INVALID_SESSION, "d": False, "s": None, "t": None})
            return
        rec["session_id"] = s.id
        if self.cfg.resume_delay_ms > 0:
            await asyncio.sleep(self.cfg.resume_delay_ms / 1000.0)
            if not conn.open:
                return
        old = s.conn
        if old is not None and old is not conn:
            s.conn = None
            old.session = None
            asyncio.ensure_future(old.close(CLOSE_UNKNOWN_ERROR, "session resumed elsewhere"))
        conn.session = s
        s.connections.append(conn.id)
        s.resumes += 1
        self.count("resumes")
        replayed = 0
        last = seq
        while True:
            pending = [e for e in s.buffer if e[0] > last]
            if not pending:
                break
            for eseq, et, text in pending:
                await conn.send_text(text, {"op": 0, "t": et, "s": eseq, "replayed": True})
                last = eseq
                replayed += 1
            if not conn.open:
                return
        s.conn = conn
        s.disconnected_at = None
        rec["replayed"] = replayed
        await s.dispatch("RESUMED", {"_trace": ["discord-test-server"]}, buffered=False)

    async def _on_presence(self, conn, d, rec):
        ok = (isinstance(d, dict) and d.get("status") in PRESENCE_STATUSES
              and isinstance(d.get("activities", []), list)
              and isinstance(d.get("afk", False), bool)
              and (d.get("since") is None or isinstance(d.get("since"), (int, float))))
        if not ok:
            rec["error"] = "invalid presence update"
            await conn.close(CLOSE_UNKNOWN_OPCODE, "invalid presence update")
            return
        s = conn.session
        s.presence = d
        s.presence_history.append({"time": now_s(), "presence": d})
        self.count("presence_updates")

    # ------------------------------------------------------------ dispatch fan-out
    async def fan_out(self, t, d, guild_id, intent, transform=None):
        """Send a dispatch to every live session whose shard owns guild_id
        (DMs: shard 0) and that asked for `intent` (None: always sent)."""
        delivered, queued = [], []
        for s in list(self.sessions.values()):
            if not s.alive() or not s.routes(guild_id):
                continue
            if intent is not None and not (s.intents & intent):
                continue
            data = transform(s, d) if transform else d
            status = await s.dispatch(t, data)
            (delivered if status == "delivered" else queued).append(s.id)
        return {"delivered_to": delivered, "queued_for": queued}

    def content_filter(self, _unused=None):
        """MESSAGE_CONTENT intent: without it, content/embeds/attachments/
        components are empty (and poll omitted) except in DMs, in messages the
        bot sent, and in messages that mention the bot."""
        bot_id = self.bot_user["id"]

        def restricted(m, guild_id):
            if guild_id is None:
                return False
            if m.get("author", {}).get("id") == bot_id:
                return False
            if any(u.get("id") == bot_id for u in m.get("mentions", [])):
                return False
            return True

        def strip(m):
            m = dict(m)
            m["content"] = ""
            m["embeds"] = []
            m["attachments"] = []
            m["components"] = []
            m.pop("poll", None)
            return m

        def transform(session, d):
            if session.intents & INTENT_MESSAGE_CONTENT:
                return d
            gid = d.get("guild_id")
            out = strip(d) if restricted(d, gid) else d
            ref = out.get("referenced_message")
            if ref and restricted(ref, gid):
                out = dict(out)
                out["referenced_message"] = strip(ref)
            return out

        return transform

    # ------------------------------------------------------------ messages
    def gateway_message(self, msg):
        """Message object + MESSAGE_CREATE extra fields (guild_id, member, mentions' member)."""
        ch = self.channels[msg["channel_id"]]
        d = dict(msg)
        gid = ch.get("guild_id")
        d["channel_type"] = ch["type"]
        if gid is not None:
            d["guild_id"] = gid
            member = self.members[gid].get(msg["author"]["id"])
            if member is not None and not msg.get("webhook_id"):
                d["member"] = {k: v for k, v in member.items() if k != "user"}
            mentions = []
            for u in msg["mentions"]:
                mm = self.members[gid].get(u["id"])
                mentions.append(dict(u, member={k: v for k, v in mm.items() if k != "user"}) if mm else u)
            d["mentions"] = mentions
        return d

    def parse_mentions(self, content, allowed=None, reply_author=None):
        """Returns (users, roles, everyone) the content mentions, filtered by allowed_mentions."""
        parse = {"users", "roles", "everyone"} if allowed is None else set(allowed.get("parse") or [])
        allow_users = set(map(str, (allowed or {}).get("users") or []))
        allow_roles = set(map(str, (allowed or {}).get("roles") or []))
        users, roles = [], []
        for uid in re.findall(r"<@!?(\d+)>", content or ""):
            if (("users" in parse) or uid in allow_users) and uid in self.users and uid not in users:
                users.append(uid)
        for rid in re.findall(r"<@&(\d+)>", content or ""):
            if (("roles" in parse) or rid in allow_roles) and rid not in roles:
                roles.append(rid)
        everyone = bool(re.search(r"@(everyone|here)\b", content or "")) and "everyone" in parse
        if reply_author and allowed is not None and allowed.get("replied_user") and reply_author not in users:
            users.append(reply_author)
        return users, roles, everyone

    def new_message(self, channel, author, content, *, nonce=None, tts=False, embeds=None,
                    attachments=None, components=None, reference_msg=None, flags=0,
                    mention_ids=(), mention_roles=(), mention_everyone=False,
                    application_id=None, interaction_metadata=None, poll=None):
        t = now_s()
        mid = self.flakes.next()
        msg = {
            "id": mid, "channel_id": channel["id"], "author": self.public_user(author),
            "content": content or "", "timestamp": iso(t), "edited_timestamp": None,
            "tts": bool(tts), "mention_everyone": bool(mention_everyone),
            "mentions": [self.public_user(self.users[u]) for u in mention_ids if u in self.users],
            "mention_roles": list(mention_roles), "attachments": attachments or [],
            "embeds": embeds or [], "pinned": False,
            "type": MESSAGE_TYPE_REPLY if reference_msg else MESSAGE_TYPE_DEFAULT,
            "flags": flags, "components": components or [],
        }
        if nonce is not None:
            msg["nonce"] = nonce
        if reference_msg is not None:
            msg["message_reference"] = {"type": 0, "message_id": reference_msg["id"],
                                        "channel_id": channel["id"]}
            if channel.get("guild_id"):
                msg["message_reference"]["guild_id"] = channel["guild_id"]
            ref = dict(reference_msg)
            ref.pop("referenced_message", None)
            msg["referenced_message"] = ref
        if application_id:
            msg["application_id"] = application_id
        if interaction_metadata:
            msg["interaction_metadata"] = interaction_metadata
        if poll is not None:
            msg["poll"] = poll
        self.messages[channel["id"]].append(msg)
        self.message_index[mid] = msg
        channel["last_message_id"] = mid
        return msg

    def get_channel(self, cid):
        ch = self.channels.get(cid)
        if ch is None:
            raise unknown("channel")
        return ch

    def get_message(self, ch, mid):
        m = self.message_index.get(mid)
        if m is None or m["channel_id"] != ch["id"] or m.get("deleted"):
            raise unknown("message")
        return m

    def stored_view(self, m):
        return {k: v for k, v in m.items() if k != "deleted"}

    # ------------------------------------------------------------ REST plumbing
    ROUTES = []

    @classmethod
    def route(cls, method, pattern, bucket="default", auth=True, global_limit=True):
        def deco(fn):
            cls.ROUTES.append((method, re.compile("^" + pattern + "$"), pattern, fn.__name__,
                               bucket, auth, global_limit))
            return fn
        return deco

    def _bucket_params(self, kind):
        cfg = self.cfg
        if kind == "message_create":
            return cfg.channel_limit, cfg.channel_window_s
        if kind == "reaction":
            return cfg.reaction_limit, cfg.reaction_window_s
        return cfg.route_limit, cfg.route_window_s

    def _rl_headers(self, limit, remaining, reset_at, bucket_hash, now):
        return {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(remaining),
                "X-RateLimit-Reset": f"{reset_at:.3f}",
                "X-RateLimit-Reset-After": f"{max(0.0, reset_at - now):.3f}",
                "X-RateLimit-Bucket": bucket_hash}

    def _json(self, status, body, headers=None):
        h = {"Via": "1.1 google"}
        h.update(headers or {})
        if status == 204:
            return web.Response(status=204, headers=h)
        # exactly "application/json" (no charset), as Discord sends it
        h["Content-Type"] = "application/json"
        return web.Response(status=status, body=dumps(body).encode("utf-8"), headers=h)

    async def api_entry(self, request):
        t0 = now_s()
        raw_path = request.rel_url.raw_path
        m = re.match(r"^/api/v(\d+)(/.*)$", raw_path)
        rec = {"kind": "rest", "time": t0, "method": request.method, "path": request.path,
               "query": {k: request.query.getall(k) if len(request.query.getall(k)) > 1 else v
                         for k, v in request.query.items()},
               "headers": self._interesting_headers(request), "route": None}
        headers = {}
        try:
            if not m or int(m.group(1)) not in API_VERSIONS:
                raise ApiError(400, 50041, "Invalid API version provided.")
            sub = m.group(2)
            matched = None
            method_mismatch = False
            for (meth, rx, pattern, fname, bucket_kind, auth, glob) in self.ROUTES:
                mm = rx.match(sub)
                if not mm:
                    continue
                if meth != request.method:
                    method_mismatch = True
                    continue
                matched = (pattern, fname, bucket_kind, auth, glob, mm.groupdict())
                break
            if matched is None:
                if method_mismatch:
                    raise ApiError(405, 0, "405: Method Not Allowed")
                raise ApiError(404, 0, "404: Not Found")
            pattern, fname, bucket_kind, auth, glob, params = matched
            rec["route"] = f"{request.method} {pattern}"
            if auth:
                a = request.headers.get("Authorization")
                if a != f"Bot {self.token}":
                    raise ApiError(401, 0, "401: Unauthorized")
            forced = self._take_forced(request.method, sub)
            now = now_s()
            # A "hold" rule lets the request do its work and only delays the answer: the
            # client may die between Discord accepting a message and learning its id.
            hold_s = float(forced["hold_s"]) if forced is not None and "hold_s" in forced else 0.0
            if forced is not None and not hold_s:
                return self._forced_response(forced, rec, now)
            if glob and auth:
                gb = self.global_bucket
                if gb is None or gb.limit != self.cfg.global_limit or gb.window != self.cfg.global_window_s:
                    gb = self.global_bucket = Bucket(self.cfg.global_limit, self.cfg.global_window_s)
                ok, _, reset_at = gb.take(now)
                if not ok:
                    retry = max(0.001, reset_at - now)
                    rec["scope"] = "global"
                    raise ApiError(429, None, "You are being rate limited.",
                                   headers={"Retry-After": str(max(1, math.ceil(retry))),
                                            "X-RateLimit-Global": "true",
                                            "X-RateLimit-Scope": "global",
                                            "_retry_after": retry, "_global": True})
            if bucket_kind is not None:
                limit, window = self._bucket_params(bucket_kind)
                major = params.get("channel_id") or params.get("guild_id") or ""
                bucket_hash = hashlib.md5(f"{request.method} {pattern}".encode()).hexdigest()
                key = (bucket_hash, major)
                b = self.buckets.get(key)
                if b is None or b.limit != limit or b.window != window:
                    b = self.buckets[key] = Bucket(limit, window)
                ok, remaining, reset_at = b.take(now)
                headers.update(self._rl_headers(limit, remaining, reset_at, bucket_hash, now))
                rec["bucket"] = bucket_hash
                if not ok:
                    retry = max(0.001, reset_at - now)
                    rec["scope"] = "user"
                    raise ApiError(429, None, "You are being rate limited.",
                                   headers={"Retry-After": str(max(1, math.ceil(retry))),
                                            "X-RateLimit-Scope": "user",
                                            "_retry_after": retry, "_global": False})
            handler = getattr(self, fname)
            status, body, extra = await handler(request, rec, **params)
            if hold_s:
                rec["held_s"] = hold_s
                await asyncio.sleep(hold_s)
            headers.update(extra or {})
            rec["status"] = status
            if body is not None and status < 300 and len(dumps(body)) < 65536:
                rec["response"] = body
            return self._json(status, body, headers)
        except ApiError as e:
            return self._error_response(e, rec, headers)
        except Exception as e:  # a bug in the test server: say so loudly
            import traceback
            traceback.print_exc(file=sys.stderr)
            rec["status"] = 500
            rec["error"] = repr(e)
            return self._json(500, {"message": "500: Internal Server Error (test server bug: %r)" % e,
                                    "code": 0})
        finally:
            self.count("rest_requests")
            self.record(rec)

    def _error_response(self, e, rec, headers):
        headers = dict(headers)
        body = e.body()
        if e.status == 429:
            retry = e.headers.pop("_retry_after")
            is_global = e.headers.pop("_global")
            body = {"message": e.message, "retry_after": round(retry, 3), "global": is_global}
            scope = e.headers.get("X-RateLimit-Scope")
            self.count("rest_429")
            self.count(f"rest_429_{scope}")
            if is_global:
                # the global 429 carries no per-route headers (Rate Limits example)
                for k in list(headers):
                    if k.startswith("X-RateLimit-"):
                        del headers[k]
        headers.update(e.headers)
        rec["status"] = e.status
        rec["response"] = body
        if e.status in (401, 403) or (e.status == 429 and headers.get("X-RateLimit-Scope") != "shared"):
            rec["invalid"] = True
            self.count("invalid_requests")
        return self._json(e.status, body, headers)

    def _interesting_headers(self, request):
        out = {}
        for k in ("Content-Type", "User-Agent", "X-Audit-Log-Reason", "Content-Length",
                  "X-RateLimit-Precision"):
            if k in request.headers:
                out[k] = request.headers[k]
        a = request.headers.get("Authorization")
        if a is not None:
            out["Authorization"] = "Bot <valid>" if a == f"Bot {self.token}" else "<invalid>"
        return out

    def _take_forced(self, method, sub):
        for f in self.forced:
            if f["count"] <= 0:
                continue
            if f.get("method") and f["method"] != method:
                continue
            if f.get("match") and f["match"] not in sub:
                continue
            f["count"] -= 1
            return f
        return None

    def _forced_response(self, f, rec, now):
        status = f.get("status", 429)
        rec["forced"] = True
        rec["status"] = status
        if status == 429 and "body" not in f:
            scope = f.get("scope", "user")
            retry = float(f.get("retry_after", 1.0))
            e = ApiError(429, None, "You are being rate limited." if scope != "shared"
                         else "The resource is being rate limited.",
                         headers={"Retry-After": str(max(1, math.ceil(retry))),
                                  "X-RateLimit-Scope": scope, "_retry_after": retry,
                                  "_global": scope == "global"})
            if scope == "global":
                e.headers["X-RateLimit-Global"] = "true"
            return self._error_response(e, rec, {})
        body = f.get("body", "")
        h = {"Via": "1.1 google"}
        h.update(f.get("headers") or {})
        if status in (401, 403, 429):
            rec["invalid"] = True
            self.count("invalid_requests")
        if isinstance(body, (dict, list)):
            h["Content-Type"] = "application/json"
            return web.Response(status=status, body=dumps(body).encode("utf-8"), headers=h)
        return web.Response(status=status, text=str(body),
                            content_type=f.get("content_type", "text/html"), headers=h)

    async def read_body(self, request, rec, limit):
        """Reads the request body; bodies over `limit` bytes are drained and
        answered with 413 / 40005 (Request entity too large)."""
        chunks = []
        total = 0
        async for chunk in request.content.iter_chunked(1 << 16):
            total += len(chunk)
            if total <= limit:
                chunks.append(chunk)
        rec["body_bytes"] = total
        if total > limit:
            raise ApiError(413, 40005, "Request entity too large")
        return b"".join(chunks)

    def parse_multipart(self, ctype, body):
        m = re.search(r'boundary="?([^";]+)"?', ctype)
        if not m:
            raise ApiError(400, 50035, "Invalid Form Body",
                           {"_errors": [{"code": "CONTENT_TYPE_INVALID",
                                         "message": "multipart boundary missing"}]})
        boundary = m.group(1).encode()
        parts = []
        segs = (b"\r\n" + body).split(b"\r\n--" + boundary)
        for seg in segs[1:]:
            if seg.startswith(b"--"):
                break
            seg = seg.split(b"\r\n", 1)[1] if b"\r\n" in seg else b""
            head, _, content = seg.partition(b"\r\n\r\n")
            hdrs = {}
            for line in head.split(b"\r\n"):
                if b":" in line:
                    k, _, v = line.partition(b":")
                    hdrs[k.strip().lower().decode("latin-1")] = v.strip().decode("utf-8", "replace")
            disp = hdrs.get("content-disposition", "")
            name = re.search(r'\bname="([^"]*)"', disp)
            fname = re.search(r'\bfilename="([^"]*)"', disp)
            fname_star = re.search(r"\bfilename\*=(?:UTF-8'')?([^;]+)", disp)
            parts.append({"name": name.group(1) if name else None,
                          "filename": (unquote(fname_star.group(1)) if fname_star
                                       else fname.group(1) if fname else None),
                          "content_type": hdrs.get("content-type"), "data": content})
        return parts

    async def read_message_body(self, request, rec):
        """JSON or multipart/form-data (payload_json + files[n]) body."""
        ctype = request.headers.get("Content-Type", "")
        raw = await self.read_body(request, rec, self.cfg.upload_limit)
        files = []
        if ctype.startswith("application/json"):
            try:
                body = json.loads(raw.decode("utf-8")) if raw else {}
            except (ValueError, UnicodeDecodeError):
                raise ApiError(400, 50109, "The request body contains invalid JSON.")
            rec["body"] = body
        elif ctype.startswith("multipart/form-data"):
            body = {}
            summary = []
            for p in self.parse_multipart(ctype, raw):
                if p["name"] == "payload_json":
                    try:
                        body.update(json.loads(p["data"].decode("utf-8")))
                    except (ValueError, UnicodeDecodeError):
                        raise ApiError(400, 50109, "The request body contains invalid JSON.")
                    summary.append({"name": "payload_json"})
                elif p["filename"] is not None:
                    fm = re.match(r"^files\[(\d+)\]$", p["name"] or "")
                    if not fm:
                        fe = FormErrors()
                        fe.add([p["name"] or "file"], "BASE_TYPE_INVALID",
                               "File fields must be named files[n].")
                        fe.raise_if_any()
                    if len(p["data"]) > self.cfg.file_limit:
                        raise ApiError(413, 40005, "Request entity too large")
                    files.append({"index": int(fm.group(1)), "filename": p["filename"],
                                  "content_type": p["content_type"], "data": p["data"]})
                    summary.append({"name": p["name"], "filename": p["filename"],
                                    "content_type": p["content_type"], "size": len(p["data"]),
                                    "sha256": hashlib.sha256(p["data"]).hexdigest()})
                else:
                    val = p["data"].decode("utf-8", "replace")
                    try:
                        body[p["name"]] = json.loads(val) if p["name"] in (
                            "embeds", "allowed_mentions", "message_reference", "components",
                            "attachments", "sticker_ids", "tts", "enforce_nonce", "flags") else val
                    except ValueError:
                        body[p["name"]] = val
                    summary.append({"name": p["name"]})
            rec["body"] = body
            rec["multipart"] = summary
        else:
            raise ApiError(400, 50035, "Invalid Form Body",
                           {"_errors": [{"code": "CONTENT_TYPE_INVALID",
                                         "message": "Expected \"Content-Type\" header to be one of "
                                                    "{'application/json', 'multipart/form-data'}."}]})
        if not isinstance(body, dict):
            raise ApiError(400, 50035, "Invalid Form Body",
                           {"_errors": [{"code": "DICT_TYPE_CONVERT",
                                         "message": "Only dictionaries may be used in a DictType"}]})
        return body, files

    async def read_json(self, request, rec, limit=1 << 20):
        raw = await self.read_body(request, rec, limit)
        if not raw:
            return {}
        ctype = request.headers.get("Content-Type", "")
        if not ctype.startswith("application/json"):
            raise ApiError(400, 50035, "Invalid Form Body",
                           {"_errors": [{"code": "CONTENT_TYPE_INVALID",
                                         "message": "Expected application/json"}]})
        try:
            body = json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, 50109, "The request body contains invalid JSON.")
        rec["body"] = body
        return body

    # ------------------------------------------------------------ validation
    def validate_components(self, comps, fe, path=("components",)):
        if not isinstance(comps, list):
            fe.add(path, "BASE_TYPE_LIST", "Must be an array.")
            return
        if len(comps) > 5:
            fe.add(path, "BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length.")
        seen_ids = set()
        for i, row in enumerate(comps):
            rp = list(path) + [i]
            if not isinstance(row, dict) or row.get("type") != 1:
                fe.add(rp + ["type"], "UNION_TYPE_CHOICES",
                       "Value of field \"type\" must be one of (1,) without the IS_COMPONENTS_V2 flag.")
                continue
            children = row.get("components")
            if not isinstance(children, list) or not children:
                fe.add(rp + ["components"], "BASE_TYPE_MIN_LENGTH", "Must be 1 or more in length.")
                continue
            buttons = [c for c in children if isinstance(c, dict) and c.get("type") == 2]
            selects = [c for c in children if isinstance(c, dict) and c.get("type") in (3, 5, 6, 7, 8)]
            if len(buttons) > 5:
                fe.add(rp + ["components"], "BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length.")
            if selects and (len(children) > 1):
                fe.add(rp + ["components"], "COMPONENT_LAYOUT_WIDTH_EXCEEDED",
                       "The specified component exceeds the maximum width")
            for j, c in enumerate(children):
                cp = rp + ["components", j]
                if not isinstance(c, dict) or c.get("type") not in (2, 3, 5, 6, 7, 8):
                    fe.add(cp + ["type"], "UNION_TYPE_CHOICES", "Invalid component type for an action row.")
                    continue
                cid = c.get("custom_id")
                if c["type"] == 2:
                    style = c.get("style")
                    if style not in (1, 2, 3, 4, 5, 6):
                        fe.add(cp + ["style"], "BASE_TYPE_CHOICES", "Value must be one of (1, 2, 3, 4, 5, 6).")
                        continue
                    label = c.get("label")
                    if label is not None and (not isinstance(label, str) or len(label) > 80):
                        fe.add(cp + ["label"], "BASE_TYPE_MAX_LENGTH", "Must be 80 or fewer in length.")
                    if style in (1, 2, 3, 4):
                        if not isinstance(cid, str) or not 1 <= len(cid) <= 100:
                            fe.add(cp + ["custom_id"], "BASE_TYPE_REQUIRED",
                                   "A custom id is required (1-100 characters).")
                        if c.get("url") is not None:
                            fe.add(cp + ["url"], "BUTTON_COMPONENT_URL_NOT_ALLOWED",
                                   "A url cannot be specified for a non-link button.")
                    elif style == 5:
                        url = c.get("url")
                        if not isinstance(url, str) or not url or len(url) > 512:
                            fe.add(cp + ["url"], "BASE_TYPE_REQUIRED", "A url is required (max 512).")
                        if cid is not None:
                            fe.add(cp + ["custom_id"], "BUTTON_COMPONENT_CUSTOM_ID_NOT_ALLOWED",
                                   "A custom id cannot be specified for a link button.")
                    elif style == 6:
                        if c.get("sku_id") is None or any(c.get(k) is not None for k in ("custom_id", "label", "url", "emoji")):
                            fe.add(cp, "BUTTON_COMPONENT_INVALID",
                                   "Premium buttons need sku_id and no custom_id/label/url/emoji.")
                elif not isinstance(cid, str) or not 1 <= len(cid) <= 100:
                    fe.add(cp + ["custom_id"], "BASE_TYPE_REQUIRED", "A custom id is required (1-100 characters).")
                if isinstance(cid, str):
                    if cid in seen_ids:
                        fe.add(cp + ["custom_id"], "COMPONENT_CUSTOM_ID_DUPLICATED",
                               "Component custom id cannot be duplicated")
                    seen_ids.add(cid)

    def validate_message_body(self, body, files, channel, for_interaction=False):
        """Validates Create Message params; returns the kwargs for new_message."""
        fe = FormErrors()
        content = body.get("content")
        if content is not None and not isinstance(content, str):
            fe.add(["content"], "BASE_TYPE_STRING", "Must be a string.")
            content = None
        if isinstance(content, str) and len(content) > 2000:
            fe.add(["content"], "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length.")
        nonce = body.get("nonce")
        if nonce is not None:
            if isinstance(nonce, bool) or not isinstance(nonce, (str, int)):
                fe.add(["nonce"], "BASE_TYPE_STRING", "Must be an integer or a string.")
            elif isinstance(nonce, str) and len(nonce) > 25:
                fe.add(["nonce"], "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
        tts = body.get("tts", False)
        if tts is not None and not isinstance(tts, bool):
            fe.add(["tts"], "BASE_TYPE_BOOLEAN", "Must be either true or false.")
        embeds = body.get("embeds") or []
        if not isinstance(embeds, list):
            fe.add(["embeds"], "BASE_TYPE_LIST", "Must be an array.")
            embeds = []
        elif len(embeds) > 10:
            fe.add(["embeds"], "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
        else:
            total = 0
            for i, e in enumerate(embeds):
                if not isinstance(e, dict):
                    fe.add(["embeds", i], "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
                    continue
                e["type"] = "rich"
                for k in ("title", "description"):
                    total += len(str(e.get(k) or ""))
                total += len(str((e.get("footer") or {}).get("text") or ""))
                total += len(str((e.get("author") or {}).get("name") or ""))
                for f in e.get("fields") or []:
                    if isinstance(f, dict):
                        total += len(str(f.get("name") or "")) + len(str(f.get("value") or ""))
            if total > 6000:
                fe.add(["embeds"], "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000")
        am = body.get("allowed_mentions")
        if am is not None:
            if not isinstance(am, dict):
                fe.add(["allowed_mentions"], "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
                am = None
            else:
                parse = am.get("parse", [])
                if not isinstance(parse, list) or any(p not in ("users", "roles", "everyone") for p in parse):
                    fe.add(["allowed_mentions", "parse"], "BASE_TYPE_CHOICES",
                           "Value must be one of ('roles', 'users', 'everyone').")
                    parse = []
                for key in ("users", "roles"):
                    ids = am.get(key, [])
                    if not isinstance(ids, list) or len(ids) > 100 or not all(is_snowflake(x) for x in ids):
                        fe.add(["allowed_mentions", key], "BASE_TYPE_MAX_LENGTH",
                               "Must be an array of at most 100 snowflakes.")
                    elif ids and key in parse:
                        fe.add(["allowed_mentions"], "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE",
                               f"parse:[\"{key}\"] and {key}: [ids] are mutually exclusive.")
                if "replied_user" in am and not isinstance(am["replied_user"], bool):
                    fe.add(["allowed_mentions", "replied_user"], "BASE_TYPE_BOOLEAN",
                           "Must be either true or false.")
        components = body.get("components")
        if components is not None:
            self.validate_components(components, fe)
        flags = body.get("flags") or 0
        if not isinstance(flags, int) or flags & ~(SETTABLE_MESSAGE_FLAGS | (64 if for_interaction else 0)):
            fe.add(["flags"], "MESSAGE_FLAGS_INVALID", "Invalid message flags.")
            flags = 0
        if flags & (1 << 15):
            fe.add(["flags"], "MESSAGE_FLAGS_INVALID",
                   "IS_COMPONENTS_V2 is not implemented by the test server.")
        sticker_ids = body.get("sticker_ids") or []
        if sticker_ids:
            fe.add(["sticker_ids"], "STICKER_UNKNOWN", "The test server has no stickers.")
        ref_msg = None
        mref = body.get("message_reference")
        if mref is not None:
            if not isinstance(mref, dict):
                fe.add(["message_reference"], "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
            elif mref.get("type", 0) not in (0, None):
                fe.add(["message_reference", "type"], "BASE_TYPE_CHOICES",
                       "Forwards are not implemented by the test server.")
            else:
                mid = mref.get("message_id")
                rcid = mref.get("channel_id")
                fail = mref.get("fail_if_not_exists", True)
                target = self.message_index.get(str(mid)) if mid is not None else None
                if target is not None and (target.get("deleted") or target["channel_id"] != channel["id"]
                                           or (rcid is not None and str(rcid) != channel["id"])):
                    target = None
                if target is None and fail is not False:
                    fe.add(["message_reference"], "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message")
                ref_msg = target
        attachments_meta = body.get("attachments") or []
        if files:
            idxs = [f["index"] for f in files]
            if len(set(idxs)) != len(idxs):
                fe.add(["files"], "BASE_TYPE_INVALID", "Duplicate files[n] names.")
            if len(files) > 10:
                fe.add(["files"], "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
        if isinstance(attachments_meta, list):
            known = {f["index"] for f in files}
            for i, a in enumerate(attachments_meta):
                if not isinstance(a, dict) or a.get("id") is None:
                    fe.add(["attachments", i, "id"], "BASE_TYPE_REQUIRED", "This field is required")
                elif str(a["id"]).isdigit() and int(a["id"]) not in known and int(a["id"]) < 1 << 22:
                    fe.add(["attachments", i, "id"], "ATTACHMENT_NOT_FOUND",
                           f"Attachment {a['id']} has no files[{a['id']}] part.")
        poll = body.get("poll")
        fe.raise_if_any()
        has_something = bool(content) or bool(embeds) or bool(components) or bool(files) or poll is not None
        if not has_something:
            raise ApiError(400, 50006, "Cannot send an empty message")
        users, roles, everyone = self.parse_mentions(
            content or "", am, ref_msg["author"]["id"] if ref_msg else None)
        meta_by_id = {}
        if isinstance(attachments_meta, list):
            for a in attachments_meta:
                if isinstance(a, dict) and a.get("id") is not None:
                    meta_by_id[str(a["id"])] = a
        attachments = []
        for f in sorted(files, key=lambda f: f["index"]):
            aid = self.flakes.next()
            meta = meta_by_id.get(str(f["index"]), {})
            filename = meta.get("filename") or f["filename"]
            ctype = f["content_type"] or "application/octet-stream"
            self.attachments[aid] = (f["data"], ctype, filename)
            url = f"http://127.0.0.1:{self.port}/attachments/{channel['id']}/{aid}/{filename}"
            a = {"id": aid, "filename": filename, "size": len(f["data"]), "url": url,
                 "proxy_url": url, "content_type": ctype}
            if meta.get("description"):
                a["description"] = meta["description"]
            if meta.get("is_spoiler"):
                a["flags"] = 1 << 3
            attachments.append(a)
        return dict(nonce=nonce, tts=tts, embeds=embeds, attachments=attachments,
                    components=components or [], reference_msg=ref_msg, flags=flags,
                    mention_ids=users, mention_roles=roles, mention_everyone=everyone, poll=poll), content

    # ------------------------------------------------------------ REST routes
    async def r_gateway(self, request, rec):
        return 200, {"url": self.gateway_url()}, None

    async def r_gateway_bot(self, request, rec):
        reset_after = max(0, int((self.app_start_limit_reset_at - now_s()) * 1000))
        return 200, {"url": self.gateway_url(), "shards": self.cfg.shards,
                     "session_start_limit": {"total": self.cfg.session_start_total,
                                             "remaining": self.session_start_remaining,
                                             "reset_after": reset_after,
                                             "max_concurrency": self.cfg.max_concurrency}}, None

    async def r_users_me(self, request, rec):
        return 200, self.public_user(self.bot_user) | {"mfa_enabled": False, "verified": True,
                                                       "flags": 0, "email": None,
                                                       "locale": "en-US", "bio": "",
                                                       "banner": None, "accent_color": None}, None

    async def r_application_me(self, request, rec):
        return 200, self.application(), None

    async def r_get_channel(self, request, rec, channel_id):
        ch = self.get_channel(channel_id)
        return 200, self.channel_obj(ch), None

    async def r_create_message(self, request, rec, channel_id):
        ch = self.get_channel(channel_id)
        body, files = await self.read_message_body(request, rec)
        kwargs, content = self.validate_message_body(body, files, ch)
        nonce = kwargs["nonce"]
        enforce = body.get("enforce_nonce") is True
        key = (ch["id"], self.bot_user["id"], dumps(nonce)) if nonce is not None else None
        if enforce and key is not None:
            hit = self.nonces.get(key)
            if hit is not None and now_s() - hit[1] < self.cfg.nonce_window_s:
                existing = self.message_index.get(hit[0])
                if existing is not None and not existing.get("deleted"):
                    rec["nonce_hit"] = existing["id"]
                    self.count("nonce_dedup_hits")
                    return 200, self.stored_view(existing), None
        msg = self.new_message(ch, self.bot_user, content, **kwargs)
        if key is not None:
            self.nonces[key] = (msg["id"], now_s())
        rec["message_id"] = msg["id"]
        self.count("messages_created_by_bot")
        gm = self.gateway_message(msg)
        gid = ch.get("guild_id")
        await self.fan_out("MESSAGE_CREATE", gm, gid,
                           INTENT_GUILD_MESSAGES if gid else INTENT_DIRECT_MESSAGES,
                           self.content_filter(gm))
        return 200, self.stored_view(msg), None

    async def r_get_messages(self, request, rec, channel_id):
        ch = self.get_channel(channel_id)
        q = request.query
        fe = FormErrors()
        limit = q.get("limit", "50")
        if not limit.isdigit() or not 1 <= int(limit) <= 100:
            fe.add(["limit"], "NUMBER_TYPE_MAX", "Must be between 1 and 100.")
        anchors = [k for k in ("around", "before", "after") if k in q]
        if len(anchors) > 1:
            fe.add([anchors[1]], "BASE_TYPE_INVALID", "around, before and after are mutually exclusive.")
        for k in anchors:
            if not q[k].isdigit():
                fe.add([k], "NUMBER_TYPE_COERCE", f"Value \"{q[k]}\" is not snowflake.")
        fe.raise_if_any()
        n = int(limit)
        msgs = [m for m in self.messages[ch["id"]] if not m.get("deleted")]
        if "before" in q:
            b = int(q["before"])
            sel = [m for m in msgs if int(m["id"]) < b][-n:]
        elif "after" in q:
            a = int(q["after"])
            sel = [m for m in msgs if int(m["id"]) > a][:n]
        elif "around" in q:
            c = int(q["around"])
            before = [m for m in msgs if int(m["id"]) < c]
            at = [m for m in msgs if int(m["id"]) == c]
            after = [m for m in msgs if int(m["id"]) > c]
            half = (n - len(at)) // 2
            sel = before[-half:] if half else []
            sel = sel + at + after[: n - len(sel) - len(at)]
        else:
            sel = msgs[-n:]
        transform = None if self.cfg.privileged_allowed & INTENT_MESSAGE_CONTENT else \
            self.content_filter()
        out = []
        for m in reversed(sel):   # newest first
            v = self.stored_view(m)
            if transform is not None and ch.get("guild_id"):
                v = transform(_NoContentSession, dict(v, guild_id=ch["guild_id"]))
                v.pop("guild_id", None)
            out.append(v)
        return 200, out, None

    async def r_get_message(self, request, rec, channel_id, message_id):
        ch = self.get_channel(channel_id)
        return 200, self.stored_view(self.get_message(ch, message_id)), None

    async def r_delete_message(self, request, rec, channel_id, message_id):
        ch = self.get_channel(channel_id)
        m = self.get_message(ch, message_id)
        if m["author"]["id"] != self.bot_user["id"]:
            raise ApiError(403, 50013, "Missing Permissions")
        m["deleted"] = True
        gid = ch.get("guild_id")
        d = {"id": m["id"], "channel_id": ch["id"]}
        if gid:
            d["guild_id"] = gid
        await self.fan_out("MESSAGE_DELETE", d, gid, INTENT_GUILD_MESSAGES if gid else INTENT_DIRECT_MESSAGES)
        return 204, None, None

    async def r_edit_message(self, request, rec, channel_id, message_id):
        ch = self.get_channel(channel_id)
        m = self.get_message(ch, message_id)
        if m["author"]["id"] != self.bot_user["id"]:
            raise ApiError(403, 50005, "Cannot edit a message authored by another user")
        body = await self.read_json(request, rec)
        fe = FormErrors()
        if "content" in body:
            c = body["content"]
            if c is not None and (not isinstance(c, str) or len(c) > 2000):
                fe.add(["content"], "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length.")
        if "components" in body and body["components"] is not None:
            self.validate_components(body["components"], fe)
        fe.raise_if_any()
        for k in ("content", "embeds", "components", "flags"):
            if k in body:
                m[k] = body[k] if body[k] is not None else ("" if k == "content" else [] if k != "flags" else 0)
        m["edited_timestamp"] = iso(now_s())
        gm = self.gateway_message(m)
        gid = ch.get("guild_id")
        await self.fan_out("MESSAGE_UPDATE", gm, gid, INTENT_GUILD_MESSAGES if gid else INTENT_DIRECT_MESSAGES,
                           self.content_filter(gm))
        return 200, self.stored_view(m), None

    async def r_typing(self, request, rec, channel_id):
        ch = self.get_channel(channel_id)
        gid = ch.get("guild_id")
        self.count("typing")
        d = {"channel_id": ch["id"], "user_id": self.bot_user["id"], "timestamp": int(now_s())}
        if gid:
            d["guild_id"] = gid
            d["member"] = self.members[gid][self.bot_user["id"]]
        await self.fan_out("TYPING_START", d, gid,
                           INTENT_GUILD_MESSAGE_TYPING if gid else INTENT_DIRECT_MESSAGE_TYPING)
        return 204, None, None

    def parse_emoji(self, raw_segment):
        """The emoji path segment must be URL-encoded; custom emoji as name:id."""
        if re.search(r"[^\x21-\x7e]", raw_segment):
            raise unknown("emoji")
        text = unquote(raw_segment)
        if not text:
            raise unknown("emoji")
        if ":" in text:
            parts = text.split(":")
            if parts[0] == "a" and len(parts) == 3:
                parts = parts[1:]
            if len(parts) != 2 or not re.fullmatch(r"[A-Za-z0-9_]{2,32}", parts[0]) or not parts[1].isdigit():
                raise unknown("emoji")
            return {"id": parts[1], "name": parts[0]}
        # a unicode emoji: no ASCII in it (keycaps such as 1\ufe0f\u20e3 aside)
        if re.search(r"[\x00-\x7f]", re.sub(r"[0-9#*](?=\ufe0f?\u20e3)", "", text)):
            raise unknown("emoji")
        return {"id": None, "name": text}

    async def add_reaction(self, ch, m, user, emoji):
        key = emoji["id"] or emoji["name"]
        reactions = m.setdefault("reactions", [])
        r = next((r for r in reactions if (r["emoji"]["id"] or r["emoji"]["name"]) == key), None)
        if r is None:
            r = {"count": 0, "count_details": {"burst": 0, "normal": 0}, "me": False,
                 "me_burst": False, "emoji": emoji, "burst_colors": [], "_users": []}
            reactions.append(r)
        if user["id"] in r["_users"]:
            return False
        r["_users"].append(user["id"])
        r["count"] += 1
        r["count_details"]["normal"] += 1
        if user["id"] == self.bot_user["id"]:
            r["me"] = True
        gid = ch.get("guild_id")
        d = {"user_id": user["id"], "channel_id": ch["id"], "message_id": m["id"],
             "emoji": emoji, "message_author_id": m["author"]["id"], "burst": False,
             "burst_colors": [], "type": 0}
        if gid:
            d["guild_id"] = gid
            d["member"] = self._add_member(gid, user)
        await self.fan_out("MESSAGE_REACTION_ADD", d, gid,
                           INTENT_GUILD_MESSAGE_REACTIONS if gid else INTENT_DIRECT_MESSAGE_REACTIONS)
        return True

    async def r_add_reaction(self, request, rec, channel_id, message_id, emoji):
        ch = self.get_channel(channel_id)
        m = self.get_message(ch, message_id)
        e = self.parse_emoji(emoji)
        rec["emoji"] = e
        self.count("reactions_by_bot")
        await self.add_reaction(ch, m, self.bot_user, e)
        return 204, None, None

    async def r_interaction_callback(self, request, rec, interaction_id, token):
        it = self.interactions.get(interaction_id)
        if it is None or not secrets.compare_digest(it["token"], token):
            raise unknown("interaction")
        t = now_s()
        age = t - it["created_at"]
        if not it["acknowledged"] and age > self.cfg.interaction_deadline_s:
            it["late_callbacks"].append(t)
            raise unknown("interaction")
        if age > self.cfg.interaction_token_ttl_s:
            raise unknown("interaction")
        if it["acknowledged"]:
            raise ApiError(400, 40060, "Interaction has already been acknowledged.")
        ctype = request.headers.get("Content-Type", "")
        if ctype.startswith("multipart/form-data"):
            body, files = await self.read_message_body(request, rec)
        else:
            body, files = await self.read_json(request, rec), []
        fe = FormErrors()
        cbtype = body.get("type")
        allowed = CALLBACK_TYPES_FOR_COMPONENTS if it["type"] == INTERACTION_MESSAGE_COMPONENT else ALL_CALLBACK_TYPES
        if cbtype not in allowed:
            fe.add(["type"], "BASE_TYPE_CHOICES", f"Value must be one of {tuple(sorted(allowed))}.")
        fe.raise_if_any()
        data = body.get("data") or {}
        ch = self.channels[it["channel_id"]]
        resource = {"type": cbtype}
        resp_msg = None
        if cbtype in (4, 7):
            kwargs, content = self.validate_message_body(data, files, ch, for_interaction=True)
            if cbtype == 4:
                kwargs["application_id"] = self.bot_user["id"]
                kwargs["interaction_metadata"] = {"id": it["id"], "type": it["type"],
                                                  "user": it["user"],
                                                  "authorizing_integration_owners": it["payload"]["authorizing_integration_owners"],
                                                  "interacted_message_id": it["message_id"]}
                resp_msg = self.new_message(ch, self.bot_user, content, **kwargs)
                gm = self.gateway_message(resp_msg)
                gid = ch.get("guild_id")
                await self.fan_out("MESSAGE_CREATE", gm, gid,
                                   INTENT_GUILD_MESSAGES if gid else INTENT_DIRECT_MESSAGES,
                                   self.content_filter(gm))
            else:
                target = self.message_index.get(it["message_id"])
                if target is not None:
                    for k in ("content", "embeds", "components"):
                        if k in data:
                            target[k] = data[k]
                    target["edited_timestamp"] = iso(t)
                    resp_msg = target
                    gm = self.gateway_message(target)
                    gid = ch.get("guild_id")
                    await self.fan_out("MESSAGE_UPDATE", gm, gid,
                                       INTENT_GUILD_MESSAGES if gid else INTENT_DIRECT_MESSAGES,
                                       self.content_filter(gm))
        it["acknowledged"] = True
        it["ack_type"] = cbtype
        it["ack_time"] = t
        it["ack_latency_s"] = age
        it["callback_body"] = body
        self.count("interaction_callbacks")
        rec["interaction_ack_latency_s"] = round(age, 4)
        if request.query.get("with_response") in ("true", "True", "1"):
            cb = {"id": it["id"], "type": it["type"]}
            if resp_msg is not None:
                cb["response_message_id"] = resp_msg["id"]
                cb["response_message_loading"] = False
                cb["response_message_ephemeral"] = bool((data.get("flags") or 0) & 64)
                resource["message"] = self.stored_view(resp_msg)
            return 200, {"interaction": cb, "resource": resource}, None
        return 204, None, None

    # ------------------------------------------------------------ control API
    async def _ctl_json(self, request):
        try:
            raw = await request.read()
            return json.loads(raw.decode("utf-8")) if raw else {}
        except ValueError:
            raise web.HTTPBadRequest(text=dumps({"error": "invalid JSON"}), content_type="application/json")

    def _ctl(self, body, status=200):
        return web.Response(status=status, text=dumps(body), content_type="application/json")

    def _ctl_err(self, status, msg):
        return web.Response(status=status, text=dumps({"error": msg}), content_type="application/json")

    async def c_state(self, request):
        guilds = []
        for gid, g in self.guilds.items():
            guilds.append({"id": gid, "name": g["name"], "owner_id": g["owner_id"],
                           "shard_for": {str(n): self.guild_shard(gid, n) for n in range(1, 9)},
                           "channels": [self.channel_obj(self.channels[c]) for c in g["channel_ids"]]})
        dms = [self.channel_obj(c) for c in self.channels.values() if c["type"] == CHANNEL_DM]
        return self._ctl({
            "port": self.port,
            "gateway_url": self.gateway_url(), "resume_gateway_url": self.resume_gateway_url(),
            "bot_user": self.public_user(self.bot_user), "application_id": self.bot_user["id"],
            "guilds": guilds, "dm_channels": dms,
            "sessions": [s.info() for s in self.sessions.values()],
            "connections": [c.info() for c in self.connections.values()],
            "session_start_limit": {"total": self.cfg.session_start_total,
                                    "remaining": self.session_start_remaining},
            "counters": self.counters, "config": self.cfg.as_dict(),
        })

    async def c_config(self, request):
        body = await self._ctl_json(request)
        try:
            self.cfg.update(body)
        except (ValueError, TypeError) as e:
            return self._ctl_err(400, str(e))
        if "session_start_total" in body:
            self.session_start_remaining = self.cfg.session_start_total
        return self._ctl(self.cfg.as_dict())

    async def c_reset(self, request):
        body = await self._ctl_json(request)
        if body.get("sessions"):
            for c in list(self.connections.values()):
                if c.open:
                    c.drop()
            self.sessions.clear()
            self.last_identify_by_key.clear()
        self.connections = {k: c for k, c in self.connections.items() if c.open}
        for msgs in self.messages.values():
            msgs.clear()
        for ch in self.channels.values():
            ch["last_message_id"] = None
        self.message_index.clear()
        self.attachments.clear()
        self.nonces.clear()
        self.interactions.clear()
        self.records.clear()
        self.record_base = 0
        self.counters.clear()
        self.buckets.clear()
        self.global_bucket = None
        self.forced.clear()
        self.session_start_remaining = self.cfg.session_start_total
        return self._ctl({"ok": True})

    async def c_requests(self, request):
        since = int(request.query.get("since", "0"))
        kinds = request.query.getall("kind", [])
        start = max(0, since - self.record_base)
        recs = self.records[start:]
        if kinds:
            recs = [r for r in recs if r["kind"] in kinds]
        return self._ctl({"records": recs, "next": self.record_base + len(self.records),
                          "counters": self.counters})

    async def c_channel_messages(self, request):
        cid = request.match_info["channel_id"]
        if cid not in self.channels:
            return self._ctl_err(404, "Unknown Channel")
        return self._ctl([self.stored_view(m) | ({"deleted": True} if m.get("deleted") else {})
                          for m in self.messages[cid]])

    async def c_create_guild(self, request):
        body = await self._ctl_json(request)
        gid = str(body["id"]) if body.get("id") else str((self.base_ms + 5000 + len(self.guilds)) << 22)
        if gid in self.guilds:
            return self._ctl_err(409, "guild exists")
        names = body.get("channels") or ["general"]
        self._create_guild(gid, body.get("name", f"Guild {gid}"), names)
        result = await self.fan_out("GUILD_CREATE", self.guild_create_payload(gid), gid, INTENT_GUILDS)
        return self._ctl({"guild": {"id": gid, "channels": [self.channel_obj(self.channels[c])
                                                             for c in self.guilds[gid]["channel_ids"]]},
                          **result})

    async def c_create_channel(self, request):
        body = await self._ctl_json(request)
        gid = str(body.get("guild_id", ""))
        if gid not in self.guilds:
            return self._ctl_err(404, "Unknown Guild")
        cid = str(body["id"]) if body.get("id") else self.flakes.next()
        ch = self._create_channel(cid, gid, body.get("name", f"channel-{cid}"),
                                  len(self.guilds[gid]["channel_ids"]))
        result = await self.fan_out("CHANNEL_CREATE", self.channel_obj(ch), gid, INTENT_GUILDS)
        return self._ctl({"channel": self.channel_obj(ch), **result})

    async def c_update_channel(self, request):
        ch = self.channels.get(request.match_info["channel_id"])
        if ch is None or ch["type"] == CHANNEL_DM:
            return self._ctl_err(404, "Unknown Channel")
        body = await self._ctl_json(request)
        for k in ("name", "topic", "nsfw", "rate_limit_per_user", "position", "parent_id"):
            if k in body:
                ch[k] = body[k]
        result = await self.fan_out("CHANNEL_UPDATE", self.channel_obj(ch), ch["guild_id"], INTENT_GUILDS)
        return self._ctl({"channel": self.channel_obj(ch), **result})

    async def c_delete_channel(self, request):
        ch = self.channels.get(request.match_info["channel_id"])
        if ch is None:
            return self._ctl_err(404, "Unknown Channel")
        del self.channels[ch["id"]]
        gid = ch.get("guild_id")
        if gid:
            self.guilds[gid]["channel_ids"].remove(ch["id"])
            result = await self.fan_out("CHANNEL_DELETE", self.channel_obj(ch), gid, INTENT_GUILDS)
        else:
            result = {"delivered_to": [], "queued_for": []}
        return self._ctl({"channel": self.channel_obj(ch), **result})

    async def c_delete_guild(self, request):
        """The bot leaves the guild (GUILD_DELETE without unavailable) or the
        guild has an outage ({"unavailable": true})."""
        gid = request.match_info["guild_id"]
        if gid not in self.guilds:
            return self._ctl_err(404, "Unknown Guild")
        body = await self._ctl_json(request)
        d = {"id": gid}
        if body.get("unavailable"):
            d["unavailable"] = True
        result = await self.fan_out("GUILD_DELETE", d, gid, INTENT_GUILDS)
        if not body.get("unavailable"):
            for cid in self.guilds[gid]["channel_ids"]:
                self.channels.pop(cid, None)
            del self.guilds[gid]
        return self._ctl({"guild_id": gid, **result})

    async def c_create_dm(self, request):
        body = await self._ctl_json(request)
        try:
            user = self.register_user(body.get("user"))
        except ApiError as e:
            return self._ctl_err(400, e.message)
        for ch in self.channels.values():
            if ch["type"] == CHANNEL_DM and ch["recipients"][0]["id"] == user["id"]:
                return self._ctl({"channel": self.channel_obj(ch)})
        cid = str(body["id"]) if body.get("id") else self.flakes.next()
        ch = self._create_channel(cid, None, None, ctype=CHANNEL_DM, recipient=user)
        return self._ctl({"channel": self.channel_obj(ch)})

    async def c_message(self, request):
        """A user posts a message: stored, then MESSAGE_CREATE to the owning shard."""
        body = await self._ctl_json(request)
        cid = str(body.get("channel_id", ""))
        ch = self.channels.get(cid)
        if ch is None:
            return self._ctl_err(404, "Unknown Channel")
        if body.get("guild_id") is not None and str(body["guild_id"]) != ch.get("guild_id"):
            return self._ctl_err(400, "guild_id does not match the channel's guild")
        try:
            author = self.register_user(body.get("author"))
        except ApiError as e:
            return self._ctl_err(400, e.message)
        gid = ch.get("guild_id")
        if gid:
            self._add_member(gid, author)
        content = body.get("content", "")
        mention_ids = []
        for mn in body.get("mentions") or []:
            if isinstance(mn, dict):
                u = self.register_user(mn)
                mention_ids.append(u["id"])
            else:
                mention_ids.append(str(mn))
        parsed, roles, everyone = self.parse_mentions(content)
        for u in parsed:
            if u not in mention_ids:
                mention_ids.append(u)
        ref = None
        if body.get("referenced_message_id"):
            ref = self.message_index.get(str(body["referenced_message_id"]))
            if ref is None or ref["channel_id"] != cid:
                return self._ctl_err(404, "Unknown referenced message")
            if ref["author"]["id"] not in mention_ids and body.get("mention_replied_user", True):
                mention_ids.append(ref["author"]["id"])
        attachments = []
        for a in body.get("attachments") or []:
            data = base64.b64decode(a["data_b64"]) if a.get("data_b64") else b"\0" * int(a.get("size", 0))
            aid = self.flakes.next()
            fname = a.get("filename", "file.bin")
            ctype = a.get("content_type", "application/octet-stream")
            self.attachments[aid] = (data, ctype, fname)
            url = f"http://127.0.0.1:{self.port}/attachments/{cid}/{aid}/{fname}"
            attachments.append({"id": aid, "filename": fname, "size": len(data), "url": url,
                                "proxy_url": url, "content_type": ctype})
        msg = self.new_message(ch, author, content, reference_msg=ref, mention_ids=mention_ids,
                               mention_roles=roles, mention_everyone=everyone,
                               attachments=attachments, embeds=body.get("embeds"),
                               nonce=body.get("nonce"))
        gm = self.gateway_message(msg)
        result = await self.fan_out("MESSAGE_CREATE", gm, gid,
                                    INTENT_GUILD_MESSAGES if gid else INTENT_DIRECT_MESSAGES,
                                    self.content_filter(gm))
        self.record({"kind": "control", "action": "message", "message_id": msg["id"],
                     "channel_id": cid, **result})
        return self._ctl({"message": self.stored_view(msg), **result})

    async def c_reaction(self, request):
        body = await self._ctl_json(request)
        ch = self.channels.get(str(body.get("channel_id", "")))
        if ch is None:
            return self._ctl_err(404, "Unknown Channel")
        m = self.message_index.get(str(body.get("message_id", "")))
        if m is None or m["channel_id"] != ch["id"]:
            return self._ctl_err(404, "Unknown Message")
        user = self.register_user(body.get("user") or body.get("author"))
        emoji = body.get("emoji") or {"name": "\N{THUMBS UP SIGN}"}
        if isinstance(emoji, str):
            emoji = {"name": emoji}
        emoji = {"id": str(emoji["id"]) if emoji.get("id") else None, "name": emoji.get("name")}
        before = {s.id: s.seq for s in self.sessions.values()}
        added = await self.add_reaction(ch, m, user, emoji)
        sessions = [s.id for s in self.sessions.values() if s.seq != before.get(s.id, 0)]
        return self._ctl({"added": added, "sessions": sessions})

    async def c_interaction(self, request):
        """A user clicks a button: INTERACTION_CREATE type 3 to the owning shard."""
        body = await self._ctl_json(request)
        ch = self.channels.get(str(body.get("channel_id", "")))
        if ch is None:
            return self._ctl_err(404, "Unknown Channel")
        user = self.register_user(body.get("user") or body.get("author"))
        m = self.message_index.get(str(body.get("message_id", "")))
        if m is None or m["channel_id"] != ch["id"]:
            return self._ctl_err(404, "Unknown Message")
        custom_id = body.get("custom_id")
        if custom_id is None:
            return self._ctl_err(400, "custom_id required")
        gid = ch.get("guild_id")
        iid = self.flakes.next()
        token = "aW50ZXJhY3Rpb246" + base64.urlsafe_b64encode(secrets.token_bytes(48)).decode().rstrip("=")
        payload = {
            "id": iid, "application_id": self.bot_user["id"], "type": INTERACTION_MESSAGE_COMPONENT,
            "data": {"custom_id": custom_id, "component_type": int(body.get("component_type", 2))},
            "channel_id": ch["id"], "channel": self.channel_obj(ch), "token": token, "version": 1,
            "message": self.stored_view(m), "app_permissions": str(DEFAULT_PERMISSIONS),
            "locale": "en-US", "entitlements": [],
            "attachment_size_limit": self.cfg.file_limit,
        }
        if body.get("values") is not None:
            payload["data"]["values"] = body["values"]
        if gid:
            member = dict(self._add_member(gid, user))
            member["permissions"] = str(DEFAULT_PERMISSIONS)
            payload.update({"guild_id": gid, "member": member, "guild_locale": "en-US",
                            "guild": {"id": gid, "locale": "en-US", "features": []},
                            "authorizing_integration_owners": {"0": gid}, "context": 0})
        else:
            payload.update({"user": self.public_user(user),
                            "authorizing_integration_owners": {"0": "0"}, "context": 1})
        self.interactions[iid] = {"id": iid, "token": token, "type": INTERACTION_MESSAGE_COMPONENT,
                                  "channel_id": ch["id"], "message_id": m["id"],
                                  "user": self.public_user(user), "created_at": now_s(),
                                  "acknowledged": False, "ack_type": None, "ack_time": None,
                                  "ack_latency_s": None, "late_callbacks": [], "payload": payload}
        result = await self.fan_out("INTERACTION_CREATE", payload, gid, None)
        return self._ctl({"interaction": {"id": iid, "token": token}, **result})

    async def c_interaction_status(self, request):
        it = self.interactions.get(request.match_info["interaction_id"])
        if it is None:
            return self._ctl_err(404, "Unknown interaction")
        out = {k: v for k, v in it.items() if k != "payload"}
        out["within_deadline"] = bool(it["acknowledged"] and it["ack_latency_s"] <= self.cfg.interaction_deadline_s)
        out["age_s"] = now_s() - it["created_at"]
        return self._ctl(out)

    def _target_connections(self, body):
        conns = [c for c in self.connections.values() if c.open]
        if body.get("connection_id") is not None:
            return [c for c in conns if c.id == int(body["connection_id"])]
        if body.get("session_id") is not None:
            return [c for c in conns if c.session and c.session.id == body["session_id"]]
        if body.get("shard_id") is not None:
            return [c for c in conns if c.session and c.session.shard_id == int(body["shard_id"])]
        return conns

    async def _close_later(self, conn, delay, code, reason):
        await asyncio.sleep(delay)
        if conn.open:
            await conn.close(code, reason)

    async def c_gateway(self, request):
        action = request.match_info["action"]
        body = await self._ctl_json(request)
        targets = self._target_connections(body)
        done = []
        if action == "ack":
            enabled = bool(body.get("enabled", True))
            if any(k in body for k in ("session_id", "shard_id", "connection_id")):
                for c in targets:
                    if c.session is not None:
                        c.session.ack_heartbeats = enabled
                        done.append({"connection_id": c.id, "session_id": c.session.id})
            else:
                self.cfg.ack_heartbeats = enabled
                for s in self.sessions.values():
                    s.ack_heartbeats = None
            self.record({"kind": "control", "action": "gateway/ack", "targets": done, "body": body})
            return self._ctl({"targets": done, "global": self.cfg.ack_heartbeats})
        for c in targets:
            if action == "reconnect":
                await c.send_obj({"op": OP_RECONNECT, "d": None, "s": None, "t": None})
                asyncio.ensure_future(self._close_later(c, self.cfg.reconnect_close_after_s,
                                                        CLOSE_UNKNOWN_ERROR, "reconnect requested"))
            elif action == "invalid_session":
                resumable = bool(body.get("d", False))
                if not resumable and c.session is not None:
                    c.session.invalidate("op 9 d:false sent by test control")
                await c.send_obj({"op": OP_INVALID_SESSION, "d": resumable, "s": None, "t": None})
                asyncio.ensure_future(self._close_later(
                    c, self.cfg.reconnect_close_after_s,
                    CLOSE_UNKNOWN_ERROR if resumable else CLOSE_SESSION_TIMED_OUT, "invalid session"))
            elif action == "heartbeat_request":
                await c.send_obj({"op": OP_HEARTBEAT, "d": None, "s": None, "t": None})
            elif action == "drop":
                c.drop()
            elif action == "close":
                await c.close(int(body.get("code", 4000)), body.get("reason"))
            elif action == "raw":
                data = base64.b64decode(body["binary_b64"]) if body.get("binary_b64") else None
                await c.send_raw(text=body.get("text"), data=data,
                                 through_zlib=bool(body.get("through_zlib", True)))
            elif action == "dispatch":
                if c.session is not None:
                    await c.session.dispatch(body["t"], body.get("d"))
            else:
                return self._ctl_err(404, f"unknown gateway action {action}")
            done.append({"connection_id": c.id, "session_id": c.session.id if c.session else None})
        self.record({"kind": "control", "action": f"gateway/{action}", "targets": done,
                     "body": body})
        return self._ctl({"targets": done})

    async def c_force(self, request):
        body = await self._ctl_json(request)
        rule = {"count": int(body.get("count", 1)), "method": body.get("method"),
                "match": body.get("match"), "status": int(body.get("status", 429))}
        for k in ("scope", "retry_after", "body", "content_type", "headers", "hold_s"):
            if k in body:
                rule[k] = body[k]
        self.forced.append(rule)
        return self._ctl({"ok": True, "rule": rule})

    async def attachment(self, request):
        a = self.attachments.get(request.match_info["attachment_id"])
        if a is None:
            return web.Response(status=404, text="Not Found")
        data, ctype, _ = a
        return web.Response(body=data, content_type=ctype.split(";")[0])

    # ------------------------------------------------------------ app
    def make_app(self):
        app = web.Application(client_max_size=1 << 20)
        app.router.add_route("GET", "/gateway", self.gateway_handler)
        app.router.add_route("GET", "/gateway-resume", self.gateway_handler)
        app.router.add_route("*", "/api/{tail:.*}", self.api_entry)
        app.router.add_route("GET", "/attachments/{channel_id}/{attachment_id}/{filename}", self.attachment)
        app.router.add_route("GET", "/_test/state", self.c_state)
        app.router.add_route("POST", "/_test/config", self.c_config)
        app.router.add_route("POST", "/_test/reset", self.c_reset)
        app.router.add_route("GET", "/_test/requests", self.c_requests)
        app.router.add_route("GET", "/_test/channels/{channel_id}/messages", self.c_channel_messages)
        app.router.add_route("POST", "/_test/guilds", self.c_create_guild)
        app.router.add_route("POST", "/_test/channels", self.c_create_channel)
        app.router.add_route("PATCH", "/_test/channels/{channel_id}", self.c_update_channel)
        app.router.add_route("DELETE", "/_test/channels/{channel_id}", self.c_delete_channel)
        app.router.add_route("DELETE", "/_test/guilds/{guild_id}", self.c_delete_guild)
        app.router.add_route("POST", "/_test/dm_channels", self.c_create_dm)
        app.router.add_route("POST", "/_test/messages", self.c_message)
        app.router.add_route("POST", "/_test/reactions", self.c_reaction)
        app.router.add_route("POST", "/_test/interactions", self.c_interaction)
        app.router.add_route("GET", "/_test/interactions/{interaction_id}", self.c_interaction_status)
        app.router.add_route("POST", "/_test/gateway/{action}", self.c_gateway)
        app.router.add_route("POST", "/_test/force", self.c_force)
        return app


class _NoContentSession:
    intents = 0


# REST routes (paths relative to /api/v{9,10}); bucket kinds map to flags.
R = DiscordTestServer.route
R("GET", r"/gateway", bucket=None, auth=False, global_limit=False)(DiscordTestServer.r_gateway)
R("GET", r"/gateway/bot")(DiscordTestServer.r_gateway_bot)
R("GET", r"/users/@me")(DiscordTestServer.r_users_me)
R("GET", r"/oauth2/applications/@me")(DiscordTestServer.r_application_me)
R("GET", r"/applications/@me")(DiscordTestServer.r_application_me)
R("GET", r"/channels/(?P<channel_id>\d+)")(DiscordTestServer.r_get_channel)
R("POST", r"/channels/(?P<channel_id>\d+)/messages", bucket="message_create")(DiscordTestServer.r_create_message)
R("GET", r"/channels/(?P<channel_id>\d+)/messages")(DiscordTestServer.r_get_messages)
R("GET", r"/channels/(?P<channel_id>\d+)/messages/(?P<message_id>\d+)")(DiscordTestServer.r_get_message)
R("PATCH", r"/channels/(?P<channel_id>\d+)/messages/(?P<message_id>\d+)")(DiscordTestServer.r_edit_message)
R("DELETE", r"/channels/(?P<channel_id>\d+)/messages/(?P<message_id>\d+)")(DiscordTestServer.r_delete_message)
R("POST", r"/channels/(?P<channel_id>\d+)/typing")(DiscordTestServer.r_typing)
R("PUT", r"/channels/(?P<channel_id>\d+)/messages/(?P<message_id>\d+)/reactions/(?P<emoji>[^/]+)/(?:@|%40)me",
  bucket="reaction")(DiscordTestServer.r_add_reaction)
R("POST", r"/interactions/(?P<interaction_id>\d+)/(?P<token>[^/]+)/callback", bucket=None, auth=False,
  global_limit=False)(DiscordTestServer.r_interaction_callback)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Discord API test server (REST v10 + gateway + /_test control API)")
    p.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0 = pick a free one)")
    p.add_argument("--token", default="test-token", help="the bot token clients must present")
    p.add_argument("--bot-username", default="stargazer")
    p.add_argument("--guilds", type=int, default=1, help="number of guilds at start (guild i -> shard i %% n)")
    p.add_argument("--channels", type=int, default=2, help="text channels per guild at start")
    p.add_argument("--shards", type=int, default=1, help="recommended shard count in /gateway/bot")
    p.add_argument("--max-concurrency", type=int, default=1, help="session_start_limit.max_concurrency")
    p.add_argument("--session-start-total", type=int, default=1000)
    p.add_argument("--heartbeat-ms", type=int, default=41250, help="heartbeat_interval sent in Hello")
    p.add_argument("--heartbeat-timeout-factor", type=float, default=1.5,
                   help="close a connection silent for interval*factor (0 = never)")
    p.add_argument("--no-privileged", action="store_true",
                   help="privileged intents (members, presences, message content) not enabled -> 4014")
    p.add_argument("--gateway-limit", type=int, default=120, help="gateway commands per window per connection")
    p.add_argument("--gateway-window-s", type=float, default=60.0)
    p.add_argument("--max-guilds-per-shard", type=int, default=2500, help="above this -> close 4011")
    p.add_argument("--shard-multiple", type=int, default=1, help="num_shards must be a multiple (else 4010)")
    p.add_argument("--session-timeout-s", type=float, default=180.0,
                   help="how long a disconnected session stays resumable")
    p.add_argument("--identify-window-s", type=float, default=5.0,
                   help="max_concurrency window: identifies per rate-limit key")
    p.add_argument("--zlib-chunk-size", type=int, default=0,
                   help="split each zlib-stream message into frames of this size (0 = one frame)")
    p.add_argument("--channel-limit", type=int, default=5, help="message creates per channel per window")
    p.add_argument("--channel-window-s", type=float, default=5.0)
    p.add_argument("--route-limit", type=int, default=5, help="other routes: requests per window per major parameter")
    p.add_argument("--route-window-s", type=float, default=5.0)
    p.add_argument("--reaction-limit", type=int, default=1)
    p.add_argument("--reaction-window-s", type=float, default=0.25)
    p.add_argument("--global-limit", type=int, default=50, help="requests per second per bot")
    p.add_argument("--nonce-window-s", type=float, default=300.0, help="enforce_nonce uniqueness window")
    p.add_argument("--upload-limit", type=int, default=25 * 1024 * 1024, help="max request size in bytes (413/40005)")
    p.add_argument("--file-limit", type=int, default=0, help="max size of one file (0 = same as --upload-limit)")
    return p.parse_args(argv)


async def main_async(args):
    server = DiscordTestServer(args)
    app = server.make_app()
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    server.port = sock.getsockname()[1]
    site = web.SockSite(runner, sock)
    await site.start()
    sys.stdout.write(f"READY port={server.port}\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for c in list(server.connections.values()):
        if c.open:
            c.drop()
    await runner.cleanup()


def main():
    args = parse_args()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
