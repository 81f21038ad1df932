#!/usr/bin/python3
"""A Matrix homeserver for tests: the Client-Server API (v3) + a control API.

Implements the parts of the Matrix Client-Server API (matrix-org/matrix-spec,
content/client-server-api and data/api/client-server/*.yaml) that a chat bot
uses, closely enough that a real client library (matrix-nio) runs against it
unchanged, so that our C++ Matrix adapter can be tested against it.  See
README.md next to this file for what is and is not implemented.

Usage:  homeserver.py --port 0 [--server-name localhost] [options]
Prints one line "READY port=<n>" on stdout once it listens.

Dependencies: Debian 12 python3 + python3-aiohttp (3.8).  Single process,
state in memory, listens on 127.0.0.1 only.
"""

import argparse
import asyncio
import base64
import bisect
import hashlib
import json
import math
import re
import secrets
import signal
import socket
import string
import sys
import time
from urllib.parse import unquote, quote

from aiohttp import web

ROOM_VERSION_DEFAULT = "10"
ROOM_VERSIONS = ("10", "11")          # v10: `redacts` top-level; v11: in content
SPEC_VERSIONS = ["r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7",
                 "v1.8", "v1.9", "v1.10", "v1.11"]
MAX_EVENT_BYTES = 65536               # "Size limits": the complete event
MAX_JSON_BODY = 1 << 20
DEFAULT_TIMELINE_LIMIT = 10           # Synapse's default when a filter has none
PRESENCE_STATES = ("online", "offline", "unavailable")
MEMBERSHIPS = ("invite", "join", "leave", "ban", "knock")
RECEIPT_TYPES = ("m.read", "m.read.private", "m.fully_read")
LOCALPART_RE = re.compile(r"^[a-z0-9._=\-/+]+$")
USER_ID_RE = re.compile(r"^@([^:]+):(.+)$")
# Content types served inline (content repository: "Serving inline content").
INLINE_TYPES = {
    "text/css", "text/plain", "text/csv", "application/json", "application/ld+json",
    "image/jpeg", "image/gif", "image/png", "image/apng", "image/webp", "image/avif",
    "video/mp4", "video/webm", "video/ogg", "video/quicktime", "audio/mp4", "audio/webm",
    "audio/aac", "audio/mpeg", "audio/ogg", "audio/wave", "audio/wav", "audio/x-wav",
    "audio/x-pn-wav", "audio/flac", "audio/x-flac"}
# Stripped state given with invites (Events: "Stripped state").
STRIPPED_STATE_TYPES = ("m.room.create", "m.room.join_rules", "m.room.name", "m.room.avatar",
                        "m.room.topic", "m.room.canonical_alias", "m.room.encryption")
# Redaction algorithm (room versions 10/11): content keys kept per event type.
REDACT_KEEP = {
    "m.room.member": ("membership", "join_authorised_via_users_server"),
    "m.room.create": None,  # v10: "creator"; v11: the whole content
    "m.room.join_rules": ("join_rule", "allow"),
    "m.room.power_levels": ("ban", "events", "events_default", "kick", "redact",
                            "state_default", "users", "users_default"),
    "m.room.history_visibility": ("history_visibility",),
}
NOTIFYING_TYPES = ("m.room.message", "m.room.encrypted", "m.sticker")
CORS_HEADERS = {"Access-Control-Allow-Origin": "*",
                "Access-Control-Allow-Methods": "GET, POST, PUT, DELETE, OPTIONS",
                "Access-Control-Allow-Headers": "X-Requested-With, Content-Type, Authorization"}


def now_ms():
    return int(time.time() * 1000)


