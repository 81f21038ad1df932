#!/usr/bin/python3
"""Self-test of homeserver.py with a raw HTTP client (aiohttp only): what
matrix-nio's happy path (fidelity_test.py) never triggers: the error shapes,
per-device transaction scoping, long-poll wake-up latency, limited timelines
and state deltas, invite_state, encryption state, filters, the forced
hold/drop/garbage/429 rules of the control API, and media limits and auth.

  /usr/bin/python3 -B test/support/matrix/protocol_test.py [-v]

Exit status 0 on success, 1 with the failed check otherwise.
"""

import asyncio
import json
import os
import sys
import time

import aiohttp

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "homeserver.py")
VERBOSE = "-v" in sys.argv
SN = "proto.test"
V3 = "/_matrix/client/v3"


class CheckFailed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise CheckFailed(what)
    if VERBOSE:
        print(f"  ok: {what}")


def is_error(status, body, want_status, errcode):
    return (status == want_status and isinstance(body, dict) and body.get("errcode") == errcode
            and isinstance(body.get("error"), str))


class T:
    def __init__(self):
        self.proc = None
        self.http = None

    async def start(self):
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-B", SERVER, "--port", "0", "--server-name", SN, "--upload-limit", "1000",
            stdout=asyncio.subprocess.PIPE)
        line = (await asyncio.wait_for(self.proc.stdout.readline(), 10)).decode()
        check(line.startswith("READY port="), "server prints READY port=<n>")
        self.port = int(line.strip().split("=")[1])
        self.base = f"http://127.0.0.1:{self.port}"
        self.http = aiohttp.ClientSession()

    async def stop(self):
        if self.http is not None:
            await self.http.close()
        if self.proc and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()

    async def ctl(self, method, path, body=None):
        async with self.http.request(method, self.base + path, json=body) as r:
            data = await r.json(content_type=None)
            if r.status >= 400:
                raise CheckFailed(f"control {method} {path} -> {r.status} {data}")
            return data

    async def api(self, method, path, token=None, body=None, data=None, headers=None, params=None,
                  prefix=V3, session=None):
        """Returns (status, parsed JSON or bytes, headers)."""
        h = {}
        if token:
            h["Authorization"] = f"Bearer {token}"
        h.update(headers or {})
        kw = {}
        if body is not None:
            kw["data"] = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        elif data is not None:
            kw["data"] = data
        async with (session or self.http).request(method, self.base + prefix + path, headers=h,
                                                  params=params, **kw) as r:
            raw = await r.read()
            if r.content_type == "application/json":
                try:
                    return r.status, json.loads(raw), r.headers
                except ValueError:
                    return r.status, raw, r.headers
            return r.status, raw, r.headers

    async def user(self, localpart, device_id=None):
        body = {"localpart": localpart, "password": "pw"}
        if device_id:
            body["device_id"] = device_id
        u = await self.ctl("POST", "/_test/users", body)
        return u["user_id"], u["access_token"]

    async def sync(self, token, **params):
        s, b, _ = await self.api("GET", "/sync", token, params={k: (json.dumps(v) if isinstance(v, dict) else str(v))
                                                               for k, v in params.items()})
        check(s == 200 and isinstance(b, dict) and isinstance(b.get("next_batch"), str),
              f"sync answered 200 with next_batch ({s} {b if s != 200 else ''})")
        return b

    async def events(self, room_id):
        return (await self.ctl("GET", f"/_test/rooms/{room_id}"))["events"]


def tl(sync, room_id, section="join"):
    r = sync.get("rooms", {}).get(section, {}).get(room_id)
    return r["timeline"] if r else None