def dumps(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def rand_letters(n):
    return "".join(secrets.choice(string.ascii_letters) for _ in range(n))


def new_event_id():
    # room versions 4+: "$" + url-safe unpadded base64 of a 32-byte hash
    return "$" + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def glob_match(pattern, value):
    """Filter type patterns: `*` matches any sequence of characters."""
    if "*" not in pattern:
        return pattern == value
    rx = "^" + ".*".join(re.escape(p) for p in pattern.split("*")) + "$"
    return re.match(rx, value) is not None


# ============================================================ errors
class MatrixError(Exception):
    """A standard error response: {"errcode", "error", ...extra}."""

    def __init__(self, status, errcode, error, extra=None, headers=None):
        super().__init__(error)
        self.status = status
        self.errcode = errcode
        self.error = error
        self.extra = extra or {}
        self.headers = headers or {}

    def body(self):
        b = {"errcode": self.errcode, "error": self.error}
        b.update(self.extra)
        return b


def forbidden(msg):
    return MatrixError(403, "M_FORBIDDEN", msg)


def not_found(msg):
    return MatrixError(404, "M_NOT_FOUND", msg)


def bad_json(msg):
    return MatrixError(400, "M_BAD_JSON", msg)


def invalid_param(msg):
    return MatrixError(400, "M_INVALID_PARAM", msg)


def missing_param(msg):
    return MatrixError(400, "M_MISSING_PARAM", msg)


class _Dropped(Exception):
    """The connection was closed on purpose (forced `drop`)."""


# ============================================================ filters
class EventFilter:
    """EventFilter / RoomEventFilter (definitions/event_filter.yaml, room_event_filter.yaml)."""

    def __init__(self, d=None, default_limit=None):
        d = d or {}
        self.limit = d.get("limit", default_limit)
        self.types = d.get("types")
        self.not_types = d.get("not_types") or []
        self.senders = d.get("senders")
        self.not_senders = d.get("not_senders") or []
        self.rooms = d.get("rooms")
        self.not_rooms = d.get("not_rooms") or []
        self.contains_url = d.get("contains_url")
        self.lazy_load_members = bool(d.get("lazy_load_members", False))
        self.include_redundant_members = bool(d.get("include_redundant_members", False))

    @staticmethod
    def validate(d, where):
        if not isinstance(d, dict):
            raise bad_json(f"{where} must be an object")
        if "limit" in d and (not isinstance(d["limit"], int) or isinstance(d["limit"], bool)
                             or d["limit"] < 1):
            raise bad_json(f"{where}.limit must be an integer greater than 0")
        for k in ("types", "not_types", "senders", "not_senders", "rooms", "not_rooms"):
            if k in d and (not isinstance(d[k], list) or not all(isinstance(x, str) for x in d[k])):
                raise bad_json(f"{where}.{k} must be a list of strings")
        for k in ("contains_url", "lazy_load_members", "include_redundant_members",
                  "unread_thread_notifications"):
            if k in d and not isinstance(d[k], bool):
                raise bad_json(f"{where}.{k} must be a boolean")

    def matches(self, ev, room_id=None):
        t = ev.get("type", "")
        if any(glob_match(p, t) for p in self.not_types):
            return False
        if self.types is not None and not any(glob_match(p, t) for p in self.types):
            return False
        s = ev.get("sender")
        if s in self.not_senders:
            return False
        if self.senders is not None and s not in self.senders:
            return False
        rid = room_id or ev.get("room_id")
        if rid is not None:
            if rid in self.not_rooms:
                return False
            if self.rooms is not None and rid not in self.rooms:
                return False
        if self.contains_url is not None:
            has = isinstance(ev.get("content"), dict) and "url" in ev["content"]
            if has != self.contains_url:
                return False
        return True


class SyncFilter:
    """Filter (definitions/sync_filter.yaml)."""

    def __init__(self, d=None):
        d = d or {}
        room = d.get("room") or {}
        self.raw = d
        self.rooms = room.get("rooms")
        self.not_rooms = room.get("not_rooms") or []
        self.include_leave = bool(room.get("include_leave", False))
        self.timeline = EventFilter(room.get("timeline"), DEFAULT_TIMELINE_LIMIT)
        self.state = EventFilter(room.get("state"))
        self.ephemeral = EventFilter(room.get("ephemeral"))
        self.room_account_data = EventFilter(room.get("account_data"))
        self.presence = EventFilter(d.get("presence"))
        self.account_data = EventFilter(d.get("account_data"))

    @staticmethod
    def validate(d):
        if not isinstance(d, dict):
            raise bad_json("the filter must be a JSON object")
        for k in ("presence", "account_data"):
            if k in d:
                EventFilter.validate(d[k], k)
        if "event_fields" in d and (not isinstance(d["event_fields"], list)
                                    or not all(isinstance(x, str) for x in d["event_fields"])):
            raise bad_json("event_fields must be a list of strings")
        if "event_format" in d and d["event_format"] not in ("client", "federation"):
            raise bad_json("event_format must be 'client' or 'federation'")
        room = d.get("room")
        if room is not None:
            if not isinstance(room, dict):
                raise bad_json("room must be an object")
            for k in ("rooms", "not_rooms"):
                if k in room and (not isinstance(room[k], list)
                                  or not all(isinstance(x, str) for x in room[k])):
                    raise bad_json(f"room.{k} must be a list of strings")
            if "include_leave" in room and not isinstance(room["include_leave"], bool):
                raise bad_json("room.include_leave must be a boolean")
            for k in ("timeline", "state", "ephemeral", "account_data"):
                if k in room:
                    EventFilter.validate(room[k], f"room.{k}")

    def room_allowed(self, rid):
        if rid in self.not_rooms:
            return False
        return self.rooms is None or rid in self.rooms


# ============================================================ rooms
class Room:
    def __init__(self, room_id, version, creator):
        self.id = room_id
        self.version = version
        self.creator = creator
        self.created_ms = now_ms()
        self.events = []            # every event, in stream order
        self.positions = []         # their stream positions (for bisect)
        self.state_events = []      # the state events, in order
        self.state = {}             # (type, state_key) -> current event
        self.members = {}           # user_id -> [(pos, membership)]
        self.typing = {}            # user_id -> expiry (monotonic seconds)
        self.typing_handles = {}
        self.typing_pos = 0
        self.typing_log = []
        self.receipts = {}          # (type, user_id, thread_id) -> {event_id, ts, pos}
        self.account_data = {}      # user_id -> {type: {content, pos}}
        self.aliases = set()
        self.annotations = set()    # (sender, target, key) for M_DUPLICATE_ANNOTATION

    def add(self, ev):
        self.events.append(ev)
        self.positions.append(ev["_pos"])
        if "state_key" in ev:
            key = (ev["type"], ev["state_key"])
            ev["_prev"] = self.state.get(key)
            self.state[key] = ev
            self.state_events.append(ev)
            if ev["type"] == "m.room.member":
                m = ev["content"].get("membership")
                self.members.setdefault(ev["state_key"], []).append((ev["_pos"], m))

    def state_content(self, etype, key=""):
        ev = self.state.get((etype, key))
        return ev["content"] if ev else None

    def membership(self, user):
        h = self.members.get(user)
        return h[-1][1] if h else None

    def membership_at(self, user, pos):
        h = self.members.get(user)
        if not h or pos is None:
            return None
        m = None
        for p, mm in h:
            if p > pos:
                break
            m = mm
        return m

    def last_membership_pos(self, user):
        h = self.members.get(user)
        return h[-1][0] if h else None

    def visible_upto(self, user):
        """The last stream position this user may read (history_visibility
        `shared`): everything while joined, up to the leave if they left;
        None if they never joined."""
        h = self.members.get(user)
        if not h:
            return None
        if h[-1][1] == "join":
            return math.inf
        last_join = None
        for i, (p, m) in enumerate(h):
            if m == "join":
                last_join = i
        if last_join is None:
            return None
        return h[last_join + 1][0]

    def state_at(self, pos):
        """(type, state_key) -> event, the state after every event at or before pos."""
        out = {}
        for ev in self.state_events:
            if ev["_pos"] > pos:
                break
            out[(ev["type"], ev["state_key"])] = ev
        return out

    def events_between(self, lo, hi):
        """Events with lo < pos <= hi, in order."""
        i = bisect.bisect_right(self.positions, lo)
        j = bisect.bisect_right(self.positions, hi) if hi != math.inf else len(self.positions)
        return self.events[i:j]

    def joined(self):
        return [u for u, h in self.members.items() if h[-1][1] == "join"]

    def invited(self):
        return [u for u, h in self.members.items() if h[-1][1] == "invite"]

    def power_levels(self):
        return self.state_content("m.room.power_levels")

    def power_of(self, user):
        pl = self.power_levels()
        if pl is None:
            return 100 if user == self.creator else 0
        users = pl.get("users") or {}
        v = users.get(user, pl.get("users_default", 0))
        return v if isinstance(v, int) else 0

    def level_for(self, what, default):
        pl = self.power_levels()
        if pl is None:
            return default
        v = pl.get(what, default)
        return v if isinstance(v, int) else default

    def level_for_event(self, etype, is_state):
        pl = self.power_levels()
        if pl is None:
            return 0
        ev_levels = pl.get("events") or {}
        if etype in ev_levels and isinstance(ev_levels[etype], int):
            return ev_levels[etype]
        if is_state:
            return pl.get("state_default", 50)
        return pl.get("events_default", 0)

    def name(self):
        c = self.state_content("m.room.name")
        return c.get("name") if c else None

    def encrypted(self):
        return ("m.room.encryption", "") in self.state


# ============================================================ the server
class Homeserver:
    ROUTES = []

    def __init__(self, args):
        self.args = args
        self.server_name = args.server_name
        self.port = None
        self.instance = secrets.token_hex(3)
        self.cfg = {"upload_limit": args.upload_limit,
                    "freeze_legacy_media": bool(args.freeze_legacy_media),
                    "txn_ttl_s": args.txn_ttl_s,
                    "rc_message_per_s": args.rc_message_per_s,
                    "rc_message_burst": args.rc_message_burst,
                    "max_sync_timeout_ms": args.max_sync_timeout_ms}
        self.pos = 0
        self._wake = None
        self.last_ts = 0
        self.users = {}             # user_id -> user dict
        self.tokens = {}            # access_token -> {user_id, device_id}
        self.rooms = {}
        self.aliases = {}           # #alias:server -> room_id
        self.event_index = {}       # event_id -> (room, event)
        self.filters = {}           # user_id -> [filter dict]
        self.txns = {}              # (user, device, endpoint key) -> {status, body, t}
        self.uploads = {}           # media_id -> dict
        self.records = []
        self.record_base = 0
        self.forced = []
        self.rule_seq = 0
        self.counters = {}
        self.rc_buckets = {}        # user -> [tokens, last]

    # ------------------------------------------------------------ stream
    def bump(self):
        self.pos += 1
        return self.pos

    def notify(self):
        fut = self._wake
        self._wake = asyncio.get_running_loop().create_future()
        if fut is not None and not fut.done():
            fut.set_result(None)

    def wake_future(self):
        if self._wake is None:
            self._wake = asyncio.get_running_loop().create_future()
        return self._wake

    def sync_token(self, pos):
        return f"s{pos}_{self.instance}"

    def page_token(self, pos):
        return f"t{pos}_{self.instance}"

    def parse_token(self, tok, kinds, what):
        m = re.match(r"^([st])(\d+)_([0-9a-f]+)$", tok or "")
        if not m or m.group(1) not in kinds or m.group(3) != self.instance or int(m.group(2)) > self.pos:
            raise invalid_param(f"Invalid {what} token")
        return int(m.group(2))

    def count(self, key, n=1):
        self.counters[key] = self.counters.get(key, 0) + n

    def next_ts(self):
        t = max(now_ms(), self.last_ts)
        self.last_ts = t
        return t

    # ------------------------------------------------------------ users
    def user_id_for(self, who):
        if who.startswith("@"):
            return who
        return f"@{who}:{self.server_name}"

    def create_user(self, user_id, password=None, displayname=None):
        m = USER_ID_RE.match(user_id)
        if not m or not LOCALPART_RE.match(m.group(1)) or m.group(2) != self.server_name:
            raise invalid_param(f"invalid user id {user_id!r} (localpart [a-z0-9._=-/+], "
                                f"server {self.server_name})")
        u = self.users.get(user_id)
        if u is None:
            u = self.users[user_id] = {
                "user_id": user_id, "password": password,
                "profile": {"displayname": displayname or m.group(1)},
                "devices": {}, "account_data": {},
                "presence": {"presence": "offline", "status_msg": None, "last_active_ms": now_ms(),
                             "pos": 0, "set": False},
                "created_ms": now_ms()}
        else:
            if password is not None:
                u["password"] = password
            if displayname is not None:
                u["profile"]["displayname"] = displayname
        return u

    def new_device_token(self, user_id, device_id=None, display_name=None):
        u = self.users[user_id]
        device_id = device_id or "".join(secrets.choice(string.ascii_uppercase) for _ in range(10))
        dev = u["devices"].setdefault(device_id, {"device_id": device_id,
                                                  "display_name": display_name,
                                                  "last_seen_ts": now_ms()})
        if display_name and not dev.get("display_name"):
            dev["display_name"] = display_name
        lp = USER_ID_RE.match(user_id).group(1)
        token = "syt_" + base64.urlsafe_b64encode(lp.encode()).decode().rstrip("=") + "_" + \
            secrets.token_urlsafe(18)
        self.tokens[token] = {"user_id": user_id, "device_id": device_id, "created_ms": now_ms()}
        return token, device_id

    def displayname(self, user_id):
        u = self.users.get(user_id)
        return u["profile"].get("displayname") if u else None

    # ------------------------------------------------------------ events
    def make_event(self, room, etype, sender, content, state_key=None, redacts=None, txn=None):
        ev = {"event_id": new_event_id(), "type": etype, "sender": sender,
              "origin_server_ts": self.next_ts(), "content": content, "room_id": room.id,
              "_txn": txn, "_redacted_by": None}
        if state_key is not None:
            ev["state_key"] = state_key
        if redacts is not None:
            ev["redacts"] = redacts
        return ev

    def check_size(self, ev):
        pub = {k: v for k, v in ev.items() if not k.startswith("_")}
        # federation format adds hashes, signatures, auth/prev events: allow ~1 KiB for them
        if len(dumps(pub).encode("utf-8")) + 1024 > MAX_EVENT_BYTES:
            raise MatrixError(413, "M_TOO_LARGE", "event too large")

    def persist(self, room, ev):
        ev["_pos"] = self.bump()
        room.add(ev)
        self.event_index[ev["event_id"]] = (room, ev)
        if ev["type"] == "m.room.redaction":
            target = ev.get("redacts") or (ev["content"] or {}).get("redacts")
            hit = self.event_index.get(target) if target else None
            if hit is not None and hit[0] is room and hit[1]["_redacted_by"] is None:
                hit[1]["_redacted_by"] = ev
                rel = (hit[1].get("content") or {}).get("m.relates_to") or {}
                if rel.get("rel_type") == "m.annotation":
                    room.annotations.discard((hit[1]["sender"], rel.get("event_id"), rel.get("key")))
        if ev["type"] == "m.reaction":
            rel = ev["content"].get("m.relates_to") or {}
            if rel.get("rel_type") == "m.annotation":
                room.annotations.add((ev["sender"], rel.get("event_id"), rel.get("key")))
        self.count("events")
        self.notify()
        return ev

    def pruned_content(self, room, ev):
        keep = REDACT_KEEP.get(ev["type"], ())
        c = ev.get("content") or {}
        if ev["type"] == "m.room.create":
            return dict(c) if room.version == "11" else {k: v for k, v in c.items() if k == "creator"}
        if ev["type"] == "m.room.power_levels" and room.version == "11":
            keep = keep + ("invite",)
        if ev["type"] == "m.room.redaction" and room.version == "11":
            keep = ("redacts",)
        return {k: v for k, v in c.items() if k in keep}

    def client_event(self, room, ev, viewer=None, device=None, with_room_id=True, depth=0):
        out = {"event_id": ev["event_id"], "type": ev["type"], "sender": ev["sender"],
               "origin_server_ts": ev["origin_server_ts"]}
        red = ev.get("_redacted_by")
        out["content"] = self.pruned_content(room, ev) if red is not None else ev["content"]
        if with_room_id:
            out["room_id"] = room.id
        if "state_key" in ev:
            out["state_key"] = ev["state_key"]
        if "redacts" in ev:
            out["redacts"] = ev["redacts"]
        unsigned = {"age": max(0, now_ms() - ev["origin_server_ts"])}
        txn = ev.get("_txn")
        if txn and viewer == txn[0] and device == txn[1]:
            unsigned["transaction_id"] = txn[2]
        prev = ev.get("_prev")
        if prev is not None:
            unsigned["prev_content"] = (self.pruned_content(room, prev) if prev.get("_redacted_by")
                                        else prev["content"])
            unsigned["replaces_state"] = prev["event_id"]
        if red is not None and depth == 0:
            unsigned["redacted_because"] = self.client_event(room, red, viewer, device, with_room_id,
                                                             depth=1)
        if viewer is not None:
            unsigned["membership"] = room.membership_at(viewer, ev["_pos"]) or "leave"
        out["unsigned"] = unsigned
        return out

    def stripped(self, ev):
        return {"type": ev["type"], "state_key": ev["state_key"], "sender": ev["sender"],
                "content": ev["content"]}

    # ------------------------------------------------------------ room operations
    def room_or_403(self, room_id, user, what="in room"):
        room = self.rooms.get(room_id)
        if room is None or room.membership(user) != "join":
            raise forbidden(f"User {user} not {what} {room_id}")
        return room

    def check_event_auth(self, room, sender, etype, state_key=None):
        is_state = state_key is not None
        if room.membership(sender) != "join":
            raise forbidden(f"User {sender} not in room {room.id}")
        need = room.level_for_event(etype, is_state)
        have = room.power_of(sender)
        if have < need:
            raise forbidden(f"You don't have permission to post that to the room. "
                            f"user_level ({have}) < send_level ({need})")
        if is_state and state_key.startswith("@") and state_key != sender:
            raise forbidden("You are not allowed to set others state")

    def member_content(self, user_id, membership, extra=None):
        c = {"membership": membership}
        if membership in ("join", "invite"):
            u = self.users.get(user_id)
            if u:
                if u["profile"].get("displayname") is not None:
                    c["displayname"] = u["profile"]["displayname"]
                if u["profile"].get("avatar_url") is not None:
                    c["avatar_url"] = u["profile"]["avatar_url"]
        if extra:
            c.update(extra)
        return c

    def change_membership(self, room, sender, target, membership, reason=None, extra=None,
                          check=True):
        """Applies the membership auth rules (simplified: join rules, invites,
        bans, kick/ban/invite power levels) and sends the m.room.member event.
        Returns the event, or None when nothing changes."""
        cur = room.membership(target)
        if check:
            sender_m = room.membership(sender)
            if membership == "join":
                if sender != target:
                    raise forbidden("Cannot force another user to join.")
                if cur == "ban":
                    raise forbidden("You are banned from this room")
                jr = (room.state_content("m.room.join_rules") or {}).get("join_rule", "invite")
                if cur not in ("join", "invite") and jr != "public":
                    raise forbidden("You are not invited to this room.")
            elif membership == "invite":
                if sender_m != "join":
                    raise forbidden(f"User {sender} not in room {room.id}")
                if cur == "join":
                    raise forbidden(f"{target} is already in the room.")
                if cur == "ban":
                    raise forbidden(f"{target} is banned from the room")
                if room.power_of(sender) < room.level_for("invite", 0):
                    raise forbidden("You don't have permission to invite users")
                if cur == "invite":
                    return None
            elif membership == "leave":
                if sender == target:
                    if cur in (None,):
                        raise forbidden(f"User {target} not in room {room.id}")
                    if cur in ("leave",):
                        return None
                    if cur == "ban":
                        raise forbidden("You are banned from this room")
                else:
                    if sender_m != "join":
                        raise forbidden(f"User {sender} not in room {room.id}")
                    lvl = room.level_for("ban" if cur == "ban" else "kick", 50)
                    if room.power_of(sender) < lvl or (cur != "ban" and
                                                       room.power_of(sender) <= room.power_of(target)):
                        raise forbidden("You don't have permission to kick/unban this user")
                    if cur in (None, "leave"):
                        raise forbidden(f"{target} is not in the room")
            elif membership == "ban":
                if sender_m != "join":
                    raise forbidden(f"User {sender} not in room {room.id}")
                if room.power_of(sender) < room.level_for("ban", 50) or \
                        room.power_of(sender) <= room.power_of(target):
                    raise forbidden("You don't have permission to ban this user")
            else:
                raise invalid_param(f"unsupported membership {membership!r}")
        if membership == "join" and cur == "join" and not extra:
            # re-joining with an unchanged profile creates nothing (as Synapse)
            cur_c = room.state_content("m.room.member", target) or {}
            want = self.member_content(target, "join")
            if all(cur_c.get(k) == v for k, v in want.items()):
                return None
        content = self.member_content(target, membership, extra)
        if reason:
            content["reason"] = reason
        ev = self.make_event(room, "m.room.member", sender, content, state_key=target)
        self.persist(room, ev)
        if membership != "join":
            self.set_typing(room, target, False, 0)
        return ev

    def default_power_levels(self, creator, preset, invitees):
        pl = {"users": {creator: 100}, "users_default": 0,
              "events": {"m.room.name": 50, "m.room.power_levels": 100,
                         "m.room.history_visibility": 100, "m.room.canonical_alias": 50,
                         "m.room.avatar": 50, "m.room.tombstone": 100,
                         "m.room.server_acl": 100, "m.room.encryption": 100},
              "events_default": 0, "state_default": 50, "ban": 50, "kick": 50, "redact": 50,
              "invite": 50, "historical": 100}
        if preset == "trusted_private_chat":
            for u in invitees:
                pl["users"][u] = 100
        if preset in ("private_chat", "trusted_private_chat"):
            pl["invite"] = 0
        return pl

    def create_room(self, creator, body):
        """POST /createRoom, in the order the spec gives (create_room.yaml)."""
        for k, typ in (("name", str), ("topic", str), ("room_alias_name", str), ("preset", str),
                       ("visibility", str), ("room_version", str), ("is_direct", bool),
                       ("invite", list), ("initial_state", list), ("creation_content", dict),
                       ("power_level_content_override", dict)):
            if k in body and not isinstance(body[k], typ):
                raise bad_json(f"{k} must be of type {typ.__name__}")
        version = body.get("room_version", ROOM_VERSION_DEFAULT)
        if version not in ROOM_VERSIONS:
            raise MatrixError(400, "M_UNSUPPORTED_ROOM_VERSION",
                              f"Your homeserver does not support this room version ({version})")
        visibility = body.get("visibility", "private")
        if visibility not in ("public", "private"):
            raise bad_json("visibility must be 'public' or 'private'")
        preset = body.get("preset") or ("public_chat" if visibility == "public" else "private_chat")
        if preset not in ("private_chat", "public_chat", "trusted_private_chat"):
            raise bad_json(f"'{preset}' is not a valid preset")
        invitees = body.get("invite", [])
        for u in invitees:
            if not isinstance(u, str) or not USER_ID_RE.match(u):
                raise invalid_param(f"invalid user id in invite: {u!r}")
            if u not in self.users:
                raise not_found(f"Unknown user {u}")
        alias = None
        if "room_alias_name" in body:
            lp = body["room_alias_name"]
            if not lp or re.search(r"[\s:#]", lp):
                raise invalid_param("Invalid characters in room alias")
            alias = f"#{lp}:{self.server_name}"
            if alias in self.aliases:
                raise MatrixError(400, "M_ROOM_IN_USE", "Room alias already taken")
        initial = []
        for i, st in enumerate(body.get("initial_state", [])):
            if not isinstance(st, dict) or not isinstance(st.get("type"), str) or \
                    not isinstance(st.get("content"), dict) or \
                    not isinstance(st.get("state_key", ""), str):
                raise bad_json(f"initial_state[{i}] needs type (string), content (object), "
                               f"state_key (string)")
            initial.append(st)
        room_id = f"!{rand_letters(18)}:{self.server_name}"
        room = Room(room_id, version, creator)
        self.rooms[room_id] = room
        create_c = dict(body.get("creation_content") or {})
        if version != "11":
            create_c["creator"] = creator
        create_c["room_version"] = version
        self.persist(room, self.make_event(room, "m.room.create", creator, create_c, ""))
        self.persist(room, self.make_event(room, "m.room.member", creator,
                                           self.member_content(creator, "join"), creator))
        init = {(st["type"], st.get("state_key", "")): st["content"] for st in initial}
        pl = init.pop(("m.room.power_levels", ""), None)
        if pl is None:
            pl = self.default_power_levels(creator, preset, invitees)
            pl.update(body.get("power_level_content_override") or {})
        self.persist(room, self.make_event(room, "m.room.power_levels", creator, pl, ""))
        if alias and ("m.room.canonical_alias", "") not in init:
            self.persist(room, self.make_event(room, "m.room.canonical_alias", creator,
                                               {"alias": alias}, ""))
        if ("m.room.join_rules", "") not in init:
            jr = "public" if preset == "public_chat" else "invite"
            self.persist(room, self.make_event(room, "m.room.join_rules", creator, {"join_rule": jr}, ""))
        if ("m.room.history_visibility", "") not in init:
            self.persist(room, self.make_event(room, "m.room.history_visibility", creator,
                                               {"history_visibility": "shared"}, ""))
        if preset != "public_chat" and ("m.room.guest_access", "") not in init:
            self.persist(room, self.make_event(room, "m.room.guest_access", creator,
                                               {"guest_access": "can_join"}, ""))
        for (t, k), c in init.items():
            if (t == "m.room.name" and "name" in body) or (t == "m.room.topic" and "topic" in body):
                continue
            self.persist(room, self.make_event(room, t, creator, c, k))
        if "name" in body:
            self.persist(room, self.make_event(room, "m.room.name", creator, {"name": body["name"]}, ""))
        if "topic" in body:
            self.persist(room, self.make_event(room, "m.room.topic", creator,
                                               {"topic": body["topic"],
                                                "m.topic": [{"body": body["topic"],
                                                             "mimetype": "text/plain"}]}, ""))
        if alias:
            self.aliases[alias] = room_id
            room.aliases.add(alias)
        for u in invitees:
            extra = {"is_direct": True} if body.get("is_direct") else None
            self.change_membership(room, creator, u, "invite", extra=extra, check=False)
        return room

    def send_event(self, room, sender, etype, content, txn=None, check=True):
        if check:
            self.check_event_auth(room, sender, etype)
        redacts = None
        if etype == "m.room.redaction" and room.version != "11":
            content = dict(content)
            redacts = content.pop("redacts", None)
            if not isinstance(redacts, str):
                raise bad_json("m.room.redaction needs a 'redacts' event id")
        if etype == "m.reaction":
            rel = content.get("m.relates_to") or {}
            if rel.get("rel_type") == "m.annotation" and \
                    (sender, rel.get("event_id"), rel.get("key")) in room.annotations:
                raise MatrixError(400, "M_DUPLICATE_ANNOTATION",
                                  "Can't send same reaction twice")
        ev = self.make_event(room, etype, sender, content, redacts=redacts, txn=txn)
        self.check_size(ev)
        if etype == "m.room.redaction" and check:
            target = redacts or content.get("redacts")
            hit = self.event_index.get(target)
            if hit is not None and hit[0] is room and hit[1]["sender"] != sender and \
                    room.power_of(sender) < room.level_for("redact", 50):
                raise forbidden("You don't have permission to redact events")
        return self.persist(room, ev)

    def send_state(self, room, sender, etype, state_key, content, check=True):
        if etype == "m.room.member":
            membership = content.get("membership")
            if membership not in MEMBERSHIPS:
                raise bad_json("m.room.member needs a valid membership")
            extra = {k: v for k, v in content.items() if k not in ("membership", "reason")}
            ev = self.change_membership(room, sender, state_key, membership,
                                        reason=content.get("reason"), extra=extra or None,
                                        check=check)
            if ev is None:
                ev = room.state[("m.room.member", state_key)]
            return ev
        if check:
            self.check_event_auth(room, sender, etype, state_key)
        cur = room.state.get((etype, state_key))
        if cur is not None and cur["content"] == content and cur["sender"] == sender and \
                cur.get("_redacted_by") is None:
            return cur          # identical state: Synapse returns the current event
        ev = self.make_event(room, etype, sender, content, state_key=state_key)
        self.check_size(ev)
        return self.persist(room, ev)

    def set_typing(self, room, user, typing, timeout_ms):
        loop = asyncio.get_running_loop()
        h = room.typing_handles.pop(user, None)
        if h is not None:
            h.cancel()
        was = user in room.typing
        if typing:
            room.typing[user] = time.monotonic() + timeout_ms / 1000.0
            room.typing_handles[user] = loop.call_later(timeout_ms / 1000.0, self._typing_expired,
                                                        room, user)
            changed = not was
        else:
            room.typing.pop(user, None)
            changed = was
        if changed:
            room.typing_pos = self.bump()
            self.notify()

    def _typing_expired(self, room, user):
        room.typing_handles.pop(user, None)
        if room.typing.pop(user, None) is not None:
            room.typing_log.append({"user_id": user, "typing": False, "expired": True,
                                    "ts": now_ms()})
            room.typing_pos = self.bump()
            self.notify()

    def set_receipt(self, room, user, rtype, event_id, thread_id=None):
        if rtype == "m.fully_read":
            self.set_room_account_data(room, user, "m.fully_read", {"event_id": event_id})
            return
        key = (rtype, user, thread_id)
        cur = room.receipts.get(key)
        if cur is not None and cur["event_id"] == event_id:
            return
        room.receipts[key] = {"event_id": event_id, "ts": now_ms(), "pos": self.bump(),
                              "thread_id": thread_id}
        self.notify()

    def set_room_account_data(self, room, user, atype, content):
        room.account_data.setdefault(user, {})[atype] = {"content": content, "pos": self.bump()}
        self.notify()

    def set_presence(self, user_id, presence, status_msg=None, keep_msg=False):
        u = self.users[user_id]
        p = u["presence"]
        new_msg = p["status_msg"] if keep_msg else status_msg
        changed = p["presence"] != presence or p["status_msg"] != new_msg or not p["set"]
        p["presence"] = presence
        p["status_msg"] = new_msg
        p["last_active_ms"] = now_ms()
        p["set"] = True
        if changed:
            p["pos"] = self.bump()
            self.notify()

    def presence_content(self, user_id):
        u = self.users[user_id]
        p = u["presence"]
        c = {"presence": p["presence"], "last_active_ago": max(0, now_ms() - p["last_active_ms"]),
             "currently_active": p["presence"] == "online"}
        if p["status_msg"]:
            c["status_msg"] = p["status_msg"]
        prof = u["profile"]
        if prof.get("displayname") is not None:
            c["displayname"] = prof["displayname"]
        if prof.get("avatar_url") is not None:
            c["avatar_url"] = prof["avatar_url"]
        return c

    def stripped_state(self, room, user):
        out = []
        for t in STRIPPED_STATE_TYPES:
            ev = room.state.get((t, ""))
            if ev is not None:
                out.append(self.stripped(ev))
        mine = room.state.get(("m.room.member", user))
        if mine is not None:
            inviter = room.state.get(("m.room.member", mine["sender"]))
            if inviter is not None and mine["sender"] != user:
                out.append(self.stripped(inviter))
            out.append(self.stripped(mine))
        return out

    # ------------------------------------------------------------ sync
    def _state_delta(self, room, since_pos, start_pos, end_pos, tl_ids, full):
        """The `state` block: what the client needs, together with the
        timeline's state events, to know the state at the end of the timeline.
        Initial/full: the state at the start of the timeline, plus the final
        value of any key whose change the (filtered) timeline does not carry.
        Incremental: only keys that changed since `since`."""
        start = room.state_at(start_pos)
        end = room.state_at(end_pos)
        prev = {} if full else room.state_at(since_pos)
        out = []
        for key in set(start) | set(end):
            s_ev, e_ev = start.get(key), end.get(key)
            if e_ev is not None and e_ev["event_id"] in tl_ids:
                pick = s_ev       # the timeline carries the change; give the state before it
            else:
                pick = e_ev if e_ev is not None else s_ev
            if pick is None:
                continue
            if not full and prev.get(key) is pick:
                continue
            out.append(pick)
        out.sort(key=lambda e: e["_pos"])
        return out

    def _room_block(self, room, user, device, since_pos, joined_at_since, flt, full_state, end_pos):
        """timeline + state for a joined (end_pos = now) or left (end_pos = the
        leave) room. Returns (timeline events, limited, prev_batch pos, state)."""
        if since_pos is None or not joined_at_since:
            cand = room.events_between(0, end_pos)     # initial sync, or newly joined
            full = True
        else:
            cand = room.events_between(since_pos, end_pos)
            full = bool(full_state)
        flt_events = [e for e in cand if flt.timeline.matches(e, room.id)]
        limit = flt.timeline.limit or DEFAULT_TIMELINE_LIMIT
        limited = len(flt_events) > limit
        tl = flt_events[-limit:] if limit else []
        start_pos = (tl[0]["_pos"] - 1) if tl else end_pos
        tl_ids = {e["event_id"] for e in tl}
        state = self._state_delta(room, since_pos, start_pos, end_pos, tl_ids, full)
        state = [e for e in state if flt.state.matches(e, room.id)]
        if flt.state.lazy_load_members:
            senders = {e["sender"] for e in tl} | {user}
            state = [e for e in state if e["type"] != "m.room.member" or e["state_key"] in senders]
        if flt.state.limit:
            state = state[-flt.state.limit:]
        return tl, limited, start_pos, state

    def _ephemeral(self, room, user, since_pos, flt):
        out = []
        if (since_pos is None and room.typing) or (since_pos is not None and room.typing_pos > since_pos):
            out.append({"type": "m.typing", "content": {"user_ids": sorted(room.typing)}})
        content = {}
        for (rtype, uid, thread), r in room.receipts.items():
            if since_pos is not None and r["pos"] <= since_pos:
                continue
            if rtype == "m.read.private" and uid != user:
                continue
            entry = {"ts": r["ts"]}
            if thread:
                entry["thread_id"] = thread
            content.setdefault(r["event_id"], {}).setdefault(rtype, {})[uid] = entry
        if content:
            out.append({"type": "m.receipt", "content": content})
        out = [e for e in out if flt.ephemeral.matches({"type": e["type"]}, room.id)]
        if flt.ephemeral.limit:
            out = out[:flt.ephemeral.limit]
        return out

    def _unread(self, room, user):
        r = room.receipts.get(("m.read", user, None)) or room.receipts.get(("m.read.private", user, None))
        after = 0
        if r is not None:
            hit = self.event_index.get(r["event_id"])
            if hit is not None:
                after = hit[1]["_pos"]
        if not after:
            h = room.members.get(user) or []
            joins = [p for p, m in h if m == "join"]
            after = joins[-1] if joins else 0
        n = hl = 0
        for e in room.events_between(after, math.inf):
            if e["sender"] == user or e["type"] not in NOTIFYING_TYPES or e.get("_redacted_by"):
                continue
            n += 1
            mentions = (e.get("content") or {}).get("m.mentions") or {}
            if user in (mentions.get("user_ids") or []):
                hl += 1
        return {"notification_count": n, "highlight_count": hl}

    def compute_sync(self, user, device, since_pos, flt, full_state):
        now = self.pos
        join, invite, leave = {}, {}, {}
        ser = lambda room, e: self.client_event(room, e, user, device, with_room_id=False)  # noqa: E731
        for room in self.rooms.values():
            if user not in room.members or not flt.room_allowed(room.id):
                continue
            m_now = room.membership(user)
            m_since = room.membership_at(user, since_pos) if since_pos is not None else None
            if m_now == "join":
                joined_at_since = m_since == "join"
                tl, limited, start_pos, state = self._room_block(
                    room, user, device, since_pos, joined_at_since, flt, full_state, now)
                eph = self._ephemeral(room, user, since_pos if joined_at_since else None, flt)
                adata = []
                for t, a in (room.account_data.get(user) or {}).items():
                    if (since_pos is None or not joined_at_since or a["pos"] > since_pos) and \
                            flt.room_account_data.matches({"type": t}, room.id):
                        adata.append({"type": t, "content": a["content"]})
                fresh = since_pos is None or not joined_at_since or full_state
                if not (fresh or tl or state or eph or adata):
                    continue
                heroes = [u for u in room.joined() + room.invited() if u != user][:5]
                join[room.id] = {
                    "timeline": {"events": [ser(room, e) for e in tl], "limited": limited,
                                 "prev_batch": self.page_token(start_pos)},
                    "state": {"events": [ser(room, e) for e in state]},
                    "ephemeral": {"events": eph},
                    "account_data": {"events": adata},
                    "unread_notifications": self._unread(room, user),
                    "summary": {"m.heroes": heroes, "m.joined_member_count": len(room.joined()),
                                "m.invited_member_count": len(room.invited())},
                }
            elif m_now == "invite":
                p = room.last_membership_pos(user)
                if since_pos is None or p > since_pos or full_state:
                    invite[room.id] = {"invite_state": {"events": self.stripped_state(room, user)}}
            elif m_now in ("leave", "ban"):
                p = room.last_membership_pos(user)
                if (since_pos is not None and p > since_pos) or \
                        ((since_pos is None or full_state) and flt.include_leave):
                    joined_at_since = m_since == "join"
                    upto = room.visible_upto(user)
                    if upto is None:     # rejected invite / never joined: only the leave
                        ev = room.state[("m.room.member", user)]
                        tl, limited, start_pos, state = [ev], False, ev["_pos"] - 1, []
                    else:
                        tl, limited, start_pos, state = self._room_block(
                            room, user, device, since_pos, joined_at_since, flt, full_state, upto)
                    leave[room.id] = {
                        "timeline": {"events": [ser(room, e) for e in tl], "limited": limited,
                                     "prev_batch": self.page_token(start_pos)},
                        "state": {"events": [ser(room, e) for e in state]},
                        "account_data": {"events": []},
                    }
        resp = {"next_batch": self.sync_token(now)}
        if join or invite or leave:
            resp["rooms"] = {}
            if join:
                resp["rooms"]["join"] = join
            if invite:
                resp["rooms"]["invite"] = invite
            if leave:
                resp["rooms"]["leave"] = leave
        u = self.users[user]
        adata = [{"type": t, "content": a["content"]} for t, a in u["account_data"].items()
                 if (since_pos is None or a["pos"] > since_pos) and flt.account_data.matches({"type": t})]
        if adata:
            resp["account_data"] = {"events": adata}
        pres = []
        peers = {user}
        for room in self.rooms.values():
            if room.membership(user) == "join":
                peers.update(room.joined())
        for uid in sorted(peers):
            p = self.users[uid]["presence"] if uid in self.users else None
            if p is None or not p["set"] or (since_pos is not None and p["pos"] <= since_pos):
                continue
            ev = {"type": "m.presence", "sender": uid, "content": self.presence_content(uid)}
            if flt.presence.matches(ev):
                pres.append(ev)
        if flt.presence.limit:
            pres = pres[:flt.presence.limit]
        if pres:
            resp["presence"] = {"events": pres}
        has_content = bool(join or invite or leave or adata or pres)
        resp["device_one_time_keys_count"] = {"signed_curve25519": 0}
        return resp, has_content

    def resolve_filter(self, user, raw):
        if raw is None or raw == "":
            return SyncFilter()
        if raw.startswith("{"):
            try:
                d = json.loads(raw)
            except ValueError:
                raise MatrixError(400, "M_NOT_JSON", "Invalid filter JSON")
            SyncFilter.validate(d)
            return SyncFilter(d)
        if not raw.isdigit():
            raise invalid_param("Invalid filter ID")
        lst = self.filters.get(user) or []
        if int(raw) >= len(lst):
            raise not_found("No such filter")
        return SyncFilter(lst[int(raw)])

    # ============================================================ HTTP plumbing
    @classmethod
    def route(cls, method, pattern, auth=True, prefix="client", empty_body_ok=False):
        """prefix: `client` (/_matrix/client/{v3,r0}), `client_v1`
        (/_matrix/client/v1), `media` (/_matrix/media/{v3,r0}), `root` (pattern is absolute)."""
        def deco(fn):
            if prefix == "client":
                full = r"/_matrix/client/(?:v3|r0)" + pattern
            elif prefix == "client_v1":
                full = r"/_matrix/client/v1" + pattern
            elif prefix == "media":
                full = r"/_matrix/media/(?:v3|r0)" + pattern
            else:
                full = pattern
            cls.ROUTES.append((method, re.compile("^" + full + "$"), pattern, fn, auth, empty_body_ok))
            return fn
        return deco

    def _json(self, status, body, headers=None):
        h = dict(CORS_HEADERS)
        h.update(headers or {})
        return web.Response(status=status, body=dumps(body).encode("utf-8"),
                            content_type="application/json", headers=h)

    def _error(self, e, rec):
        rec["status"] = e.status
        rec["errcode"] = e.errcode
        rec["error"] = e.error
        self.count(f"errors_{e.errcode}")
        return self._json(e.status, e.body(), e.headers)

    def _auth(self, request, rec, required):
        hdr = request.headers.get("Authorization")
        q = request.query.get("access_token")
        token = None
        if hdr is not None:
            m = re.match(r"^Bearer (\S+)$", hdr)
            if not m:
                raise MatrixError(401, "M_MISSING_TOKEN", "Invalid Authorization header.")
            token = m.group(1)
            rec["auth"] = "header"
            if q is not None:
                raise MatrixError(401, "M_MISSING_TOKEN",
                                  "Mixing Authorization headers and access_token query parameters.")
        elif q is not None:
            token = q
            rec["auth"] = "query"
        if token is None:
            if required:
                raise MatrixError(401, "M_MISSING_TOKEN", "Missing access token")
            return None, None, None
        t = self.tokens.get(token)
        if t is None:       # a token that is given must be valid, even where optional
            rec["auth"] = (rec.get("auth") or "") + ":unknown"
            raise MatrixError(401, "M_UNKNOWN_TOKEN", "Unrecognised access token",
                              extra={"soft_logout": False})
        u = self.users[t["user_id"]]
        dev = u["devices"].get(t["device_id"])
        if dev is not None:
            dev["last_seen_ts"] = now_ms()
        return t["user_id"], t["device_id"], token

    async def read_json(self, ctx, empty_ok=False):
        if ctx.get("_body_cache") is not None:
            return ctx["_body_cache"]
        request = ctx["request"]
        raw = await self._read_limited(request, MAX_JSON_BODY)
        ctx["rec"]["body_bytes"] = len(raw)
        if not raw.strip():
            if empty_ok:
                ctx["_body_cache"] = {}
                return {}
            raise MatrixError(400, "M_NOT_JSON", "Content not JSON.")
        try:
            body = json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            ctx["rec"]["body"] = {"_not_json": raw[:200].decode("utf-8", "replace")}
            raise MatrixError(400, "M_NOT_JSON", "Content not JSON.")
        if not isinstance(body, dict):
            raise bad_json("Content must be a JSON object.")
        rec_body = body
        if len(raw) > 65536:
            rec_body = {"_size": len(raw), "_sha256": hashlib.sha256(raw).hexdigest(),
                        "_keys": sorted(body)[:50]}
        elif "password" in body:
            rec_body = dict(body)
            rec_body["password"] = "<redacted>"
        ctx["rec"]["body"] = rec_body
        ctx["_body_cache"] = body
        return body

    async def _read_limited(self, request, limit):
        cl = request.content_length
        if cl is not None and cl > limit:
            raise MatrixError(413, "M_TOO_LARGE", f"Request body too large (limit {limit} bytes)")
        chunks = []
        total = 0
        async for chunk in request.content.iter_chunked(1 << 16):
            total += len(chunk)
            if total > limit:
                raise MatrixError(413, "M_TOO_LARGE", f"Request body too large (limit {limit} bytes)")
            chunks.append(chunk)
        return b"".join(chunks)

    def _take_forced(self, method, path, user):
        for f in self.forced:
            if f["count"] == 0:
                continue
            if f.get("method") and f["method"].upper() != method:
                continue
            if f.get("user") and f["user"] != user:
                continue
            if f.get("path") and not re.search(f["path"], path):
                continue
            if f["count"] > 0:
                f["count"] -= 1
            f["hits"] += 1
            return f
        return None

    def _forced_error(self, f):
        status = int(f.get("status", 429))
        default_codes = {429: "M_LIMIT_EXCEEDED", 401: "M_UNKNOWN_TOKEN", 403: "M_FORBIDDEN",
                         404: "M_NOT_FOUND", 400: "M_BAD_JSON", 413: "M_TOO_LARGE"}
        errcode = f.get("errcode") or default_codes.get(status, "M_UNKNOWN")
        extra, headers = {}, {}
        if status == 429 or "retry_after_ms" in f:
            ms = int(f.get("retry_after_ms", 1000))
            extra["retry_after_ms"] = ms
            if f.get("retry_after_header", True):
                headers["Retry-After"] = str(max(0, math.ceil(ms / 1000.0)))
        if errcode == "M_UNKNOWN_TOKEN":
            extra["soft_logout"] = bool(f.get("soft_logout", False))
        headers.update(f.get("headers") or {})
        return MatrixError(status, errcode, f.get("error") or f"forced {status} (test server)",
                           extra=extra, headers=headers)

    def _garbage(self, kind, path, real=None):
        h = dict(CORS_HEADERS)
        if kind == "not_json":
            return web.Response(status=200, body=b"<html><body>502 Bad Gateway</body></html>",
                                content_type="application/json", headers=h)
        if kind == "wrong_types":
            if path.endswith("/sync"):
                body = {"next_batch": 12345, "rooms": [], "presence": "x"}
            else:
                body = {"event_id": 5, "room_id": [], "content_uri": False, "user_id": None}
            return web.Response(status=200, body=dumps(body).encode(), content_type="application/json",
                                headers=h)
        if kind == "empty":
            return web.Response(status=200, body=b"{}", content_type="application/json", headers=h)
        if kind == "html_502":
            return web.Response(status=502, body=b"<html><body>502 Bad Gateway</body></html>",
                                content_type="text/html", headers=h)
        # truncated: the real answer cut in the middle
        if isinstance(real, web.Response):
            raw = real.body or b"{}"
        else:
            raw = dumps(real if real is not None else {"next_batch": "s0", "rooms": {}}).encode("utf-8")
        return web.Response(status=200, body=raw[:max(1, len(raw) // 2)],
                            content_type="application/json", headers=h)

    async def _drop(self, request):
        tr = request.transport
        if tr is not None:
            tr.close()
        raise _Dropped()

    def _redacted_query(self, request):
        q = {}
        for k in request.query.keys():
            if k in q:
                continue
            vals = request.query.getall(k)
            if k == "access_token":
                vals = ["<valid>" if v in self.tokens else "<invalid>" for v in vals]
            q[k] = vals[0] if len(vals) == 1 else vals
        return q

    async def entry(self, request):
        t0 = time.time()
        raw_path = request.rel_url.raw_path
        rec = {"kind": "matrix", "time": t0, "method": request.method, "path": request.path,
               "query": self._redacted_query(request), "user": None, "device": None}
        if request.method == "OPTIONS":
            return web.Response(status=204, headers=CORS_HEADERS)
        ctx = {"request": request, "rec": rec}
        try:
            try:
                matched, method_mismatch = None, False
                for (meth, rx, pattern, fn, auth, empty_ok) in self.ROUTES:
                    mm = rx.match(raw_path)
                    if not mm:
                        continue
                    if meth != request.method:
                        method_mismatch = True
                        continue
                    matched = (pattern, fn, auth, empty_ok, {k: unquote(v) if v is not None else v
                                                             for k, v in mm.groupdict().items()})
                    break
                if matched is None:
                    if method_mismatch:
                        raise MatrixError(405, "M_UNRECOGNIZED", "Unrecognized request")
                    raise MatrixError(404, "M_UNRECOGNIZED", "Unrecognized request")
                pattern, fn, auth, empty_ok, params = matched
                rec["route"] = f"{request.method} {pattern}"
                user = device = token = None
                if auth is not False:
                    user, device, token = self._auth(request, rec, auth is True)
                rec["user"], rec["device"] = user, device
                ctx.update(user=user, device=device, token=token, empty_ok=empty_ok)
                forced = self._take_forced(request.method, request.path, user)
                hold_s, drop_after, garbage_after = 0.0, False, None
                if forced is not None:
                    rec["forced"] = forced["id"]
                    self.count("forced")
                    if forced.get("delay_s"):
                        await asyncio.sleep(float(forced["delay_s"]))
                    drop = forced.get("drop")
                    if drop in (True, "before"):
                        rec["dropped"] = "before"
                        await self._drop(request)
                    garbage = forced.get("garbage")
                    if garbage and garbage != "truncated":
                        rec["status"] = 200 if garbage != "html_502" else 502
                        rec["garbage"] = garbage
                        return self._garbage(garbage, request.path)
                    if garbage == "truncated":
                        garbage_after = garbage
                    elif "status" in forced:
                        raise self._forced_error(forced)
                    hold_s = float(forced.get("hold_s") or 0)
                    drop_after = drop == "after"
                status, body, extra = await fn(self, ctx, **params)
                if hold_s:
                    rec["held_s"] = hold_s
                    await asyncio.sleep(hold_s)
                if drop_after:
                    rec["dropped"] = "after"
                    rec["status"] = status
                    await self._drop(request)
                rec["status"] = status
                if garbage_after:
                    rec["garbage"] = garbage_after
                    return self._garbage(garbage_after, request.path, body)
                if isinstance(body, web.StreamResponse):
                    return body
                if "response" not in rec and body is not None and status < 300:
                    s = dumps(body)
                    rec["response"] = body if len(s) < 8192 else {"_size": len(s)}
                return self._json(status, body, extra)
            except MatrixError as e:
                return self._error(e, rec)
        except _Dropped:
            self.count("dropped")
            raise asyncio.CancelledError()
        except asyncio.CancelledError:
            rec.setdefault("cancelled", True)
            raise
        except Exception as e:  # a bug in the test server: say so loudly
            import traceback
            traceback.print_exc(file=sys.stderr)
            rec["status"] = 500
            rec["error"] = repr(e)
            return self._json(500, {"errcode": "M_UNKNOWN",
                                    "error": f"test server bug: {e!r}"})
        finally:
            rec["duration_ms"] = round((time.time() - t0) * 1000, 1)
            self.count("requests")
            self.record(rec)

    def record(self, entry):
        entry["i"] = self.record_base + len(self.records)
        self.records.append(entry)
        if self.args.verbose:
            extra = " ".join(f"{k}={entry[k]}" for k in ("errcode", "forced", "held_s", "dropped", "garbage",
                                                          "txn_dedup", "waited_ms") if entry.get(k))
            sys.stderr.write(f"[homeserver] {entry['method']} {entry['path']} -> {entry.get('status', '-')} "
                             f"{entry.get('user') or ''} {entry.get('duration_ms')} ms {extra}\n")
            sys.stderr.flush()
        if len(self.records) > 100000:
            drop = len(self.records) - 100000
            del self.records[:drop]
            self.record_base += drop

    # ============================================================ endpoints
    # ---------------------------------------------------------------- discovery, auth
    async def r_versions(self, ctx):
        return 200, {"versions": SPEC_VERSIONS, "unstable_features": {}}, None

    async def r_well_known(self, ctx):
        return 200, {"m.homeserver": {"base_url": f"http://127.0.0.1:{self.port}"}}, None

    async def r_login_flows(self, ctx):
        return 200, {"flows": [{"type": "m.login.password"}]}, None

    async def r_login(self, ctx):
        body = await self.read_json(ctx)
        ltype = body.get("type")
        if ltype != "m.login.password":
            raise MatrixError(400, "M_UNKNOWN", "Bad login type.")
        ident = body.get("identifier")
        who = None
        if ident is not None:
            if not isinstance(ident, dict) or ident.get("type") != "m.id.user":
                raise MatrixError(400, "M_UNKNOWN", "Unknown login identifier type")
            who = ident.get("user")
        elif "user" in body:
            who = body.get("user")      # deprecated form
        if not isinstance(who, str) or not who:
            raise missing_param("Missing user identifier")
        password = body.get("password")
        if not isinstance(password, str):
            raise missing_param("Missing password")
        uid = self.user_id_for(who)
        u = self.users.get(uid)
        if u is None or u["password"] is None or not secrets.compare_digest(u["password"], password):
            raise forbidden("Invalid username or password")
        dev = body.get("device_id")
        if dev is not None and (not isinstance(dev, str) or not dev):
            raise bad_json("device_id must be a string")
        token, device_id = self.new_device_token(uid, dev, body.get("initial_device_display_name"))
        ctx["rec"]["response"] = {"user_id": uid, "device_id": device_id, "access_token": "<new>"}
        return 200, {"user_id": uid, "access_token": token, "device_id": device_id,
                     "home_server": self.server_name}, None

    async def r_logout(self, ctx):
        t = self.tokens.pop(ctx["token"], None)
        if t is not None:
            u = self.users.get(t["user_id"])
            if u is not None:
                u["devices"].pop(t["device_id"], None)
                for tok, info in list(self.tokens.items()):
                    if info["user_id"] == t["user_id"] and info["device_id"] == t["device_id"]:
                        del self.tokens[tok]
        return 200, {}, None

    async def r_logout_all(self, ctx):
        uid = ctx["user"]
        for tok, info in list(self.tokens.items()):
            if info["user_id"] == uid:
                del self.tokens[tok]
        self.users[uid]["devices"].clear()
        return 200, {}, None

    async def r_whoami(self, ctx):
        return 200, {"user_id": ctx["user"], "device_id": ctx["device"], "is_guest": False}, None

    async def r_capabilities(self, ctx):
        return 200, {"capabilities": {
            "m.change_password": {"enabled": False},
            "m.room_versions": {"default": ROOM_VERSION_DEFAULT,
                                "available": {v: "stable" for v in ROOM_VERSIONS}},
            "m.set_displayname": {"enabled": True}, "m.set_avatar_url": {"enabled": True},
            "m.3pid_changes": {"enabled": False}}}, None

    async def r_devices(self, ctx):
        u = self.users[ctx["user"]]
        return 200, {"devices": [{k: v for k, v in d.items() if v is not None}
                                 for d in u["devices"].values()]}, None

    # ---------------------------------------------------------------- filters
    def _own(self, ctx, user_id, what):
        if user_id != ctx["user"]:
            raise forbidden(f"Cannot {what} for other users")

    async def r_filter_create(self, ctx, user_id):
        self._own(ctx, user_id, "create filters")
        body = await self.read_json(ctx)
        SyncFilter.validate(body)
        lst = self.filters.setdefault(user_id, [])
        lst.append(body)
        return 200, {"filter_id": str(len(lst) - 1)}, None

    async def r_filter_get(self, ctx, user_id, filter_id):
        self._own(ctx, user_id, "get filters")
        lst = self.filters.get(user_id) or []
        if not filter_id.isdigit() or int(filter_id) >= len(lst):
            raise not_found("No such filter")
        return 200, lst[int(filter_id)], None

    # ---------------------------------------------------------------- sync
    async def r_sync(self, ctx):
        q = ctx["request"].query
        user, device = ctx["user"], ctx["device"]
        since = q.get("since")
        since_pos = self.parse_token(since, ("s",), "since") if since else None
        full_state = q.get("full_state", "false")
        if full_state not in ("true", "false"):
            raise invalid_param("full_state must be true or false")
        full_state = full_state == "true"
        try:
            timeout = int(q.get("timeout", "0"))
            if timeout < 0:
                raise ValueError
        except ValueError:
            raise invalid_param("timeout must be a non-negative integer")
        timeout = min(timeout, self.cfg["max_sync_timeout_ms"])
        set_presence = q.get("set_presence", "online")
        if set_presence not in PRESENCE_STATES:
            raise invalid_param(f"Parameter 'set_presence' must be one of {list(PRESENCE_STATES)}")
        flt = self.resolve_filter(user, q.get("filter"))
        p = self.users[user]["presence"]
        if set_presence == "online" and (p["presence"] == "offline" or not p["set"]):
            self.set_presence(user, "online", keep_msg=True)
        elif set_presence == "unavailable" and p["presence"] != "unavailable":
            self.set_presence(user, "unavailable", keep_msg=True)
        elif set_presence != "offline":
            p["last_active_ms"] = now_ms()
        self.count("syncs")
        t0 = time.monotonic()
        resp, has = self.compute_sync(user, device, since_pos, flt, full_state)
        if since_pos is not None and not full_state and not has and timeout > 0:
            deadline = t0 + timeout / 1000.0
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                fut = self.wake_future()
                try:
                    await asyncio.wait_for(asyncio.shield(fut), left)
                except asyncio.TimeoutError:
                    pass
                if user not in self.users:
                    break
                resp, has = self.compute_sync(user, device, since_pos, flt, full_state)
                if has:
                    break
            ctx["rec"]["waited_ms"] = round((time.monotonic() - t0) * 1000)
            if not has:
                # nothing new: an empty answer; next_batch moved on if the
                # stream advanced for others (tokens are opaque anyway)
                resp, _ = self.compute_sync(user, device, since_pos, flt, full_state)
        rooms = resp.get("rooms", {})
        ctx["rec"]["response"] = {
            "next_batch": resp["next_batch"],
            "join": {rid: {"events": [e["event_id"] for e in r["timeline"]["events"]],
                           "limited": r["timeline"]["limited"],
                           "state": len(r["state"]["events"]),
                           "ephemeral": [e["type"] for e in r["ephemeral"]["events"]]}
                     for rid, r in rooms.get("join", {}).items()},
            "invite": sorted(rooms.get("invite", {})), "leave": sorted(rooms.get("leave", {})),
            "presence": len(resp.get("presence", {}).get("events", []))}
        return 200, resp, None

    # ---------------------------------------------------------------- rooms
    async def r_create_room(self, ctx):
        body = await self.read_json(ctx, empty_ok=True)
        room = self.create_room(ctx["user"], body)
        return 200, {"room_id": room.id}, None

    def _resolve_room(self, id_or_alias):
        if id_or_alias.startswith("#"):
            rid = self.aliases.get(id_or_alias)
            if rid is None:
                raise not_found("Room alias not found")
            return self.rooms[rid]
        if not id_or_alias.startswith("!"):
            raise invalid_param(f"{id_or_alias!r} is not a room id or alias")
        room = self.rooms.get(id_or_alias)
        if room is None:
            raise not_found("No known servers")
        return room

    async def _join(self, ctx, id_or_alias):
        body = await self.read_json(ctx, empty_ok=True)
        room = self._resolve_room(id_or_alias)
        reason = body.get("reason")
        self.change_membership(room, ctx["user"], ctx["user"], "join", reason=reason)
        return 200, {"room_id": room.id}, None

    async def r_join(self, ctx, room):
        return await self._join(ctx, room)

    async def r_room_join(self, ctx, room_id):
        if not room_id.startswith("!"):
            raise invalid_param("this endpoint takes a room id, not an alias")
        return await self._join(ctx, room_id)

    async def r_leave(self, ctx, room_id):
        body = await self.read_json(ctx, empty_ok=True)
        room = self.rooms.get(room_id)
        if room is None:
            raise not_found("Unknown room")
        self.change_membership(room, ctx["user"], ctx["user"], "leave", reason=body.get("reason"))
        return 200, {}, None

    async def r_forget(self, ctx, room_id):
        await self.read_json(ctx, empty_ok=True)
        room = self.rooms.get(room_id)
        if room is None or room.membership(ctx["user"]) is None:
            raise not_found("Not a known room")
        if room.membership(ctx["user"]) in ("join", "invite"):
            raise MatrixError(400, "M_UNKNOWN", f"User {ctx['user']} is in room {room_id}")
        return 200, {}, None

    async def _target_membership(self, ctx, room_id, membership):
        body = await self.read_json(ctx)
        target = body.get("user_id")
        if not isinstance(target, str):
            raise missing_param("Missing params: ['user_id']")
        if not USER_ID_RE.match(target):
            raise invalid_param("user_id is not a valid user id")
        room = self.rooms.get(room_id)
        if room is None:
            raise forbidden(f"User {ctx['user']} not in room {room_id}")
        if membership == "invite" and target not in self.users:
            raise not_found(f"Unknown user {target}")
        self.change_membership(room, ctx["user"], target, membership, reason=body.get("reason"))
        return 200, {}, None

    async def r_invite(self, ctx, room_id):
        return await self._target_membership(ctx, room_id, "invite")

    async def r_kick(self, ctx, room_id):
        return await self._target_membership(ctx, room_id, "leave")

    async def r_ban(self, ctx, room_id):
        return await self._target_membership(ctx, room_id, "ban")

    async def r_unban(self, ctx, room_id):
        body = await self.read_json(ctx)
        room = self.rooms.get(room_id)
        target = body.get("user_id")
        if room is None or not isinstance(target, str):
            raise missing_param("Missing params: ['user_id']")
        if room.membership(target) != "ban":
            raise MatrixError(403, "M_BAD_STATE", f"{target} is not banned")
        self.change_membership(room, ctx["user"], target, "leave", reason=body.get("reason"))
        return 200, {}, None

    async def r_joined_rooms(self, ctx):
        return 200, {"joined_rooms": [r.id for r in self.rooms.values()
                                      if r.membership(ctx["user"]) == "join"]}, None

    def _readable(self, ctx, room_id):
        room = self.rooms.get(room_id)
        if room is None:
            raise forbidden(f"User {ctx['user']} not in room {room_id}, and room previews are disabled")
        upto = room.visible_upto(ctx["user"])
        if upto is None:
            raise forbidden(f"User {ctx['user']} not in room {room_id}, and room previews are disabled")
        return room, upto

    async def r_joined_members(self, ctx, room_id):
        room = self.rooms.get(room_id)
        if room is None or room.membership(ctx["user"]) != "join":
            raise forbidden(f"User {ctx['user']} not in room {room_id}")
        joined = {}
        for u in room.joined():
            c = room.state_content("m.room.member", u) or {}
            joined[u] = {"display_name": c.get("displayname"), "avatar_url": c.get("avatar_url")}
        return 200, {"joined": joined}, None

    async def r_members(self, ctx, room_id):
        room, upto = self._readable(ctx, room_id)
        q = ctx["request"].query
        mem, not_mem = q.get("membership"), q.get("not_membership")
        for v in (mem, not_mem):
            if v is not None and v not in MEMBERSHIPS:
                raise invalid_param(f"membership must be one of {list(MEMBERSHIPS)}")
        state = room.state if upto == math.inf else room.state_at(upto)
        chunk = []
        for (t, k), ev in sorted(state.items(), key=lambda kv: kv[1]["_pos"]):
            if t != "m.room.member":
                continue
            m = ev["content"].get("membership")
            if mem is not None or not_mem is not None:
                ok = (mem is not None and m == mem) or (not_mem is not None and m != not_mem)
                if not ok:
                    continue
            chunk.append(self.client_event(room, ev, ctx["user"], ctx["device"]))
        return 200, {"chunk": chunk}, None

    async def r_get_state_event(self, ctx, room_id, event_type, state_key=None):
        room, upto = self._readable(ctx, room_id)
        state = room.state if upto == math.inf else room.state_at(upto)
        ev = state.get((event_type, state_key or ""))
        if ev is None:
            raise not_found("Event not found.")
        fmt = ctx["request"].query.get("format", "content")
        if fmt == "event":
            return 200, self.client_event(room, ev, ctx["user"], ctx["device"]), None
        if fmt != "content":
            raise invalid_param("format must be 'content' or 'event'")
        content = self.pruned_content(room, ev) if ev.get("_redacted_by") else ev["content"]
        return 200, content, None

    async def r_get_state(self, ctx, room_id):
        room, upto = self._readable(ctx, room_id)
        state = room.state if upto == math.inf else room.state_at(upto)
        evs = sorted(state.values(), key=lambda e: e["_pos"])
        return 200, [self.client_event(room, e, ctx["user"], ctx["device"]) for e in evs], None

    async def r_put_state(self, ctx, room_id, event_type, state_key=None):
        body = await self.read_json(ctx)
        room = self.rooms.get(room_id)
        if room is None:
            raise forbidden(f"User {ctx['user']} not in room {room_id}")
        if event_type == "m.room.encryption" and not isinstance(body.get("algorithm"), str):
            raise bad_json("m.room.encryption needs an 'algorithm'")
        if event_type == "m.room.power_levels":
            for k, v in body.items():
                if k in ("users", "events", "notifications"):
                    if not isinstance(v, dict) or not all(isinstance(x, int) and not isinstance(x, bool)
                                                          for x in v.values()):
                        raise bad_json(f"power levels: {k} must map to integers")
                elif not isinstance(v, int) or isinstance(v, bool):
                    raise bad_json(f"power levels: {k} must be an integer")
        ev = self.send_state(room, ctx["user"], event_type, state_key or "", body)
        return 200, {"event_id": ev["event_id"]}, None

    # ---------------------------------------------------------------- send, redact
    def _txn_lookup(self, key):
        t = self.txns.get(key)
        if t is None:
            return None
        if time.time() - t["t"] > self.cfg["txn_ttl_s"]:
            del self.txns[key]
            return None
        return t

    def _rate_limit_message(self, user):
        rate = self.cfg["rc_message_per_s"]
        if not rate:
            return
        burst = max(1, int(self.cfg["rc_message_burst"]))
        now = time.monotonic()
        b = self.rc_buckets.get(user)
        if b is None:
            b = self.rc_buckets[user] = [float(burst), now]
        b[0] = min(burst, b[0] + (now - b[1]) * rate)
        b[1] = now
        if b[0] < 1.0:
            ms = int(math.ceil((1.0 - b[0]) / rate * 1000))
            raise MatrixError(429, "M_LIMIT_EXCEEDED", "Too Many Requests",
                              extra={"retry_after_ms": ms},
                              headers={"Retry-After": str(max(1, math.ceil(ms / 1000)))})
        b[0] -= 1.0

    async def r_send(self, ctx, room_id, event_type, txn_id):
        body = await self.read_json(ctx)
        key = (ctx["user"], ctx["device"], "send", room_id, event_type, txn_id)
        cached = self._txn_lookup(key)
        if cached is not None:
            ctx["rec"]["txn_dedup"] = True
            self.count("txn_dedup")
            return cached["status"], cached["body"], None
        room = self.room_or_403(room_id, ctx["user"])
        self._rate_limit_message(ctx["user"])
        ev = self.send_event(room, ctx["user"], event_type, body,
                             txn=(ctx["user"], ctx["device"], txn_id))
        resp = {"event_id": ev["event_id"]}
        self.txns[key] = {"status": 200, "body": resp, "t": time.time()}
        return 200, resp, None

    async def r_redact(self, ctx, room_id, event_id, txn_id):
        body = await self.read_json(ctx, empty_ok=True)
        key = (ctx["user"], ctx["device"], "redact", room_id, event_id, txn_id)
        cached = self._txn_lookup(key)
        if cached is not None:
            ctx["rec"]["txn_dedup"] = True
            self.count("txn_dedup")
            return cached["status"], cached["body"], None
        room = self.room_or_403(room_id, ctx["user"])
        content = {}
        if "reason" in body:
            content["reason"] = body["reason"]
        content["redacts"] = event_id   # v11: stays in content; v10: send_event moves it to the top level
        ev = self.send_event(room, ctx["user"], "m.room.redaction", content,
                             txn=(ctx["user"], ctx["device"], txn_id))
        resp = {"event_id": ev["event_id"]}
        self.txns[key] = {"status": 200, "body": resp, "t": time.time()}
        return 200, resp, None

    # ---------------------------------------------------------------- reading events
    def _room_event_filter(self, raw):
        if raw is None or raw == "":
            return EventFilter()
        try:
            d = json.loads(raw)
        except ValueError:
            raise MatrixError(400, "M_NOT_JSON", "Invalid filter JSON")
        EventFilter.validate(d, "filter")
        return EventFilter(d)

    async def r_messages(self, ctx, room_id):
        room, upto = self._readable(ctx, room_id)
        q = ctx["request"].query
        d = q.get("dir")
        if d is None:
            raise missing_param("Missing parameter: dir")
        if d not in ("b", "f"):
            raise invalid_param("dir must be 'b' or 'f'")
        try:
            limit = int(q.get("limit", "10"))
            if limit < 0:
                raise ValueError
        except ValueError:
            raise invalid_param("limit must be a non-negative integer")
        limit = min(limit, 1000)
        frm = q.get("from")
        to = q.get("to")
        from_pos = self.parse_token(frm, ("s", "t"), "from") if frm else None
        to_pos = self.parse_token(to, ("s", "t"), "to") if to else None
        flt = self._room_event_filter(q.get("filter"))
        hi = min(self.pos, upto) if upto != math.inf else self.pos
        chunk, more = [], False
        if limit == 0:
            start = from_pos if from_pos is not None else (self.pos if d == "b" else 0)
            resp = {"start": frm if frm else self.page_token(start), "chunk": [],
                    "end": self.page_token(start)}
            return 200, resp, None
        if d == "b":
            start = from_pos if from_pos is not None else self.pos
            lo = to_pos if to_pos is not None else 0
            cand = room.events_between(lo, min(start, hi))
            cand = list(reversed(cand))
            end_pos = None
            for i, e in enumerate(cand):
                if len(chunk) >= limit:
                    more = True
                    break
                end_pos = e["_pos"] - 1
                if flt.matches(e, room.id):
                    chunk.append(e)
        else:
            start = from_pos if from_pos is not None else 0
            top = min(to_pos, hi) if to_pos is not None else hi
            cand = room.events_between(start, top)
            end_pos = None
            for e in cand:
                if len(chunk) >= limit:
                    more = True
                    break
                end_pos = e["_pos"]
                if flt.matches(e, room.id):
                    chunk.append(e)
        resp = {"start": frm if frm else self.page_token(start),
                "chunk": [self.client_event(room, e, ctx["user"], ctx["device"]) for e in chunk]}
        if more and end_pos is not None:
            resp["end"] = self.page_token(end_pos)
        if flt.lazy_load_members:
            state = room.state if upto == math.inf else room.state_at(upto)
            senders = {e["sender"] for e in chunk}
            resp["state"] = [self.client_event(room, ev, ctx["user"], ctx["device"])
                             for (t, k), ev in state.items() if t == "m.room.member" and k in senders]
        ctx["rec"]["response"] = {"start": resp["start"], "end": resp.get("end"),
                                  "chunk": [e["event_id"] for e in chunk]}
        return 200, resp, None

    def _visible_event(self, ctx, room_id, event_id):
        room = self.rooms.get(room_id)
        hit = self.event_index.get(event_id)
        if room is None or hit is None or hit[0] is not room:
            raise not_found("Event not found.")
        upto = room.visible_upto(ctx["user"])
        if upto is None or hit[1]["_pos"] > upto:
            raise not_found("Event not found.")
        return room, hit[1], upto

    async def r_get_event(self, ctx, room_id, event_id):
        room, ev, _ = self._visible_event(ctx, room_id, event_id)
        return 200, self.client_event(room, ev, ctx["user"], ctx["device"]), None

    async def r_context(self, ctx, room_id, event_id):
        room, ev, upto = self._visible_event(ctx, room_id, event_id)
        q = ctx["request"].query
        try:
            limit = int(q.get("limit", "10"))
            if limit < 0:
                raise ValueError
        except ValueError:
            raise invalid_param("limit must be a non-negative integer")
        flt = self._room_event_filter(q.get("filter"))
        nb = limit // 2
        na = limit - nb
        before = [e for e in reversed(room.events_between(0, ev["_pos"] - 1)) if flt.matches(e, room.id)][:nb]
        hi = self.pos if upto == math.inf else upto
        after = [e for e in room.events_between(ev["_pos"], hi) if flt.matches(e, room.id)][:na]
        last = after[-1] if after else ev
        state = room.state_at(last["_pos"])
        u, d = ctx["user"], ctx["device"]
        return 200, {
            "start": self.page_token((before[-1]["_pos"] if before else ev["_pos"]) - 1),
            "end": self.page_token(last["_pos"]),
            "events_before": [self.client_event(room, e, u, d) for e in before],
            "event": self.client_event(room, ev, u, d),
            "events_after": [self.client_event(room, e, u, d) for e in after],
            "state": [self.client_event(room, e, u, d)
                      for e in sorted(state.values(), key=lambda e: e["_pos"]) if flt.matches(e, room.id)],
        }, None

    # ---------------------------------------------------------------- ephemeral
    async def r_typing(self, ctx, room_id, user_id):
        self._own(ctx, user_id, "set typing")
        body = await self.read_json(ctx)
        room = self.room_or_403(room_id, ctx["user"])
        typing = body.get("typing")
        if not isinstance(typing, bool):
            raise bad_json("'typing' must be a boolean")
        timeout = body.get("timeout", 30000)
        if typing and (not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 0):
            raise bad_json("'timeout' must be a non-negative integer")
        timeout = min(timeout if isinstance(timeout, int) else 30000, 120000)
        room.typing_log.append({"user_id": user_id, "typing": typing,
                                "timeout": timeout if typing else None, "ts": now_ms()})
        self.set_typing(room, user_id, typing, timeout)
        return 200, {}, None

    async def r_receipt(self, ctx, room_id, receipt_type, event_id):
        body = await self.read_json(ctx, empty_ok=True)
        if receipt_type not in RECEIPT_TYPES:
            raise invalid_param(f"Receipt type must be one of {list(RECEIPT_TYPES)}")
        room = self.room_or_403(room_id, ctx["user"])
        thread_id = body.get("thread_id")
        if thread_id is not None and (not isinstance(thread_id, str) or not thread_id):
            raise invalid_param("thread_id field must be a non-empty string")
        if thread_id is not None and receipt_type == "m.fully_read":
            raise invalid_param("thread_id is not compatible with m.fully_read receipts")
        self.set_receipt(room, ctx["user"], receipt_type, event_id, thread_id)
        return 200, {}, None

    async def r_read_markers(self, ctx, room_id):
        body = await self.read_json(ctx, empty_ok=True)
        room = self.room_or_403(room_id, ctx["user"])
        for k in ("m.fully_read", "m.read", "m.read.private"):
            if k in body:
                if not isinstance(body[k], str):
                    raise bad_json(f"{k} must be an event id")
                self.set_receipt(room, ctx["user"], k, body[k])
        return 200, {}, None

    # ---------------------------------------------------------------- presence, profile, account data
    async def r_presence_put(self, ctx, user_id):
        if user_id != ctx["user"]:
            raise forbidden("Can only set your own presence state")
        body = await self.read_json(ctx)
        p = body.get("presence")
        if p not in PRESENCE_STATES:
            raise invalid_param("Invalid presence state")
        msg = body.get("status_msg")
        if msg is not None and not isinstance(msg, str):
            raise invalid_param("status_msg must be a string")
        self.set_presence(user_id, p, msg)
        return 200, {}, None

    async def r_presence_get(self, ctx, user_id):
        if user_id not in self.users:
            raise not_found("Unknown user")
        c = self.presence_content(user_id)
        c.pop("displayname", None)
        c.pop("avatar_url", None)
        return 200, c, None

    PROFILE_KEY_RE = re.compile(r"^(avatar_url|displayname|m\.tz|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+)$")

    async def r_profile(self, ctx, user_id):
        u = self.users.get(user_id)
        if u is None:
            raise not_found("Profile not found")
        return 200, {k: v for k, v in u["profile"].items() if v is not None}, None

    async def r_profile_get(self, ctx, user_id, key):
        u = self.users.get(user_id)
        if not self.PROFILE_KEY_RE.match(key):
            raise invalid_param("Invalid profile key.")
        if u is None or u["profile"].get(key) is None:
            raise not_found("Profile not found" if u is None else "The requested profile key does not exist.")
        return 200, {key: u["profile"][key]}, None

    async def r_profile_put(self, ctx, user_id, key):
        if user_id != ctx["user"]:
            raise forbidden("Cannot set another user's profile")
        if not self.PROFILE_KEY_RE.match(key):
            raise invalid_param("Invalid profile key.")
        body = await self.read_json(ctx)
        if key not in body:
            raise missing_param(f"Missing key '{key}'")
        v = body[key]
        if key in ("displayname", "avatar_url") and not isinstance(v, str):
            raise invalid_param(f"{key} must be a string")
        if key == "avatar_url" and not v.startswith("mxc://"):
            raise invalid_param("avatar_url must be an mxc:// URI")
        u = self.users[user_id]
        u["profile"][key] = v
        if key in ("displayname", "avatar_url"):
            for room in self.rooms.values():
                if room.membership(user_id) == "join":
                    self.change_membership(room, user_id, user_id, "join", check=False,
                                           extra={key: v})
            p = u["presence"]
            p["pos"] = self.bump()
            self.notify()
        return 200, {}, None

    async def r_profile_delete(self, ctx, user_id, key):
        if user_id != ctx["user"]:
            raise forbidden("Cannot delete another user's profile field")
        self.users[user_id]["profile"].pop(key, None)
        return 200, {}, None

    async def r_account_data_get(self, ctx, user_id, atype):
        self._own(ctx, user_id, "get account data")
        a = self.users[user_id]["account_data"].get(atype)
        if a is None:
            raise not_found("Account data not found")
        return 200, a["content"], None

    async def r_account_data_put(self, ctx, user_id, atype):
        self._own(ctx, user_id, "add account data")
        body = await self.read_json(ctx)
        if atype in ("m.fully_read", "m.push_rules"):
            raise bad_json(f"Cannot set {atype} through this API")
        self.users[user_id]["account_data"][atype] = {"content": body, "pos": self.bump()}
        self.notify()
        return 200, {}, None

    async def r_room_account_data_get(self, ctx, user_id, room_id, atype):
        self._own(ctx, user_id, "get account data")
        room = self.rooms.get(room_id)
        a = (room.account_data.get(user_id) or {}).get(atype) if room else None
        if a is None:
            raise not_found("Room account data not found")
        return 200, a["content"], None

    async def r_room_account_data_put(self, ctx, user_id, room_id, atype):
        self._own(ctx, user_id, "add account data")
        body = await self.read_json(ctx)
        if atype in ("m.fully_read", "m.push_rules"):
            raise bad_json(f"Cannot set {atype} through this API")
        room = self.rooms.get(room_id)
        if room is None or room.membership(user_id) is None:
            raise forbidden("Not a member of the room")
        self.set_room_account_data(room, user_id, atype, body)
        return 200, {}, None

    # ---------------------------------------------------------------- media
    def mxc(self, media_id):
        return f"mxc://{self.server_name}/{media_id}"

    async def r_upload(self, ctx):
        request = ctx["request"]
        limit = int(self.cfg["upload_limit"])
        ctype = request.headers.get("Content-Type") or "application/octet-stream"
        filename = request.query.get("filename")
        data = await self._read_limited(request, limit)
        media_id = rand_letters(24)
        self.uploads[media_id] = {"data": data, "content_type": ctype, "filename": filename,
                                  "uploader": ctx["user"], "ts": now_ms(),
                                  "sha256": hashlib.sha256(data).hexdigest()}
        ctx["rec"]["body"] = {"_size": len(data), "_sha256": self.uploads[media_id]["sha256"],
                              "content_type": ctype, "filename": filename}
        return 200, {"content_uri": self.mxc(media_id)}, None

    async def r_media_config(self, ctx):
        return 200, {"m.upload.size": int(self.cfg["upload_limit"])}, None

    def _download(self, ctx, server_name, media_id, file_name=None):
        up = self.uploads.get(media_id) if server_name == self.server_name else None
        if up is None:
            raise not_found("Not found")
        ctype = up["content_type"]
        base = ctype.split(";")[0].strip().lower()
        disp = "inline" if base in INLINE_TYPES else "attachment"
        name = file_name or up["filename"]
        if name:
            try:
                name.encode("ascii")
                safe = re.sub(r'["\\\r\n]', "_", name)
                disp += f'; filename="{safe}"'
            except UnicodeEncodeError:
                disp += "; filename*=utf-8''" + quote(name, safe="")
        headers = dict(CORS_HEADERS)
        headers.update({"Content-Disposition": disp,
                        "Content-Security-Policy": "sandbox; default-src 'none'; script-src 'none'; "
                                                   "plugin-types application/pdf; style-src "
                                                   "'unsafe-inline'; object-src 'self';",
                        "Cross-Origin-Resource-Policy": "cross-origin",
                        "Content-Type": ctype})
        ctx["rec"]["response"] = {"_size": len(up["data"]), "content_type": ctype}
        return 200, web.Response(status=200, body=up["data"], headers=headers), None

    async def r_download_v1(self, ctx, server_name, media_id, file_name=None):
        return self._download(ctx, server_name, media_id, file_name)

    async def r_download_legacy(self, ctx, server_name, media_id, file_name=None):
        if self.cfg["freeze_legacy_media"]:
            raise not_found("Not found")   # unauthenticated media frozen (spec v1.11)
        return self._download(ctx, server_name, media_id, file_name)

    # ============================================================ control API
    async def _ctl_json(self, request):
        raw = await request.read()
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw.decode("utf-8"))
        except ValueError:
            raise web.HTTPBadRequest(text=dumps({"error": "invalid JSON"}), content_type="application/json")
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text=dumps({"error": "body must be an object"}),
                                     content_type="application/json")
        return body

    def _ctl(self, body, status=200):
        return web.Response(status=status, text=dumps(body), content_type="application/json")

    def _ctl_err(self, status, msg):
        return web.Response(status=status, text=dumps({"error": msg}), content_type="application/json")

    def _ctl_user(self, body, key):
        v = body.get(key)
        if not isinstance(v, str) or not v:
            raise MatrixError(400, "M_MISSING_PARAM", f"missing '{key}'")
        uid = self.user_id_for(v)
        if uid not in self.users:
            raise MatrixError(404, "M_NOT_FOUND", f"unknown user {uid}")
        return uid

    def _ctl_room(self, request):
        room = self.rooms.get(request.match_info["room_id"])
        if room is None:
            raise MatrixError(404, "M_NOT_FOUND", "unknown room")
        return room

    @staticmethod
    def control(fn):
        async def wrapper(self, request):
            try:
                return await fn(self, request)
            except MatrixError as e:
                return self._ctl(dict(e.body(), error=e.error), e.status)
        wrapper.__name__ = fn.__name__
        return wrapper

    def room_view(self, room):
        members = {u: h[-1][1] for u, h in room.members.items()}
        evs = []
        for e in room.events:
            v = {k: e[k] for k in ("event_id", "type", "sender", "origin_server_ts", "content")}
            if "state_key" in e:
                v["state_key"] = e["state_key"]
            if "redacts" in e:
                v["redacts"] = e["redacts"]
            if e.get("_txn"):
                v["txn_id"] = e["_txn"][2]
                v["device_id"] = e["_txn"][1]
            if e.get("_redacted_by"):
                v["redacted_by"] = e["_redacted_by"]["event_id"]
            v["stream_pos"] = e["_pos"]
            evs.append(v)
        receipts = [{"type": t, "user_id": u, "thread_id": th, "event_id": r["event_id"], "ts": r["ts"]}
                    for (t, u, th), r in room.receipts.items()]
        return {"room_id": room.id, "version": room.version, "creator": room.creator,
                "name": room.name(), "encrypted": room.encrypted(),
                "encryption": room.state_content("m.room.encryption"),
                "join_rule": (room.state_content("m.room.join_rules") or {}).get("join_rule"),
                "aliases": sorted(room.aliases), "members": members,
                "power_levels": room.power_levels(),
                "typing": sorted(room.typing), "typing_log": room.typing_log,
                "receipts": receipts,
                "account_data": {u: {t: a["content"] for t, a in d.items()}
                                 for u, d in room.account_data.items()},
                "events": evs}

    @control
    async def c_state(self, request):
        users = []
        for u in self.users.values():
            users.append({"user_id": u["user_id"], "profile": u["profile"],
                          "devices": sorted(u["devices"]),
                          "tokens": sum(1 for t in self.tokens.values() if t["user_id"] == u["user_id"]),
                          "presence": {"presence": u["presence"]["presence"],
                                       "status_msg": u["presence"]["status_msg"],
                                       "set": u["presence"]["set"]},
                          "account_data": {t: a["content"] for t, a in u["account_data"].items()},
                          "filters": self.filters.get(u["user_id"], [])})
        uploads = [{"content_uri": self.mxc(mid), "content_type": up["content_type"],
                    "filename": up["filename"], "size": len(up["data"]), "sha256": up["sha256"],
                    "uploader": up["uploader"], "ts": up["ts"]} for mid, up in self.uploads.items()]
        return self._ctl({"server_name": self.server_name, "port": self.port,
                          "base_url": f"http://127.0.0.1:{self.port}", "stream_pos": self.pos,
                          "users": users, "rooms": [self.room_view(r) for r in self.rooms.values()],
                          "aliases": self.aliases, "uploads": uploads,
                          "forced": self.forced, "counters": self.counters, "config": self.cfg})

    @control
    async def c_room(self, request):
        return self._ctl(self.room_view(self._ctl_room(request)))

    @control
    async def c_room_events(self, request):
        return self._ctl(self.room_view(self._ctl_room(request))["events"])

    @control
    async def c_users(self, request):
        body = await self._ctl_json(request)
        who = body.get("user_id") or body.get("localpart")
        if not isinstance(who, str) or not who:
            return self._ctl_err(400, "user_id or localpart required")
        uid = self.user_id_for(who)
        password = body.get("password")
        if password is not None and not isinstance(password, str):
            return self._ctl_err(400, "password must be a string")
        created = uid not in self.users
        self.create_user(uid, password if password is not None else
                         (secrets.token_urlsafe(12) if created else None), body.get("displayname"))
        token, device_id = self.new_device_token(uid, body.get("device_id"))
        return self._ctl({"user_id": uid, "access_token": token, "device_id": device_id,
                          "created": created})

    @control
    async def c_revoke(self, request):
        body = await self._ctl_json(request)
        n = 0
        if isinstance(body.get("access_token"), str):
            n += 1 if self.tokens.pop(body["access_token"], None) else 0
        if isinstance(body.get("user_id"), str):
            uid = self.user_id_for(body["user_id"])
            for tok, info in list(self.tokens.items()):
                if info["user_id"] == uid and (body.get("device_id") in (None, info["device_id"])):
                    del self.tokens[tok]
                    n += 1
        return self._ctl({"revoked": n})

    @control
    async def c_create_room(self, request):
        body = await self._ctl_json(request)
        creator = self._ctl_user(body, "creator")
        members = [self.user_id_for(u) for u in body.get("members", [])]
        invites = [self.user_id_for(u) for u in body.get("invite", [])]
        for u in members + invites:
            if u not in self.users:
                raise MatrixError(404, "M_NOT_FOUND", f"unknown user {u}")
        req = {"preset": body.get("preset", "public_chat" if body.get("public") else "private_chat"),
               "invite": invites, "is_direct": bool(body.get("is_direct", False))}
        for k in ("name", "topic", "room_alias_name", "room_version", "power_level_content_override",
                  "creation_content"):
            if k in body:
                req[k] = body[k]
        initial = list(body.get("initial_state", []))
        if body.get("encrypted"):
            initial.append({"type": "m.room.encryption", "state_key": "",
                            "content": {"algorithm": "m.megolm.v1.aes-sha2"}})
        req["initial_state"] = initial
        room = self.create_room(creator, req)
        for u in members:
            if u != creator:
                self.change_membership(room, u, u, "join", check=False)
        return self._ctl({"room_id": room.id, "aliases": sorted(room.aliases)})

    @control
    async def c_room_send(self, request):
        room = self._ctl_room(request)
        body = await self._ctl_json(request)
        sender = self._ctl_user(body, "sender")
        content = body.get("content")
        if not isinstance(content, dict):
            return self._ctl_err(400, "content (object) required")
        etype = body.get("type", "m.room.message")
        if room.membership(sender) != "join":
            return self._ctl_err(403, f"{sender} is not joined to {room.id}")
        txn = (sender, body.get("device_id", "CONTROL"), body["txn_id"]) if body.get("txn_id") else None
        ev = self.send_event(room, sender, etype, content, txn=txn, check=False)
        return self._ctl({"event_id": ev["event_id"]})

    @control
    async def c_room_state(self, request):
        room = self._ctl_room(request)
        body = await self._ctl_json(request)
        sender = self._ctl_user(body, "sender")
        if not isinstance(body.get("type"), str) or not isinstance(body.get("content"), dict):
            return self._ctl_err(400, "type (string) and content (object) required")
        ev = self.send_state(room, sender, body["type"], body.get("state_key", ""), body["content"],
                             check=False)
        return self._ctl({"event_id": ev["event_id"]})

    @control
    async def c_room_membership(self, request):
        room = self._ctl_room(request)
        body = await self._ctl_json(request)
        target = self._ctl_user(body, "user_id")
        sender = self.user_id_for(body.get("sender") or target)
        m = body.get("membership")
        if m not in ("join", "leave", "invite", "ban"):
            return self._ctl_err(400, "membership must be join, leave, invite or ban")
        extra = {"is_direct": True} if body.get("is_direct") else None
        ev = self.change_membership(room, sender, target, m, reason=body.get("reason"), extra=extra,
                                    check=bool(body.get("check", False)))
        return self._ctl({"event_id": ev["event_id"] if ev else None})

    @control
    async def c_room_typing(self, request):
        room = self._ctl_room(request)
        body = await self._ctl_json(request)
        uid = self._ctl_user(body, "user_id")
        typing = bool(body.get("typing", True))
        timeout = int(body.get("timeout", 30000))
        room.typing_log.append({"user_id": uid, "typing": typing, "timeout": timeout, "ts": now_ms(),
                                "control": True})
        self.set_typing(room, uid, typing, timeout)
        return self._ctl({"ok": True})

    @control
    async def c_room_receipt(self, request):
        room = self._ctl_room(request)
        body = await self._ctl_json(request)
        uid = self._ctl_user(body, "user_id")
        rtype = body.get("type", "m.read")
        if rtype not in RECEIPT_TYPES or not isinstance(body.get("event_id"), str):
            return self._ctl_err(400, "event_id and a valid type required")
        self.set_receipt(room, uid, rtype, body["event_id"], body.get("thread_id"))
        return self._ctl({"ok": True})

    @control
    async def c_room_redact(self, request):
        room = self._ctl_room(request)
        body = await self._ctl_json(request)
        sender = self._ctl_user(body, "sender")
        content = {"redacts": body.get("event_id")}
        if body.get("reason"):
            content["reason"] = body["reason"]
        ev = self.send_event(room, sender, "m.room.redaction", content, check=False)
        return self._ctl({"event_id": ev["event_id"]})

    @control
    async def c_presence(self, request):
        body = await self._ctl_json(request)
        uid = self._ctl_user(body, "user_id")
        p = body.get("presence", "online")
        if p not in PRESENCE_STATES:
            return self._ctl_err(400, "presence must be online, offline or unavailable")
        self.set_presence(uid, p, body.get("status_msg"))
        return self._ctl({"ok": True})

    @control
    async def c_requests(self, request):
        q = request.query
        since = int(q.get("since", "0"))
        start = max(0, since - self.record_base)
        recs = self.records[start:]
        if q.get("path"):
            rx = re.compile(q["path"])
            recs = [r for r in recs if rx.search(r["path"])]
        if q.get("method"):
            recs = [r for r in recs if r["method"] == q["method"].upper()]
        if q.get("user"):
            uid = self.user_id_for(q["user"])
            recs = [r for r in recs if r.get("user") == uid]
        return self._ctl({"records": recs, "next": self.record_base + len(self.records),
                          "counters": self.counters})

    @control
    async def c_reset_requests(self, request):
        self.record_base += len(self.records)
        self.records.clear()
        self.counters.clear()
        return self._ctl({"ok": True, "next": self.record_base})

    def _add_rule(self, body):
        self.rule_seq += 1
        rule = {"id": self.rule_seq, "count": int(body.get("count", 1)), "hits": 0}
        path = body.get("path", body.get("match"))
        if path is not None:
            try:
                re.compile(path)
            except re.error as e:
                raise MatrixError(400, "M_INVALID_PARAM", f"bad path regex: {e}")
            rule["path"] = path
        if body.get("user"):
            rule["user"] = self.user_id_for(body["user"])
        for k in ("method", "status", "errcode", "error", "retry_after_ms", "retry_after_header",
                  "hold_s", "delay_s", "drop", "garbage", "soft_logout", "headers"):
            if k in body:
                rule[k] = body[k]
        if rule.get("garbage") not in (None, "truncated", "not_json", "wrong_types", "empty", "html_502"):
            raise MatrixError(400, "M_INVALID_PARAM", "garbage must be truncated, not_json, wrong_types, "
                                                      "empty or html_502")
        if rule.get("drop") not in (None, True, False, "before", "after"):
            raise MatrixError(400, "M_INVALID_PARAM", "drop must be true, 'before' or 'after'")
        if not any(k in rule for k in ("status", "hold_s", "drop", "garbage", "delay_s")):
            rule["status"] = 429
        self.forced.append(rule)
        return rule

    @control
    async def c_force(self, request):
        body = await self._ctl_json(request)
        return self._ctl({"ok": True, "rule": self._add_rule(body)})

    @control
    async def c_force_clear(self, request):
        n = len(self.forced)
        self.forced.clear()
        return self._ctl({"ok": True, "cleared": n})

    @control
    async def c_sync_garbage(self, request):
        body = await self._ctl_json(request)
        r = {"path": r"/sync$", "method": "GET", "count": body.get("count", 1),
             "garbage": body.get("kind", "truncated")}
        if body.get("user"):
            r["user"] = body["user"]
        return self._ctl({"ok": True, "rule": self._add_rule(r)})

    @control
    async def c_config(self, request):
        body = await self._ctl_json(request)
        for k, v in body.items():
            if k not in self.cfg:
                return self._ctl_err(400, f"unknown setting {k!r}; known: {sorted(self.cfg)}")
            cur = self.cfg[k]
            if isinstance(cur, bool):
                if not isinstance(v, bool):
                    return self._ctl_err(400, f"{k} must be true or false")
                self.cfg[k] = v
            else:
                try:
                    self.cfg[k] = type(cur)(v)
                except (TypeError, ValueError):
                    return self._ctl_err(400, f"{k} must be a number")
        return self._ctl(self.cfg)

    @control
    async def c_reset(self, request):
        body = await self._ctl_json(request)
        for room in self.rooms.values():
            for h in room.typing_handles.values():
                h.cancel()
        self.rooms.clear()
        self.aliases.clear()
        self.event_index.clear()
        self.txns.clear()
        self.uploads.clear()
        self.forced.clear()
        self.filters.clear()
        self.records.clear()
        self.record_base = 0
        self.counters.clear()
        self.rc_buckets.clear()
        if body.get("users"):
            self.users.clear()
            self.tokens.clear()
        self.bump()
        self.notify()
        return self._ctl({"ok": True})

    # ------------------------------------------------------------ app
    def make_app(self):
        app = web.Application(client_max_size=1 << 20)
        c = self
        app.router.add_route("GET", "/_test/state", c.c_state)
        app.router.add_route("GET", "/_test/rooms/{room_id}", c.c_room)
        app.router.add_route("GET", "/_test/rooms/{room_id}/events", c.c_room_events)
        app.router.add_route("POST", "/_test/users", c.c_users)
        app.router.add_route("POST", "/_test/tokens/revoke", c.c_revoke)
        app.router.add_route("POST", "/_test/rooms", c.c_create_room)
        app.router.add_route("POST", "/_test/rooms/{room_id}/send", c.c_room_send)
        app.router.add_route("POST", "/_test/rooms/{room_id}/state", c.c_room_state)
        app.router.add_route("POST", "/_test/rooms/{room_id}/membership", c.c_room_membership)
        app.router.add_route("POST", "/_test/rooms/{room_id}/typing", c.c_room_typing)
        app.router.add_route("POST", "/_test/rooms/{room_id}/receipt", c.c_room_receipt)
        app.router.add_route("POST", "/_test/rooms/{room_id}/redact", c.c_room_redact)
        app.router.add_route("POST", "/_test/presence", c.c_presence)
        app.router.add_route("GET", "/_test/requests", c.c_requests)
        app.router.add_route("POST", "/_test/reset-requests", c.c_reset_requests)
        app.router.add_route("POST", "/_test/force", c.c_force)
        app.router.add_route("POST", "/_test/force/clear", c.c_force_clear)
        app.router.add_route("POST", "/_test/sync-garbage", c.c_sync_garbage)
        app.router.add_route("POST", "/_test/config", c.c_config)
        app.router.add_route("POST", "/_test/reset", c.c_reset)
        app.router.add_route("*", "/{tail:.*}", c.entry)
        return app


H = Homeserver
R = Homeserver.route
SEG = r"[^/]+"
R("GET", r"/_matrix/client/versions", auth="optional", prefix="root")(H.r_versions)
R("GET", r"/\.well-known/matrix/client", auth=False, prefix="root")(H.r_well_known)
R("GET", r"/login", auth=False)(H.r_login_flows)
R("POST", r"/login", auth=False)(H.r_login)
R("POST", r"/logout", empty_body_ok=True)(H.r_logout)
R("POST", r"/logout/all", empty_body_ok=True)(H.r_logout_all)
R("GET", r"/account/whoami")(H.r_whoami)
R("GET", r"/capabilities")(H.r_capabilities)
R("GET", r"/devices")(H.r_devices)
R("POST", rf"/user/(?P<user_id>{SEG})/filter")(H.r_filter_create)
R("GET", rf"/user/(?P<user_id>{SEG})/filter/(?P<filter_id>{SEG})")(H.r_filter_get)
R("GET", r"/sync")(H.r_sync)
R("POST", r"/createRoom")(H.r_create_room)
R("POST", rf"/join/(?P<room>{SEG})")(H.r_join)
R("POST", rf"/rooms/(?P<room_id>{SEG})/join")(H.r_room_join)
R("POST", rf"/rooms/(?P<room_id>{SEG})/leave")(H.r_leave)
R("POST", rf"/rooms/(?P<room_id>{SEG})/forget")(H.r_forget)
R("POST", rf"/rooms/(?P<room_id>{SEG})/invite")(H.r_invite)
R("POST", rf"/rooms/(?P<room_id>{SEG})/kick")(H.r_kick)
R("POST", rf"/rooms/(?P<room_id>{SEG})/ban")(H.r_ban)
R("POST", rf"/rooms/(?P<room_id>{SEG})/unban")(H.r_unban)
R("GET", r"/joined_rooms")(H.r_joined_rooms)
R("GET", rf"/rooms/(?P<room_id>{SEG})/joined_members")(H.r_joined_members)
R("GET", rf"/rooms/(?P<room_id>{SEG})/members")(H.r_members)
R("GET", rf"/rooms/(?P<room_id>{SEG})/state")(H.r_get_state)
R("GET", rf"/rooms/(?P<room_id>{SEG})/state/(?P<event_type>{SEG})(?:/(?P<state_key>{SEG})?)?")(H.r_get_state_event)
R("PUT", rf"/rooms/(?P<room_id>{SEG})/state/(?P<event_type>{SEG})(?:/(?P<state_key>{SEG})?)?")(H.r_put_state)
R("PUT", rf"/rooms/(?P<room_id>{SEG})/send/(?P<event_type>{SEG})/(?P<txn_id>{SEG})")(H.r_send)
R("PUT", rf"/rooms/(?P<room_id>{SEG})/redact/(?P<event_id>{SEG})/(?P<txn_id>{SEG})")(H.r_redact)
R("GET", rf"/rooms/(?P<room_id>{SEG})/messages")(H.r_messages)
R("GET", rf"/rooms/(?P<room_id>{SEG})/event/(?P<event_id>{SEG})")(H.r_get_event)
R("GET", rf"/rooms/(?P<room_id>{SEG})/context/(?P<event_id>{SEG})")(H.r_context)
R("PUT", rf"/rooms/(?P<room_id>{SEG})/typing/(?P<user_id>{SEG})")(H.r_typing)
R("POST", rf"/rooms/(?P<room_id>{SEG})/receipt/(?P<receipt_type>{SEG})/(?P<event_id>{SEG})")(H.r_receipt)
R("POST", rf"/rooms/(?P<room_id>{SEG})/read_markers")(H.r_read_markers)
R("PUT", rf"/presence/(?P<user_id>{SEG})/status")(H.r_presence_put)
R("GET", rf"/presence/(?P<user_id>{SEG})/status")(H.r_presence_get)
R("GET", rf"/profile/(?P<user_id>{SEG})", auth="optional")(H.r_profile)
R("GET", rf"/profile/(?P<user_id>{SEG})/(?P<key>{SEG})", auth="optional")(H.r_profile_get)
R("PUT", rf"/profile/(?P<user_id>{SEG})/(?P<key>{SEG})")(H.r_profile_put)
R("DELETE", rf"/profile/(?P<user_id>{SEG})/(?P<key>{SEG})")(H.r_profile_delete)
R("GET", rf"/user/(?P<user_id>{SEG})/account_data/(?P<atype>{SEG})")(H.r_account_data_get)
R("PUT", rf"/user/(?P<user_id>{SEG})/account_data/(?P<atype>{SEG})")(H.r_account_data_put)
R("GET", rf"/user/(?P<user_id>{SEG})/rooms/(?P<room_id>{SEG})/account_data/(?P<atype>{SEG})")(H.r_room_account_data_get)
R("PUT", rf"/user/(?P<user_id>{SEG})/rooms/(?P<room_id>{SEG})/account_data/(?P<atype>{SEG})")(H.r_room_account_data_put)
R("POST", r"/upload", prefix="media")(H.r_upload)
R("GET", r"/config", prefix="media")(H.r_media_config)
R("GET", rf"/download/(?P<server_name>{SEG})/(?P<media_id>{SEG})(?:/(?P<file_name>{SEG}))?",
  auth="optional", prefix="media")(H.r_download_legacy)
R("GET", r"/media/config", prefix="client_v1")(H.r_media_config)
R("GET", rf"/media/download/(?P<server_name>{SEG})/(?P<media_id>{SEG})(?:/(?P<file_name>{SEG}))?",
  prefix="client_v1")(H.r_download_v1)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Matrix homeserver for tests (Client-Server API + /_test control API)")
    p.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0 = pick a free one)")
    p.add_argument("--server-name", default="localhost", help="the server name in user/room ids and mxc URIs")
    p.add_argument("--upload-limit", type=int, default=10 * 1024 * 1024,
                   help="max upload size in bytes (413 M_TOO_LARGE above; m.upload.size)")
    p.add_argument("--freeze-legacy-media", action="store_true",
                   help="unauthenticated /_matrix/media/*/download answers 404 (as Synapse >= 1.120 does)")
    p.add_argument("--txn-ttl-s", type=float, default=1800.0,
                   help="how long transaction ids are remembered (Synapse: 30 min)")
    p.add_argument("--rc-message-per-s", type=float, default=0.0,
                   help="real rate limit on /send per user (token bucket; 0 = off)")
    p.add_argument("--rc-message-burst", type=int, default=10)
    p.add_argument("--max-sync-timeout-ms", type=int, default=300000,
                   help="cap on /sync?timeout (ms)")
    p.add_argument("--verbose", action="store_true", help="log every Client-Server API request to stderr")
    return p.parse_args(argv)


async def main_async(args):
    server = Homeserver(args)
    app = server.make_app()
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    server.port = sock.getsockname()[1]
    site = web.SockSite(runner, sock, shutdown_timeout=0.5)
    await site.start()
    server.wake_future()
    sys.stdout.write(f"READY port={server.port}\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main():
    args = parse_args()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