async def errors_and_auth(t):
    alice, atok = await t.user("alice")
    # every error is {"errcode","error"} JSON
    s, b, h = await t.api("GET", "/account/whoami")
    check(is_error(s, b, 401, "M_MISSING_TOKEN") and h["Content-Type"].startswith("application/json"),
          "no token -> 401 M_MISSING_TOKEN (JSON)")
    s, b, _ = await t.api("GET", "/account/whoami", "not-a-token")
    check(is_error(s, b, 401, "M_UNKNOWN_TOKEN") and b.get("soft_logout") is False,
          "unknown token -> 401 M_UNKNOWN_TOKEN, soft_logout false")
    s, b, _ = await t.api("GET", "/account/whoami", params={"access_token": atok})
    check(s == 200 and b["user_id"] == alice, "deprecated access_token query parameter accepted")
    s, b, _ = await t.api("GET", "/account/whoami", atok, params={"access_token": atok})
    check(is_error(s, b, 401, "M_MISSING_TOKEN"), "header and query parameter together -> M_MISSING_TOKEN")
    s, b, _ = await t.api("GET", "/account/whoami", headers={"Authorization": "Basic xyz"})
    check(is_error(s, b, 401, "M_MISSING_TOKEN"), "non-Bearer Authorization -> M_MISSING_TOKEN")
    s, b, _ = await t.api("GET", "/no/such/endpoint", atok)
    check(is_error(s, b, 404, "M_UNRECOGNIZED"), "unknown endpoint -> 404 M_UNRECOGNIZED")
    s, b, _ = await t.api("DELETE", "/sync", atok)
    check(is_error(s, b, 405, "M_UNRECOGNIZED"), "wrong method -> 405 M_UNRECOGNIZED")
    s, b, _ = await t.api("POST", "/createRoom", atok, data=b"{not json", headers={"Content-Type": "application/json"})
    check(is_error(s, b, 400, "M_NOT_JSON"), "invalid JSON -> 400 M_NOT_JSON")
    s, b, _ = await t.api("POST", "/createRoom", atok, body=[1, 2])
    check(is_error(s, b, 400, "M_BAD_JSON"), "a JSON array body -> 400 M_BAD_JSON")
    s, b, _ = await t.api("POST", "/createRoom", atok, body={"room_version": "999"})
    check(is_error(s, b, 400, "M_UNSUPPORTED_ROOM_VERSION"), "unknown room version -> M_UNSUPPORTED_ROOM_VERSION")
    s, b, h = await t.api("OPTIONS", "/sync")
    check(s in (200, 204) and h.get("Access-Control-Allow-Origin") == "*", "OPTIONS answered with CORS headers")
    s, b, _ = await t.api("GET", "/versions", prefix="/_matrix/client")
    check(s == 200 and "v1.11" in b["versions"], "GET /_matrix/client/versions")
    s, b, _ = await t.api("GET", "/capabilities", atok)
    check(s == 200 and b["capabilities"]["m.room_versions"]["default"] == "10", "GET /capabilities")
    # login variants and errors
    s, b, _ = await t.api("POST", "/login", body={"type": "m.login.token", "token": "x"})
    check(is_error(s, b, 400, "M_UNKNOWN"), "unsupported login type -> 400 M_UNKNOWN")
    s, b, _ = await t.api("POST", "/login", body={"type": "m.login.password", "user": "alice", "password": "pw",
                                                  "device_id": "KEEPME"})
    check(s == 200 and b["device_id"] == "KEEPME" and b["user_id"] == alice, "deprecated `user` login, device kept")
    s, b, _ = await t.api("POST", "/login", body={"type": "m.login.password", "password": "pw",
                                                  "identifier": {"type": "m.id.user", "user": "@nobody:" + SN}})
    check(is_error(s, b, 403, "M_FORBIDDEN"), "unknown user -> 403 M_FORBIDDEN")
    tok2 = b"" if s != 200 else None
    s, b, _ = await t.api("POST", "/logout", atok)
    check(s == 200 and b == {}, "logout with an empty body")
    s, b, _ = await t.api("GET", "/account/whoami", atok)
    check(is_error(s, b, 401, "M_UNKNOWN_TOKEN"), "a logged-out token is unknown")
    _, atok = await t.user("alice")
    r = await t.ctl("POST", "/_test/tokens/revoke", {"access_token": atok})
    s, b, _ = await t.api("GET", "/account/whoami", atok)
    check(r["revoked"] == 1 and is_error(s, b, 401, "M_UNKNOWN_TOKEN"), "/_test/tokens/revoke")
    del tok2
    recs = (await t.ctl("GET", "/_test/requests?path=whoami"))["records"]
    check(all("syt_" not in json.dumps(r) for r in recs) and any(r["query"].get("access_token") == "<valid>"
                                                                for r in recs), "tokens are redacted in the recording")


async def txn_scoping(t):
    bob, b1 = await t.user("bob", "BOB1")
    _, b2 = await t.user("bob", "BOB2")
    s, b, _ = await t.api("POST", "/createRoom", b1, body={"name": "txn"})
    room = b["room_id"]
    s, e1, _ = await t.api("PUT", f"/rooms/{room}/send/m.room.message/T1", b1, body={"msgtype": "m.text", "body": "a"})
    s, e2, _ = await t.api("PUT", f"/rooms/{room}/send/m.room.message/T1", b1, body={"msgtype": "m.text", "body": "a"})
    check(s == 200 and e1 == e2, "same device + same txn id -> the first answer again")
    s, e3, _ = await t.api("PUT", f"/rooms/{room}/send/m.room.message/T1", b2, body={"msgtype": "m.text", "body": "a"})
    check(s == 200 and e3["event_id"] != e1["event_id"], "same txn id from another device -> a new event")
    s, e4, _ = await t.api("PUT", f"/rooms/{room}/send/m.custom.type/T1", b1, body={"x": 1})
    check(s == 200 and e4["event_id"] not in (e1["event_id"], e3["event_id"]),
          "same txn id on another endpoint path -> a new event")
    evs = [e for e in await t.events(room) if e.get("txn_id") == "T1"]
    check(len(evs) == 3 and sorted(e["device_id"] for e in evs) == ["BOB1", "BOB1", "BOB2"], "3 events stored")
    # transaction_id is only shown to the sending device
    s1 = await t.sync(b1)
    s2 = await t.sync(b2)
    m1 = [e for e in tl(s1, room)["events"] if e["event_id"] == e1["event_id"]][0]
    m2 = [e for e in tl(s2, room)["events"] if e["event_id"] == e1["event_id"]][0]
    check(m1["unsigned"].get("transaction_id") == "T1" and "transaction_id" not in m2["unsigned"],
          "unsigned.transaction_id only for the sending device")
    s, r1, _ = await t.api("PUT", f"/rooms/{room}/redact/{e4['event_id']}/R1", b1, body={"reason": "x"})
    s, r2, _ = await t.api("PUT", f"/rooms/{room}/redact/{e4['event_id']}/R1", b1, body={"reason": "x"})
    check(s == 200 and r1 == r2, "redact is idempotent per txn id too")
    s, ev, _ = await t.api("GET", f"/rooms/{room}/event/{e4['event_id']}", b1)
    check(s == 200 and ev["content"] == {} and ev["unsigned"]["redacted_because"]["event_id"] == r1["event_id"],
          "a redacted event: content pruned, unsigned.redacted_because")
    # non-members, unknown rooms, too large events
    carol, ctok = await t.user("carol")
    s, b, _ = await t.api("PUT", f"/rooms/{room}/send/m.room.message/X", ctok, body={"body": "x"})
    check(is_error(s, b, 403, "M_FORBIDDEN"), "non-member send -> 403 M_FORBIDDEN")
    s, b, _ = await t.api("PUT", f"/rooms/!nope:{SN}/send/m.room.message/X", ctok, body={"body": "x"})
    check(is_error(s, b, 403, "M_FORBIDDEN"), "unknown room send -> 403 M_FORBIDDEN")
    s, b, _ = await t.api("PUT", f"/rooms/{room}/send/m.room.message/BIG", b1, body={"body": "x" * 70000})
    check(is_error(s, b, 413, "M_TOO_LARGE"), "an event over 65536 bytes -> 413 M_TOO_LARGE")
    s, b, _ = await t.api("PUT", f"/rooms/{room}/send/m.room.message/E", b1, data=b"")
    check(is_error(s, b, 400, "M_NOT_JSON"), "send without a body -> 400 M_NOT_JSON")
    s, b, _ = await t.api("GET", f"/rooms/{room}/messages", ctok, params={"dir": "b"})
    check(is_error(s, b, 403, "M_FORBIDDEN"), "non-member /messages -> 403")
    return room, bob, b1


async def long_poll(t, room, bob, btok):
    _, other = await t.user("dave")
    await t.ctl("POST", f"/_test/rooms/{room}/membership", {"user_id": "dave", "membership": "join"})
    side = (await t.ctl("POST", "/_test/rooms", {"creator": "dave", "name": "elsewhere"}))["room_id"]
    nb = (await t.sync(btok))["next_batch"]

    async def timed_sync(since, timeout_ms=8000):
        t0 = time.monotonic()
        b = await t.sync(btok, since=since, timeout=timeout_ms)
        return b, time.monotonic() - t0

    # an event in a room bob is not in does not wake him
    task = asyncio.ensure_future(timed_sync(nb, 600))
    await asyncio.sleep(0.1)
    await t.ctl("POST", f"/_test/rooms/{side}/send", {"sender": "dave", "content": {"msgtype": "m.text", "body": "x"}})
    b, took = await task
    check(took >= 0.55 and "rooms" not in b, f"an unrelated event does not end the long poll ({took:.2f} s)")
    check(b["next_batch"] != "" and isinstance(b["next_batch"], str), "an empty answer still has next_batch")
    nb = b["next_batch"]
    lat = {}
    for what, act in (
            ("message", lambda: t.ctl("POST", f"/_test/rooms/{room}/send",
                                      {"sender": "dave", "content": {"msgtype": "m.text", "body": "wake"}})),
            ("typing", lambda: t.ctl("POST", f"/_test/rooms/{room}/typing", {"user_id": "dave", "timeout": 300})),
            ("receipt", lambda: t.ctl("POST", f"/_test/rooms/{room}/receipt",
                                      {"user_id": "dave", "event_id": "$whatever"})),
            ("presence", lambda: t.ctl("POST", "/_test/presence", {"user_id": "dave", "presence": "online"}))):
        task = asyncio.ensure_future(timed_sync(nb))
        await asyncio.sleep(0.25)
        check(not task.done(), f"long poll waiting before the {what}")
        t0 = time.monotonic()
        await act()
        b, _ = await asyncio.wait_for(task, 5)
        lat[what] = time.monotonic() - t0
        check(lat[what] < 1.0, f"long poll woken by a {what} within 1 s ({lat[what] * 1000:.0f} ms)")
        nb = b["next_batch"]
        if what == "message":
            check([e["content"].get("body") for e in tl(b, room)["events"]] == ["wake"], "the message delivered")
        if what == "typing":
            eph = b["rooms"]["join"][room]["ephemeral"]["events"]
            check(eph == [{"type": "m.typing", "content": {"user_ids": ["@dave:" + SN]}}], "m.typing delivered")
            # the typing timeout (300 ms) expires: a second m.typing with nobody
            b2, took = await timed_sync(nb, 3000)
            eph = b2["rooms"]["join"][room]["ephemeral"]["events"]
            check(eph == [{"type": "m.typing", "content": {"user_ids": []}}] and took < 1.0,
                  "typing expires after its timeout")
            nb = b2["next_batch"]
        if what == "receipt":
            eph = b["rooms"]["join"][room]["ephemeral"]["events"]
            check(eph[0]["type"] == "m.receipt" and "@dave:" + SN in eph[0]["content"]["$whatever"]["m.read"],
                  "m.receipt delivered")
        if what == "presence":
            check(any(e["sender"] == "@dave:" + SN and e["content"]["presence"] == "online"
                      for e in b["presence"]["events"]), "m.presence delivered")
    # an invite wakes the invitee, with stripped state
    inv = (await t.ctl("POST", "/_test/rooms", {"creator": "dave", "name": "Secret plans", "encrypted": True,
                                                "is_direct": True}))["room_id"]
    task = asyncio.ensure_future(timed_sync(nb))
    await asyncio.sleep(0.2)
    t0 = time.monotonic()
    await t.ctl("POST", f"/_test/rooms/{inv}/membership", {"user_id": bob, "sender": "dave",
                                                           "membership": "invite", "is_direct": True})
    b, _ = await asyncio.wait_for(task, 5)
    check(time.monotonic() - t0 < 1.0 and inv in b["rooms"]["invite"], "an invite wakes the long poll")
    ist = b["rooms"]["invite"][inv]["invite_state"]["events"]
    check(all(set(e) == {"type", "state_key", "sender", "content"} for e in ist),
          "stripped state events have only type/state_key/sender/content")
    types = {e["type"]: e for e in ist if e["type"] != "m.room.member"}
    check(types["m.room.name"]["content"]["name"] == "Secret plans" and
          types["m.room.encryption"]["content"]["algorithm"] == "m.megolm.v1.aes-sha2" and
          "m.room.create" in types and "m.room.join_rules" in types,
          "invite_state: m.room.create, join_rules, name, encryption")
    mine = [e for e in ist if e["type"] == "m.room.member" and e["state_key"] == bob]
    check(mine and mine[0]["content"]["membership"] == "invite" and mine[0]["content"]["is_direct"] is True
          and mine[0]["sender"] == "@dave:" + SN, "invite_state: the m.room.member invite (is_direct)")
    nb = b["next_batch"]
    # encryption state after joining; PL check on m.room.encryption
    s, j, _ = await t.api("POST", f"/join/{inv}", btok, body={})
    check(s == 200 and j["room_id"] == inv, "POST /join/{roomIdOrAlias}")
    b = await t.sync(btok, since=nb)
    st = b["rooms"]["join"][inv]["state"]["events"] + b["rooms"]["join"][inv]["timeline"]["events"]
    check(any(e["type"] == "m.room.encryption" for e in st), "the newly joined room carries its full state")
    s, c, _ = await t.api("GET", f"/rooms/{inv}/state/m.room.encryption", btok)
    check(s == 200 and c["algorithm"] == "m.megolm.v1.aes-sha2", "GET state/m.room.encryption (trailing key omitted)")
    s, c, _ = await t.api("GET", f"/rooms/{inv}/state/m.room.encryption/", btok, params={"format": "event"})
    check(s == 200 and c["type"] == "m.room.encryption" and c["state_key"] == "", "?format=event")
    s, c, _ = await t.api("PUT", f"/rooms/{inv}/state/m.room.encryption/", btok,
                          body={"algorithm": "m.megolm.v1.aes-sha2", "rotation_period_ms": 1})
    check(is_error(s, c, 403, "M_FORBIDDEN"), "m.room.encryption needs power level 100")
    s, c, _ = await t.api("GET", f"/rooms/{inv}/state/m.room.topic", btok)
    check(is_error(s, c, 404, "M_NOT_FOUND"), "missing state -> 404 M_NOT_FOUND")
    print(f"PASS long poll: wake-up {', '.join(f'{k} {v * 1000:.0f} ms' for k, v in lat.items())}; "
          f"invite_state; encryption state")
    return nb


async def timelines(t, room, bob, btok, nb):
    # not limited: everything since the token, empty state
    for i in range(3):
        await t.ctl("POST", f"/_test/rooms/{room}/send", {"sender": "dave", "content": {"msgtype": "m.text",
                                                                                     "body": f"n{i}"}})
    b = await t.sync(btok, since=nb, filter={"room": {"timeline": {"limit": 5}}})
    x = tl(b, room)
    check(not x["limited"] and [e["content"]["body"] for e in x["events"]] == ["n0", "n1", "n2"] and
          b["rooms"]["join"][room]["state"]["events"] == [], "incremental, under the limit: limited false, no state")
    nb = b["next_batch"]
    # limited, with a state change inside the gap
    await t.ctl("POST", f"/_test/rooms/{room}/send", {"sender": "dave", "content": {"msgtype": "m.text", "body": "g0"}})
    await t.ctl("POST", f"/_test/rooms/{room}/state", {"sender": bob, "type": "m.room.topic",
                                                       "content": {"topic": "changed in the gap"}})
    for i in range(1, 8):
        await t.ctl("POST", f"/_test/rooms/{room}/send", {"sender": "dave", "content": {"msgtype": "m.text",
                                                                                     "body": f"g{i}"}})
    s, fid, _ = await t.api("POST", f"/user/{bob}/filter", btok, body={"room": {"timeline": {"limit": 3}}})
    b = await t.sync(btok, since=nb, filter=fid["filter_id"])
    x = tl(b, room)
    check(x["limited"] is True and [e["content"]["body"] for e in x["events"]] == ["g5", "g6", "g7"],
          "limited: true, the newest `limit` events")
    st = b["rooms"]["join"][room]["state"]["events"]
    check([(e["type"], e["content"].get("topic")) for e in st] == [("m.room.topic", "changed in the gap")],
          "the state delta carries the state change that happened in the gap")
    s, m, _ = await t.api("GET", f"/rooms/{room}/messages", btok, params={"from": x["prev_batch"], "dir": "b",
                                                                         "to": nb, "limit": "50"})
    check(s == 200 and [e.get("content", {}).get("body", e["type"]) for e in m["chunk"]] ==
          ["g4", "g3", "g2", "g1", "m.room.topic", "g0"] and "end" not in m,
          "/messages from=prev_batch to=since fills exactly the gap; no `end` at the `to` bound")
    s, m, _ = await t.api("GET", f"/rooms/{room}/messages", btok, params={"from": nb, "dir": "f", "limit": "3"})
    check(s == 200 and [e["content"].get("body") for e in m["chunk"]] == ["g0", None, "g1"] and "end" in m,
          "dir=f from a sync token")
    nb = b["next_batch"]
    # type filters with wildcards, not_types, senders
    await t.ctl("POST", f"/_test/rooms/{room}/send", {"sender": "dave", "type": "m.reaction", "content": {
        "m.relates_to": {"rel_type": "m.annotation", "event_id": x["events"][0]["event_id"], "key": "x"}}})
    await t.ctl("POST", f"/_test/rooms/{room}/send", {"sender": bob, "content": {"msgtype": "m.text", "body": "me"}})
    b = await t.sync(btok, since=nb, filter={"room": {"timeline": {"types": ["m.room.*"], "not_senders": [bob]}}})
    check(tl(b, room) is None, "types m.room.* + not_senders: nothing left -> the room is not in the answer")
    b = await t.sync(btok, since=nb, filter={"room": {"timeline": {"not_types": ["m.room.message"]}}})
    check([e["type"] for e in tl(b, room)["events"]] == ["m.reaction"], "not_types")
    # initial sync: state at the start of the timeline, full_state on an incremental sync
    b = await t.sync(btok, filter={"room": {"timeline": {"limit": 1}}})
    st = {(e["type"], e["state_key"]) for e in b["rooms"]["join"][room]["state"]["events"]}
    check(("m.room.create", "") in st and ("m.room.member", bob) in st and tl(b, room)["limited"],
          "initial sync: full state + limited timeline")
    b = await t.sync(btok, since=b["next_batch"], full_state="true")
    check(room in b["rooms"]["join"] and b["rooms"]["join"][room]["state"]["events"],
          "full_state=true returns the state of every joined room")
    # bad parameters
    s, e, _ = await t.api("GET", "/sync", btok, params={"since": "garbage"})
    check(is_error(s, e, 400, "M_INVALID_PARAM"), "garbage since -> 400 M_INVALID_PARAM")
    s, e, _ = await t.api("GET", "/sync", btok, params={"since": x["prev_batch"]})
    check(is_error(s, e, 400, "M_INVALID_PARAM"), "a /messages token as since -> 400 M_INVALID_PARAM")
    s, e, _ = await t.api("GET", "/sync", btok, params={"filter": "{broken"})
    check(is_error(s, e, 400, "M_NOT_JSON"), "broken inline filter -> 400 M_NOT_JSON")
    s, e, _ = await t.api("GET", "/sync", btok, params={"filter": "999"})
    check(is_error(s, e, 404, "M_NOT_FOUND"), "unknown filter id -> 404 M_NOT_FOUND")
    s, e, _ = await t.api("POST", f"/user/@dave:{SN}/filter", btok, body={})
    check(is_error(s, e, 403, "M_FORBIDDEN"), "a filter for another user -> 403")
    s, e, _ = await t.api("POST", f"/user/{bob}/filter", btok, body={"room": {"timeline": {"limit": 0}}})
    check(is_error(s, e, 400, "M_BAD_JSON"), "filter limit 0 -> 400 M_BAD_JSON")
    s, e, _ = await t.api("GET", f"/rooms/{room}/messages", btok)
    check(is_error(s, e, 400, "M_MISSING_PARAM"), "/messages without dir -> 400 M_MISSING_PARAM")
    s, e, _ = await t.api("GET", f"/rooms/{room}/messages", btok, params={"dir": "b", "from": "zzz"})
    check(is_error(s, e, 400, "M_INVALID_PARAM"), "/messages with a garbage token -> 400 M_INVALID_PARAM")
    # leave: the room shows up under rooms.leave, ending with the leave event
    nb = (await t.sync(btok))["next_batch"]
    s, _, _ = await t.api("POST", f"/rooms/{room}/leave", btok, body={})
    b = await t.sync(btok, since=nb)
    lv = tl(b, room, "leave")
    check(lv is not None and lv["events"][-1]["type"] == "m.room.member" and
          lv["events"][-1]["content"]["membership"] == "leave", "rooms.leave after leaving")
    s, e, _ = await t.api("GET", f"/rooms/{room}/messages", btok, params={"dir": "b", "limit": "2"})
    check(s == 200 and e["chunk"][0]["content"]["membership"] == "leave", "history up to the leave stays readable")
    s, e, _ = await t.api("POST", f"/rooms/{room}/join", btok, body={})
    check(is_error(s, e, 403, "M_FORBIDDEN"), "re-joining an invite-only room uninvited -> 403")
    print("PASS timelines: limited + state delta + gap filling, filters, initial/full_state, leave, bad tokens")


async def forced(t):
    eve, etok = await t.user("eve")
    _, ftok = await t.user("frank")
    room = (await t.ctl("POST", "/_test/rooms", {"creator": "eve", "members": ["frank"]}))["room_id"]
    nb = (await t.sync(etok))["next_batch"]
    # 429 with Retry-After and retry_after_ms, only for the matching user, count honoured
    await t.ctl("POST", "/_test/force", {"path": r"/send/m\.room\.message/", "user": "eve", "count": 2,
                                         "status": 429, "retry_after_ms": 2500})
    s, b, _ = await t.api("PUT", f"/rooms/{room}/send/m.room.message/F1", ftok, body={"body": "frank"})
    check(s == 200, "a force rule for another user does not apply")
    for _ in range(2):
        s, b, h = await t.api("PUT", f"/rooms/{room}/send/m.room.message/E1", etok, body={"body": "eve"})
        check(is_error(s, b, 429, "M_LIMIT_EXCEEDED") and b["retry_after_ms"] == 2500 and h["Retry-After"] == "3",
              "forced 429 M_LIMIT_EXCEEDED with retry_after_ms and Retry-After")
    s, b, _ = await t.api("PUT", f"/rooms/{room}/send/m.room.message/E1", etok, body={"body": "eve"})
    check(s == 200, "after `count` answers the rule is spent")
    check(len([e for e in await t.events(room) if e["content"].get("body") == "eve"]) == 1,
          "forced errors did no work")
    await t.ctl("POST", "/_test/force", {"path": "/typing/", "method": "PUT", "status": 502, "errcode": "M_UNKNOWN"})
    s, b, _ = await t.api("PUT", f"/rooms/{room}/typing/{eve}", etok, body={"typing": True, "timeout": 1000})
    check(is_error(s, b, 502, "M_UNKNOWN"), "forced 502")
    # hold: the work is done at once, the answer comes hold_s later
    await t.ctl("POST", "/_test/force", {"path": "/send/", "user": "eve", "hold_s": 0.8})
    task = asyncio.ensure_future(t.api("PUT", f"/rooms/{room}/send/m.room.message/H1", etok, body={"body": "held"}))
    await asyncio.sleep(0.3)
    early = [e for e in await t.events(room) if e["content"].get("body") == "held"]
    check(len(early) == 1 and not task.done(), "hold: the event exists before the answer is sent")
    s, b, _ = await task
    check(s == 200 and b["event_id"] == early[0]["event_id"], "hold: the answer arrives later with that event id")
    # drop before / after the work
    for when, expect in (("before", 0), ("after", 1)):
        await t.ctl("POST", "/_test/force", {"path": "/send/", "user": "eve", "drop": when})
        try:
            async with aiohttp.ClientSession() as sess:
                await t.api("PUT", f"/rooms/{room}/send/m.room.message/D-{when}", etok,
                            body={"body": f"drop {when}"}, session=sess)
            check(False, f"drop {when}: the connection should have been closed")
        except aiohttp.ClientError:
            pass
        n = len([e for e in await t.events(room) if e["content"].get("body") == f"drop {when}"])
        check(n == expect, f"drop {when} the work: {expect} event(s) stored")
        s, b, _ = await t.api("PUT", f"/rooms/{room}/send/m.room.message/D-{when}", etok, body={"body": f"drop {when}"})
        n = len([e for e in await t.events(room) if e["content"].get("body") == f"drop {when}"])
        check(s == 200 and n == 1, f"drop {when}: the retry with the same txn id leaves exactly one event")
    recs = (await t.ctl("GET", "/_test/requests?path=/send/&user=eve"))["records"]
    check(any(r.get("dropped") == "after" for r in recs) and any(r.get("txn_dedup") for r in recs),
          "the recording shows the drop and the deduplicated retry")
    # garbage /sync bodies, per user
    for kind in ("truncated", "not_json", "wrong_types", "empty"):
        await t.ctl("POST", "/_test/sync-garbage", {"user": "eve", "kind": kind})
        s, b, _ = await t.api("GET", "/sync", ftok)
        check(s == 200 and isinstance(b, dict) and isinstance(b.get("next_batch"), str), f"{kind}: others unaffected")
        s, b, _ = await t.api("GET", "/sync", etok, params={"since": nb})
        if kind in ("truncated", "not_json"):
            check(s == 200 and isinstance(b, bytes), f"sync garbage {kind}: not parseable JSON")
        elif kind == "wrong_types":
            check(s == 200 and isinstance(b["next_batch"], int) and isinstance(b["rooms"], list),
                  "sync garbage wrong_types")
        else:
            check(s == 200 and b == {}, "sync garbage empty: {} without next_batch")
        b = await t.sync(etok, since=nb)
        check(isinstance(b["next_batch"], str), f"after {kind} the next /sync is fine again")
    await t.ctl("POST", "/_test/force", {"path": "/send/", "count": -1, "delay_s": 0.2, "hold_s": 0})
    t0 = time.monotonic()
    s, _, _ = await t.api("PUT", f"/rooms/{room}/send/m.room.message/SLOW", etok, body={"body": "slow"})
    s2, _, _ = await t.api("PUT", f"/rooms/{room}/send/m.room.message/SLOW2", etok, body={"body": "slow"})
    check(s == 200 and s2 == 200 and time.monotonic() - t0 >= 0.4, "count -1: a permanent (delay) rule")
    cl = await t.ctl("POST", "/_test/force/clear")
    check(cl["cleared"] >= 1, "/_test/force/clear")
    # the real (opt-in) message rate limit
    await t.ctl("POST", "/_test/config", {"rc_message_per_s": 1.0, "rc_message_burst": 2})
    codes = []
    for i in range(3):
        s, b, h = await t.api("PUT", f"/rooms/{room}/send/m.room.message/RC{i}", etok, body={"body": "rc"})
        codes.append(s)
    await t.ctl("POST", "/_test/config", {"rc_message_per_s": 0.0})
    check(codes == [200, 200, 429] and b["errcode"] == "M_LIMIT_EXCEEDED" and 0 < b["retry_after_ms"] <= 1000
          and "Retry-After" in h, "rc_message: burst then 429 with retry_after_ms")
    print("PASS forced: 429 + Retry-After, 502, hold, drop before/after + txn retry, sync garbage, rate limit")


async def media_and_misc(t):
    _, gtok = await t.user("gina")
    s, b, _ = await t.api("POST", "/upload", gtok, data=b"hello world", prefix="/_matrix/media/v3",
                          headers={"Content-Type": "text/plain"}, params={"filename": "hello.txt"})
    check(s == 200 and b["content_uri"].startswith(f"mxc://{SN}/"), "upload -> mxc://server/id")
    media = b["content_uri"][len("mxc://"):]
    s, b, _ = await t.api("POST", "/upload", gtok, data=b"x" * 1001, prefix="/_matrix/media/v3",
                          headers={"Content-Type": "application/octet-stream"})
    check(is_error(s, b, 413, "M_TOO_LARGE"), "upload over --upload-limit -> 413 M_TOO_LARGE")
    s, b, _ = await t.api("POST", "/upload", None, data=b"x", prefix="/_matrix/media/v3")
    check(is_error(s, b, 401, "M_MISSING_TOKEN"), "upload needs a token")
    s, b, _ = await t.api("GET", "/media/config", gtok, prefix="/_matrix/client/v1")
    check(s == 200 and b == {"m.upload.size": 1000}, "v1 media config: m.upload.size")
    s, b, _ = await t.api("GET", f"/media/download/{media}", None, prefix="/_matrix/client/v1")
    check(is_error(s, b, 401, "M_MISSING_TOKEN"), "v1 download without a token -> 401 M_MISSING_TOKEN")
    s, b, _ = await t.api("GET", f"/media/download/{media}", "bogus", prefix="/_matrix/client/v1")
    check(is_error(s, b, 401, "M_UNKNOWN_TOKEN"), "v1 download with an unknown token -> 401 M_UNKNOWN_TOKEN")
    s, b, h = await t.api("GET", f"/media/download/{media}", gtok, prefix="/_matrix/client/v1")
    check(s == 200 and b == b"hello world" and h["Content-Type"].startswith("text/plain") and
          h["Content-Disposition"] == 'inline; filename="hello.txt"' and "sandbox" in h["Content-Security-Policy"],
          "v1 download: bytes, Content-Type, Content-Disposition, CSP")
    s, b, h = await t.api("GET", f"/media/download/{media}/other.txt", gtok, prefix="/_matrix/client/v1")
    check(s == 200 and 'filename="other.txt"' in h["Content-Disposition"], "download with a file name override")
    s, b, _ = await t.api("GET", f"/media/download/{SN}/nope", gtok, prefix="/_matrix/client/v1")
    check(is_error(s, b, 404, "M_NOT_FOUND"), "unknown media -> 404 M_NOT_FOUND")
    s, b, _ = await t.api("GET", f"/download/{media}", None, prefix="/_matrix/media/v3")
    check(s == 200 and b == b"hello world", "legacy unauthenticated download")
    await t.ctl("POST", "/_test/config", {"freeze_legacy_media": True})
    s, b, _ = await t.api("GET", f"/download/{media}", None, prefix="/_matrix/media/v3")
    check(is_error(s, b, 404, "M_NOT_FOUND"), "freeze_legacy_media: legacy download -> 404")
    await t.ctl("POST", "/_test/config", {"freeze_legacy_media": False})
    st = await t.ctl("GET", "/_test/state")
    check(any(u["content_uri"] == "mxc://" + media and u["size"] == 11 and u["filename"] == "hello.txt"
              for u in st["uploads"]), "/_test/state lists uploads")
    # misc validation
    gina = "@gina:" + SN
    room = (await t.ctl("POST", "/_test/rooms", {"creator": "gina", "name": "misc"}))["room_id"]
    s, b, _ = await t.api("PUT", f"/rooms/{room}/typing/@eve:{SN}", gtok, body={"typing": True})
    check(is_error(s, b, 403, "M_FORBIDDEN"), "typing for another user -> 403")
    s, b, _ = await t.api("PUT", f"/rooms/{room}/typing/{gina}", gtok, body={})
    check(is_error(s, b, 400, "M_BAD_JSON"), "typing without `typing` -> 400 M_BAD_JSON")
    s, b, _ = await t.api("POST", f"/rooms/{room}/receipt/m.bogus/$x", gtok, body={})
    check(is_error(s, b, 400, "M_INVALID_PARAM"), "unknown receipt type -> 400 M_INVALID_PARAM")
    s, b, _ = await t.api("PUT", f"/presence/{gina}/status", gtok, body={"presence": "busy"})
    check(is_error(s, b, 400, "M_INVALID_PARAM"), "invalid presence -> 400 M_INVALID_PARAM")
    s, b, _ = await t.api("PUT", f"/presence/@eve:{SN}/status", gtok, body={"presence": "online"})
    check(is_error(s, b, 403, "M_FORBIDDEN"), "another user's presence -> 403")
    s, b, _ = await t.api("GET", f"/profile/@nobody:{SN}", gtok)
    check(is_error(s, b, 404, "M_NOT_FOUND"), "unknown profile -> 404")
    s, b, _ = await t.api("POST", f"/rooms/{room}/invite", gtok, body={"user_id": f"@nobody:{SN}"})
    check(is_error(s, b, 404, "M_NOT_FOUND"), "inviting an unknown user -> 404")
    s, b, _ = await t.api("POST", f"/rooms/{room}/invite", gtok, body={})
    check(is_error(s, b, 400, "M_MISSING_PARAM"), "invite without user_id -> 400 M_MISSING_PARAM")
    s, b, _ = await t.api("POST", "/createRoom", gtok, body={"room_alias_name": "misc", "preset": "public_chat"})
    s2, b2, _ = await t.api("POST", "/createRoom", gtok, body={"room_alias_name": "misc"})
    check(s == 200 and is_error(s2, b2, 400, "M_ROOM_IN_USE"), "alias in use -> 400 M_ROOM_IN_USE")
    _, htok = await t.user("hank")
    s, j, _ = await t.api("POST", f"/join/%23misc:{SN}", htok, body={})
    check(s == 200 and j["room_id"] == b["room_id"], "join a public room by alias")
    s, m, _ = await t.api("GET", f"/rooms/{b['room_id']}/members", htok, params={"membership": "join"})
    check(s == 200 and len(m["chunk"]) == 2 and all(e["content"]["membership"] == "join" for e in m["chunk"]),
          "/members?membership=join")
    s, e, _ = await t.api("PUT", f"/user/{gina}/account_data/m.direct", gtok, body={"@hank:" + SN: [room]})
    s2, e2, _ = await t.api("GET", f"/user/{gina}/account_data/m.direct", gtok)
    check(s == 200 and e2 == {"@hank:" + SN: [room]}, "account data PUT/GET")
    recs = (await t.ctl("GET", "/_test/requests?path=/account_data/"))
    check(len(recs["records"]) == 2 and recs["records"][0]["body"] == {"@hank:" + SN: [room]} and
          recs["records"][0]["user"] == gina and recs["records"][0]["status"] == 200, "requests are recorded")
    r = await t.ctl("POST", "/_test/reset-requests")
    check((await t.ctl("GET", f"/_test/requests?since={r['next']}"))["records"] == [], "/_test/reset-requests")
    print("PASS media: limit, v1 auth, legacy + freeze, headers; validation errors; aliases; account data")


async def main():
    t = T()
    t0 = time.monotonic()
    try:
        await t.start()
        await asyncio.wait_for(errors_and_auth(t), 10)
        print("PASS errors and auth: error shapes, tokens (header, query, both), login, logout, revoke")
        room, bob, btok = await asyncio.wait_for(txn_scoping(t), 10)
        print("PASS transactions: per-device txn ids, transaction_id, redactions, 403/413 on send")
        nb = await asyncio.wait_for(long_poll(t, room, bob, btok), 25)
        await asyncio.wait_for(timelines(t, room, bob, btok, nb), 10)
        await asyncio.wait_for(forced(t), 15)
        await asyncio.wait_for(media_and_misc(t), 10)
    except CheckFailed as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    except asyncio.TimeoutError:
        print("FAIL: timed out", file=sys.stderr)
        return 1
    except Exception as e:
        import traceback
        traceback.print_exc()
        print(f"FAIL: unexpected {e!r}", file=sys.stderr)
        return 1
    finally:
        await t.stop()
    print(f"OK: protocol self-test passed in {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
