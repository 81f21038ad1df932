#!/usr/bin/python3
"""Fidelity check of homeserver.py: runs a real Matrix client library
(Debian's python3-matrix-nio, 0.20.x) against the test homeserver and checks
that the library, written against real homeservers (Synapse), works unchanged:
its responses parse (nio validates every answer with JSON schemas and returns
an ErrorResponse when the shape is wrong) and carry what was sent.

  /usr/bin/python3 -B test/support/matrix/fidelity_test.py [-v]

Exit status 0 and a summary on success; 1 and the failed check otherwise.
Needs the Debian packages python3-aiohttp and python3-matrix-nio.
FIDELITY_SERVER_ARGS="..." adds server flags; FIDELITY_DEBUG=1 shows nio's log;
FIDELITY_R0=1 leaves nio on its own /_matrix/client/r0 paths.

How nio is pointed at the server: AsyncClient(homeserver="http://127.0.0.1:<port>").
nio 0.20 builds /_matrix/client/r0 and /_matrix/media/r0 paths and sends the
token as the deprecated `access_token` query parameter; unless FIDELITY_R0=1
the test switches nio's two path prefixes to v3 (the paths our C++ client
uses), nothing else is patched.  E2EE is off (AsyncClientConfig).
"""

import asyncio
import io
import logging
import os
import sys
import time

import aiohttp

try:
    import nio
    import nio.api
    import nio.responses as NR
    from nio import AsyncClient, AsyncClientConfig
except ImportError as e:  # pragma: no cover
    print(f"FAIL: matrix-nio is not installed ({e}); apt-get install python3-matrix-nio", file=sys.stderr)
    sys.exit(1)

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "homeserver.py")
OVERALL_TIMEOUT_S = 55
VERBOSE = "-v" in sys.argv
SERVER_NAME = "fidelity.test"
ALICE = f"@alice:{SERVER_NAME}"
BOT = f"@stargazer:{SERVER_NAME}"

if not os.environ.get("FIDELITY_R0"):
    # nio.api.Api._build_path(path, query_parameters=None, base_path=MATRIX_API_PATH)
    nio.api.Api._build_path.__defaults__ = (None, "/_matrix/client/v3")
    nio.api.MATRIX_API_PATH = "/_matrix/client/v3"
    nio.api.MATRIX_MEDIA_API_PATH = "/_matrix/media/v3"


class CheckFailed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise CheckFailed(what)
    if VERBOSE:
        print(f"  ok: {what}")


def ok_type(resp, cls, what):
    """nio returns an ErrorResponse subclass when the server's answer did not
    have the documented shape (or was an error): that is a failure."""
    if not isinstance(resp, cls):
        raise CheckFailed(f"{what}: expected {cls.__name__}, got {resp!r}")
    if VERBOSE:
        print(f"  ok: {what} -> {cls.__name__}")
    return resp


class Harness:
    def __init__(self):
        self.proc = None
        self.port = None
        self.http = None
        self.passed = []
        self.clients = []

    async def start_server(self):
        args = [sys.executable, "-B", SERVER, "--port", "0", "--server-name", SERVER_NAME,
                "--upload-limit", "65536"] + os.environ.get("FIDELITY_SERVER_ARGS", "").split()
        self.proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE, stderr=None)
        line = (await asyncio.wait_for(self.proc.stdout.readline(), 10)).decode().strip()
        if not line.startswith("READY port="):
            raise CheckFailed(f"server did not print READY port=<n> (got {line!r})")
        self.port = int(line.split("=", 1)[1])
        self.base = f"http://127.0.0.1:{self.port}"
        self.http = aiohttp.ClientSession()

    async def stop(self):
        for c in self.clients:
            try:
                await c.close()
            except Exception:
                pass
        if self.http is not None:
            await self.http.close()
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except asyncio.TimeoutError:
                self.proc.kill()

    async def ctl(self, method, path, body=None):
        async with self.http.request(method, self.base + path, json=body) as r:
            data = await r.json(content_type=None)
            if r.status >= 400:
                raise CheckFailed(f"control API {method} {path} -> {r.status} {data}")
            return data

    async def state(self):
        return await self.ctl("GET", "/_test/state")

    async def room(self, room_id):
        return await self.ctl("GET", f"/_test/rooms/{room_id}")

    async def records(self, since=0, path=None):
        q = f"?since={since}" + (f"&path={path}" if path else "")
        return await self.ctl("GET", "/_test/requests" + q)

    def client(self, user, device_id, **cfg):
        config = AsyncClientConfig(encryption_enabled=False, store_sync_tokens=False,
                                   backoff_factor=0.05, max_timeout_retry_wait_time=1, **cfg)
        c = AsyncClient(self.base, user, device_id=device_id, config=config)
        self.clients.append(c)
        return c

    def passed_check(self, name):
        self.passed.append(name)
        print(f"PASS {name}")


def find(events, cls=None, pred=lambda e: True):
    return [e for e in events if (cls is None or isinstance(e, cls)) and pred(e)]


async def sync_until(client, pred, what, timeout=5.0, sync_filter=None):
    """Syncs (long-poll) until pred(response) is true; returns that response."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise CheckFailed(f"timed out syncing for {what}")
        r = await client.sync(timeout=int(min(left, 2.0) * 1000), sync_filter=sync_filter)
        ok_type(r, NR.SyncResponse, f"sync ({what})")
        if pred(r):
            return r


def timeline(resp, room_id):
    info = resp.rooms.join.get(room_id)
    return info.timeline.events if info else []


async def run(h):
    await h.start_server()
    await h.ctl("POST", "/_test/users", {"localpart": "alice", "password": "alice-pw", "displayname": "Alice"})
    await h.ctl("POST", "/_test/users", {"localpart": "stargazer", "password": "bot-pw", "displayname": "Star"})

    # (a) login, whoami, GET /login
    alice = h.client(ALICE, "ALICEPHONE")
    info = ok_type(await alice.login_info(), NR.LoginInfoResponse, "(a) GET /login")
    check("m.login.password" in info.flows, "(a) m.login.password offered")
    r = ok_type(await alice.login("alice-pw", device_name="Alice's phone"), NR.LoginResponse, "(a) login")
    check(r.user_id == ALICE and r.device_id == "ALICEPHONE" and r.access_token,
          "(a) login keeps the requested device_id and returns a token")
    w = ok_type(await alice.whoami(), NR.WhoamiResponse, "(a) whoami")
    check(w.user_id == ALICE, "(a) whoami user_id")
    async with h.http.get(f"{h.base}/_matrix/client/v3/account/whoami",     # nio 0.20 drops device_id
                          headers={"Authorization": f"Bearer {alice.access_token}"}) as resp:
        check((await resp.json()).get("device_id") == "ALICEPHONE", "(a) whoami device_id")
    bad = h.client(ALICE, "X")
    r = await bad.login("wrong")
    check(isinstance(r, NR.LoginError) and r.status_code == "M_FORBIDDEN", "(a) wrong password -> M_FORBIDDEN")
    bot = h.client(BOT, "BOTDEVICE")
    ok_type(await bot.login("bot-pw"), NR.LoginResponse, "(a) bot login")
    h.passed_check("(a) login (m.login.password, m.id.user, device_id kept), GET /login, whoami")

    # (b) filters
    fr = ok_type(await bot.upload_filter(room={"timeline": {"limit": 20, "not_types": ["m.room.redaction"]},
                                               "state": {"lazy_load_members": False}},
                                         presence={"types": ["m.presence"]}),
                 NR.UploadFilterResponse, "(b) POST /user/{id}/filter")
    bot_filter = fr.filter_id
    async with h.http.get(f"{h.base}/_matrix/client/v3/user/{BOT}/filter/{bot_filter}",
                          headers={"Authorization": f"Bearer {bot.access_token}"}) as resp:
        got = await resp.json()
    check(resp.status == 200 and got["room"]["timeline"]["limit"] == 20, "(b) GET the filter back")
    h.passed_check("(b) filters: upload and download")

    # initial syncs
    ok_type(await alice.sync(timeout=0, full_state=True), NR.SyncResponse, "initial sync (alice)")
    ok_type(await bot.sync(timeout=0, sync_filter=bot_filter), NR.SyncResponse, "initial sync (bot)")

    # (c) a DM room with encryption; the bot gets an invite with stripped state and joins
    r = ok_type(await alice.room_create(name="Fidelity", invite=[BOT], is_direct=True,
                                        preset=nio.RoomPreset.trusted_private_chat,
                                        initial_state=[{"type": "m.room.encryption", "state_key": "",
                                                        "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]),
                NR.RoomCreateResponse, "(c) createRoom")
    room_id = r.room_id
    check(room_id.startswith("!") and room_id.endswith(":" + SERVER_NAME), "(c) room id !x:server")
    s = await sync_until(bot, lambda s: room_id in s.rooms.invite, "the invite", sync_filter=bot_filter)
    inv = s.rooms.invite[room_id].invite_state
    check(any(isinstance(e, nio.InviteMemberEvent) and e.state_key == BOT and e.membership == "invite"
              and e.content.get("is_direct") is True for e in inv),
          "(c) invite_state has the m.room.member invite with is_direct")
    check(any(isinstance(e, nio.InviteNameEvent) and e.name == "Fidelity" for e in inv),
          "(c) invite_state has m.room.name")
    # (nio keeps only member/name/alias invite events; m.room.encryption there is checked in protocol_test)
    ok_type(await bot.join(room_id), NR.JoinResponse, "(c) join")
    s = await sync_until(alice, lambda s: any(isinstance(e, nio.RoomMemberEvent) and e.state_key == BOT
                                              and e.membership == "join" for e in timeline(s, room_id)),
                         "the bot's join")
    room = alice.rooms[room_id]
    check(room.encrypted and room.name == "Fidelity" and BOT in room.users and ALICE in room.users,
          "(c) nio's room model: encrypted, named, both members")
    await sync_until(bot, lambda s: room_id in s.rooms.join, "the joined room", sync_filter=bot_filter)
    check(bot.rooms[room_id].encrypted, "(c) the bot sees the room as encrypted")
    jr = ok_type(await bot.joined_rooms(), NR.JoinedRoomsResponse, "(c) joined_rooms")
    check(room_id in jr.rooms, "(c) joined_rooms lists the room")
    jm = ok_type(await bot.joined_members(room_id), NR.JoinedMembersResponse, "(c) joined_members")
    check({m.user_id: m.display_name for m in jm.members} == {ALICE: "Alice", BOT: "Star"},
          "(c) joined_members with display names")
    h.passed_check("(c) createRoom (preset, is_direct, invite, encryption), invite_state, join, joined_*")

    # (d) send with txn ids: the same txn id twice from the same device -> one event
    r1 = ok_type(await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "hello bot"},
                                       tx_id="fid-txn-1"), NR.RoomSendResponse, "(d) send")
    r2 = ok_type(await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "hello bot"},
                                       tx_id="fid-txn-1"), NR.RoomSendResponse, "(d) resend same txn")
    check(r1.event_id == r2.event_id and r1.event_id.startswith("$"), "(d) same txn id -> same event id")
    evs = [e for e in (await h.room(room_id))["events"] if e["content"].get("body") == "hello bot"]
    check(len(evs) == 1 and evs[0]["txn_id"] == "fid-txn-1", "(d) exactly one event stored")
    s = await sync_until(bot, lambda s: any(e.event_id == r1.event_id for e in timeline(s, room_id)),
                         "the message", sync_filter=bot_filter)
    msg = [e for e in timeline(s, room_id) if e.event_id == r1.event_id][0]
    check(isinstance(msg, nio.RoomMessageText) and msg.body == "hello bot" and msg.sender == ALICE,
          "(d) the bot receives an m.text RoomMessageText")
    check(msg.transaction_id is None, "(d) no transaction_id for another user's event")
    s = await sync_until(alice, lambda s: any(e.event_id == r1.event_id for e in timeline(s, room_id)),
                         "own message")
    own = [e for e in timeline(s, room_id) if e.event_id == r1.event_id][0]
    check(own.transaction_id == "fid-txn-1", "(d) the sender's device sees unsigned.transaction_id")
    h.passed_check("(d) PUT /send with txn ids: idempotent per device, transaction_id echoed to the sender")

    # (e) long poll: a waiting /sync returns promptly when an event arrives
    task = asyncio.ensure_future(bot.sync(timeout=15000, sync_filter=bot_filter))
    await asyncio.sleep(0.4)
    check(not task.done(), "(e) the long poll waits while nothing happens")
    t0 = time.monotonic()
    r3 = ok_type(await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "wake up"}),
                 NR.RoomSendResponse, "(e) send")
    s = ok_type(await asyncio.wait_for(task, 5), NR.SyncResponse, "(e) long-poll sync")
    latency = time.monotonic() - t0
    check(any(e.event_id == r3.event_id for e in timeline(s, room_id)), "(e) the long poll returned the event")
    check(latency < 1.0, f"(e) woken within 1 s ({latency:.3f} s)")
    t0 = time.monotonic()
    s = ok_type(await bot.sync(timeout=500, sync_filter=bot_filter), NR.SyncResponse, "(e) idle sync")
    check(time.monotonic() - t0 >= 0.45 and not s.rooms.join, "(e) an idle long poll waits out its timeout, empty")
    h.passed_check(f"(e) /sync long poll (woken in {latency * 1000:.0f} ms, empty after timeout)")

    # (f) history via /messages, paginating back to the start
    ids = []
    for i in range(7):
        r = ok_type(await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": f"h{i}"}),
                    NR.RoomSendResponse, "(f) send")
        ids.append(r.event_id)
    ok_type(await alice.sync(timeout=0), NR.SyncResponse, "(f) sync")
    token, seen, pages = alice.next_batch, [], 0
    while token and pages < 20:
        m = ok_type(await alice.room_messages(room_id, token, limit=4,
                                              message_filter={"types": ["m.room.message"]}),
                    NR.RoomMessagesResponse, "(f) /messages dir=b")
        seen.extend(e.event_id for e in m.chunk)
        check(all(isinstance(e, nio.RoomMessageText) for e in m.chunk), "(f) filter types=[m.room.message]")
        token, pages = m.end, pages + 1
    check(pages < 20 and seen[:7] == list(reversed(ids)) and r1.event_id in seen and len(seen) == len(set(seen)),
          "(f) newest first, every message once, `end` omitted at the start of the room")
    fwd = ok_type(await alice.room_messages(room_id, alice.next_batch, direction=nio.MessageDirection.back,
                                            limit=3), NR.RoomMessagesResponse, "(f) /messages")
    check(len(fwd.chunk) == 3 and fwd.end, "(f) limit honoured, end given when more exist")
    h.passed_check(f"(f) /messages pagination ({pages} pages) with a RoomEventFilter")

    # (g) limited timeline: more than the filter's limit since the token
    ok_type(await bot.sync(timeout=0, sync_filter=bot_filter), NR.SyncResponse, "(g) catch up")
    for i in range(6):
        await h.ctl("POST", f"/_test/rooms/{room_id}/send",
                    {"sender": ALICE, "content": {"msgtype": "m.text", "body": f"burst {i}"}})
    s = ok_type(await bot.sync(timeout=0, sync_filter={"room": {"timeline": {"limit": 2}}}),
                NR.SyncResponse, "(g) sync limit 2")
    tl = s.rooms.join[room_id].timeline
    check(tl.limited and len(tl.events) == 2 and tl.prev_batch and
          [e.body for e in tl.events] == ["burst 4", "burst 5"], "(g) limited: true with the 2 newest and prev_batch")
    gap = ok_type(await bot.room_messages(room_id, tl.prev_batch, limit=4), NR.RoomMessagesResponse,
                  "(g) fill the gap")
    check([e.body for e in gap.chunk] == ["burst 3", "burst 2", "burst 1", "burst 0"],
          "(g) /messages from prev_batch returns the gap")
    h.passed_check("(g) limited timeline + prev_batch gap filling")

    # (h) media: upload, config, download
    cfg = ok_type(await alice.content_repository_config(), NR.ContentRepositoryConfigResponse, "(h) media config")
    check(cfg.upload_size == 65536, "(h) m.upload.size")
    data = bytes(range(256)) * 16
    up, _ = await alice.upload(io.BytesIO(data), content_type="text/plain", filename="notes.txt",
                               filesize=len(data))
    ok_type(up, NR.UploadResponse, "(h) upload")
    check(up.content_uri.startswith(f"mxc://{SERVER_NAME}/"), "(h) content_uri is mxc://server/id")
    dl = ok_type(await bot.download(up.content_uri), NR.DownloadResponse, "(h) download")
    check(dl.body == data and dl.content_type == "text/plain" and dl.filename == "notes.txt",
          "(h) the bytes, content type and file name come back")
    big, _ = await alice.upload(io.BytesIO(b"x" * 70000), content_type="application/octet-stream",
                                filename="big.bin", filesize=70000)
    check(isinstance(big, NR.UploadError) and big.status_code == "M_TOO_LARGE", "(h) over the limit -> M_TOO_LARGE")
    fm = ok_type(await alice.room_send(room_id, "m.room.message",
                                       {"msgtype": "m.file", "body": "notes.txt", "url": up.content_uri,
                                        "info": {"mimetype": "text/plain", "size": len(data)}}),
                 NR.RoomSendResponse, "(h) m.file message")
    s = await sync_until(bot, lambda s: any(e.event_id == fm.event_id for e in timeline(s, room_id)),
                         "the file message", sync_filter=bot_filter)
    f = [e for e in timeline(s, room_id) if e.event_id == fm.event_id][0]
    check(isinstance(f, nio.RoomMessageFile) and f.url == up.content_uri, "(h) RoomMessageFile with the mxc url")
    h.passed_check("(h) media upload / download / config, M_TOO_LARGE")

    # (i) relations: reply with mentions, reaction, edit; content untouched
    reply = ok_type(await bot.room_send(room_id, "m.room.message", {
        "msgtype": "m.text", "body": "> <@alice> hello bot\n\nhi Alice",
        "m.relates_to": {"m.in_reply_to": {"event_id": r1.event_id}},
        "m.mentions": {"user_ids": [ALICE]}}), NR.RoomSendResponse, "(i) reply")
    react = ok_type(await alice.room_send(room_id, "m.reaction", {
        "m.relates_to": {"rel_type": "m.annotation", "event_id": reply.event_id, "key": "👍"}}),
        NR.RoomSendResponse, "(i) reaction")
    dup = await alice.room_send(room_id, "m.reaction", {
        "m.relates_to": {"rel_type": "m.annotation", "event_id": reply.event_id, "key": "👍"}})
    check(isinstance(dup, NR.RoomSendError) and dup.status_code == "M_DUPLICATE_ANNOTATION",
          "(i) the same reaction twice -> M_DUPLICATE_ANNOTATION")
    edit = ok_type(await bot.room_send(room_id, "m.room.message", {
        "msgtype": "m.text", "body": "* hi Alice!",
        "m.new_content": {"msgtype": "m.text", "body": "hi Alice!"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": reply.event_id}}), NR.RoomSendResponse, "(i) edit")
    s = await sync_until(alice, lambda s: any(e.event_id == edit.event_id for e in timeline(s, room_id)),
                         "reply, reaction and edit")
    by_id = {e.event_id: e for e in timeline(s, room_id)}
    rp, rc, ed = by_id.get(reply.event_id), by_id.get(react.event_id), by_id.get(edit.event_id)
    check(isinstance(rp, nio.RoomMessageText) and
          rp.source["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == r1.event_id and
          rp.source["content"]["m.mentions"] == {"user_ids": [ALICE]}, "(i) reply and m.mentions round-trip")
    check(rc is not None and rc.source["type"] == "m.reaction" and
          rc.source["content"]["m.relates_to"] == {"rel_type": "m.annotation", "event_id": reply.event_id,
                                                   "key": "👍"}, "(i) reaction round-trips")
    check(isinstance(ed, nio.RoomMessageText) and ed.source["content"]["m.new_content"]["body"] == "hi Alice!" and
          ed.source["content"]["m.relates_to"]["rel_type"] == "m.replace", "(i) edit round-trips")
    ev = ok_type(await alice.room_get_event(room_id, reply.event_id), NR.RoomGetEventResponse, "(i) GET event")
    check(ev.event.event_id == reply.event_id, "(i) GET /rooms/{id}/event/{eventId}")
    ctx = ok_type(await alice.room_context(room_id, react.event_id, limit=2), NR.RoomContextResponse, "(i) context")
    check(ctx.event.event_id == react.event_id and ctx.events_before[0].event_id == reply.event_id and
          ctx.events_after and ctx.events_after[0].event_id == edit.event_id, "(i) /context before and after")
    h.passed_check("(i) replies, m.mentions, reactions (annotations), edits (m.replace), /event, /context")

    # (j) typing, (k) receipts and read markers, seen through nio's sync
    ok_type(await alice.room_typing(room_id, True, timeout=5000), NR.RoomTypingResponse, "(j) typing")
    s = await sync_until(bot, lambda s: room_id in s.rooms.join and any(
        isinstance(e, nio.TypingNoticeEvent) and ALICE in e.users for e in s.rooms.join[room_id].ephemeral),
        "the typing notice", sync_filter=bot_filter)
    log = (await h.room(room_id))["typing_log"]
    check(log[-1]["user_id"] == ALICE and log[-1]["typing"] and log[-1]["timeout"] == 5000,
          "(j) typing recorded with its timeout")
    ok_type(await alice.room_typing(room_id, False), NR.RoomTypingResponse, "(j) stop typing")
    await sync_until(bot, lambda s: room_id in s.rooms.join and any(
        isinstance(e, nio.TypingNoticeEvent) and not e.users for e in s.rooms.join[room_id].ephemeral),
        "typing stopped", sync_filter=bot_filter)
    h.passed_check("(j) typing notifications (m.typing in ephemeral)")
    ok_type(await bot.update_receipt_marker(room_id, edit.event_id), NR.UpdateReceiptMarkerResponse, "(k) receipt")
    ok_type(await bot.room_read_markers(room_id, edit.event_id, edit.event_id), NR.RoomReadMarkersResponse,
            "(k) read markers")
    s = await sync_until(alice, lambda s: room_id in s.rooms.join and any(
        isinstance(e, nio.ReceiptEvent) and any(rc.user_id == BOT and rc.event_id == edit.event_id
                                                for rc in e.receipts) for e in s.rooms.join[room_id].ephemeral),
        "the bot's read receipt")
    st = await h.room(room_id)
    check(any(r["user_id"] == BOT and r["type"] == "m.read" and r["event_id"] == edit.event_id
              for r in st["receipts"]) and st["account_data"][BOT]["m.fully_read"]["event_id"] == edit.event_id,
          "(k) m.read receipt and m.fully_read marker stored")
    h.passed_check("(k) receipts (m.receipt in ephemeral) and read markers")

    # (l) presence, (m) profile
    ok_type(await alice.set_presence("unavailable", "testing things"), NR.PresenceSetResponse, "(l) set presence")
    p = ok_type(await bot.get_presence(ALICE), NR.PresenceGetResponse, "(l) get presence")
    check(p.presence == "unavailable" and p.status_msg == "testing things", "(l) presence and status_msg")
    s = await sync_until(bot, lambda s: any(e.user_id == ALICE and e.presence == "unavailable"
                                            for e in s.presence_events), "alice's presence", sync_filter=bot_filter)
    h.passed_check("(l) presence PUT/GET and m.presence in /sync")
    ok_type(await alice.set_displayname("Alice A."), NR.ProfileSetDisplayNameResponse, "(m) set displayname")
    d = ok_type(await bot.get_displayname(ALICE), NR.ProfileGetDisplayNameResponse, "(m) get displayname")
    prof = ok_type(await bot.get_profile(ALICE), NR.ProfileGetResponse, "(m) get profile")
    check(d.displayname == "Alice A." and prof.displayname == "Alice A.", "(m) the new display name")
    await sync_until(bot, lambda s: bot.rooms[room_id].user_name(ALICE) == "Alice A.", "the member update",
                     sync_filter=bot_filter)
    h.passed_check("(m) profile: displayname PUT/GET, propagated as an m.room.member update")

    # (n) state
    ok_type(await alice.room_put_state(room_id, "m.room.name", {"name": "Renamed"}), NR.RoomPutStateResponse,
            "(n) PUT state")
    enc = ok_type(await bot.room_get_state_event(room_id, "m.room.encryption"), NR.RoomGetStateEventResponse,
                  "(n) GET state event")
    check(enc.content.get("algorithm") == "m.megolm.v1.aes-sha2", "(n) m.room.encryption content")
    full = ok_type(await bot.room_get_state(room_id), NR.RoomGetStateResponse, "(n) GET state")
    check(any(e["type"] == "m.room.name" and e["content"]["name"] == "Renamed" for e in full.events),
          "(n) the full state has the new name")
    pl = ok_type(await bot.room_get_state_event(room_id, "m.room.power_levels"), NR.RoomGetStateEventResponse,
                 "(n) power levels")
    check(pl.content["users"].get(BOT) == 100 and pl.content["users"].get(ALICE) == 100,
          "(n) trusted_private_chat gives the invitee the creator's power level")
    other = (await h.ctl("POST", "/_test/rooms", {"creator": ALICE, "members": [BOT], "name": "plain"}))["room_id"]
    denied = await bot.room_put_state(other, "m.room.name", {"name": "mine now"})
    check(isinstance(denied, NR.RoomPutStateError) and denied.status_code == "M_FORBIDDEN",
          "(n) m.room.name at power level 0 (needs 50) -> M_FORBIDDEN")
    h.passed_check("(n) room state GET/PUT, power levels enforced")

    # (o) redaction
    rr = ok_type(await alice.room_redact(room_id, react.event_id, reason="oops"), NR.RoomRedactResponse, "(o) redact")
    s = await sync_until(bot, lambda s: any(isinstance(e, nio.RedactionEvent) and e.redacts == react.event_id
                                            for e in timeline(s, room_id)), "the redaction", sync_filter=None)
    ge = ok_type(await bot.room_get_event(room_id, react.event_id), NR.RoomGetEventResponse, "(o) redacted event")
    check(isinstance(ge.event, nio.RedactedEvent) and ge.event.reason == "oops" and ge.event.redacter == ALICE,
          "(o) the event comes back redacted with redacted_because")
    check(rr.event_id.startswith("$"), "(o) redaction event id")
    h.passed_check("(o) redactions")

    # (p) unknown token
    await h.ctl("POST", "/_test/tokens/revoke", {"access_token": bot.access_token})
    we = await bot.whoami()
    check(isinstance(we, NR.WhoamiError) and we.status_code == "M_UNKNOWN_TOKEN" and we.soft_logout is False,
          "(p) revoked token -> M_UNKNOWN_TOKEN, soft_logout false")
    se = await bot.sync(timeout=0, sync_filter=bot_filter)
    check(isinstance(se, NR.SyncError) and se.status_code == "M_UNKNOWN_TOKEN", "(p) /sync -> M_UNKNOWN_TOKEN")
    ok_type(await bot.login("bot-pw"), NR.LoginResponse, "(p) log in again")
    check(bot.device_id == "BOTDEVICE", "(p) same device id after re-login")
    h.passed_check("(p) M_UNKNOWN_TOKEN (soft_logout false) and re-login")

    # (q) 429 M_LIMIT_EXCEEDED with retry_after_ms: nio waits and retries by itself
    mark = (await h.records())["next"]
    await h.ctl("POST", "/_test/force", {"path": "/send/", "user": ALICE, "count": 1, "status": 429,
                                         "retry_after_ms": 300})
    t0 = time.monotonic()
    rq = ok_type(await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "after 429"}),
                 NR.RoomSendResponse, "(q) send through a 429")
    took = time.monotonic() - t0
    recs = [r for r in (await h.records(mark, "/send/"))["records"]]
    check([r["status"] for r in recs] == [429, 200] and recs[0]["path"] == recs[1]["path"] and took >= 0.3,
          f"(q) nio honoured retry_after_ms=300 ({took:.2f} s) and retried the same txn path")
    strict = h.client(ALICE, "ALICELAPTOP", max_limit_exceeded=0)
    ok_type(await strict.login("alice-pw"), NR.LoginResponse, "(q) second device")
    await h.ctl("POST", "/_test/force", {"path": "/send/", "user": ALICE, "count": 1, "status": 429,
                                         "retry_after_ms": 1500})
    e429 = await strict.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "nope"})
    check(isinstance(e429, NR.RoomSendError) and e429.status_code == "M_LIMIT_EXCEEDED" and
          e429.retry_after_ms == 1500, "(q) the ErrorResponse carries M_LIMIT_EXCEEDED and retry_after_ms")
    recs = (await h.records(mark, "/send/"))["records"]
    check(any(r["status"] == 429 and r.get("forced") for r in recs), "(q) the 429s are recorded as forced")
    h.passed_check("(q) 429 M_LIMIT_EXCEEDED + retry_after_ms (nio retries after the delay)")

    # (r) the connection dropped after the server did the work: nio retries the same txn -> no duplicate
    mark = (await h.records())["next"]
    await h.ctl("POST", "/_test/force", {"path": "/send/", "user": ALICE, "count": 1, "drop": "after"})
    rd = ok_type(await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "dropped once"}),
                 NR.RoomSendResponse, "(r) send through a dropped connection")
    recs = (await h.records(mark, "/send/"))["records"]
    stored = [e for e in (await h.room(room_id))["events"] if e["content"].get("body") == "dropped once"]
    check(len(recs) == 2 and recs[0].get("dropped") == "after" and recs[1].get("txn_dedup") and
          len(stored) == 1 and stored[0]["event_id"] == rd.event_id,
          "(r) the retry with the same txn id got the first event id; one event stored")
    # same txn id from another device is a different transaction
    ok_type(await strict.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "other device"},
                                   tx_id=stored[0]["txn_id"]), NR.RoomSendResponse, "(r) other device")
    check(len([e for e in (await h.room(room_id))["events"] if e.get("txn_id") == stored[0]["txn_id"]]) == 2,
          "(r) the same txn id from another device creates a new event")
    await h.ctl("POST", "/_test/force", {"path": "/send/", "user": ALICE, "count": 1, "hold_s": 0.5})
    t0 = time.monotonic()
    rh = ok_type(await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "held"}),
                 NR.RoomSendResponse, "(r) held send")
    check(time.monotonic() - t0 >= 0.5, "(r) the answer was held back 0.5 s")
    check(any(e["event_id"] == rh.event_id for e in (await h.room(room_id))["events"]), "(r) held send stored")
    h.passed_check("(r) forced drop-after-work and hold: txn-id retries are deduplicated per device")

    # (s) leave, and logout
    ok_type(await bot.room_leave(room_id), NR.RoomLeaveResponse, "(s) leave")
    await sync_until(bot, lambda s: room_id in s.rooms.leave, "the left room", sync_filter=bot_filter)
    denied = await bot.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "x"})
    check(isinstance(denied, NR.RoomSendError) and denied.status_code == "M_FORBIDDEN", "(s) non-member send -> 403")
    await sync_until(alice, lambda s: any(isinstance(e, nio.RoomMemberEvent) and e.state_key == BOT
                                          and e.membership == "leave" for e in timeline(s, room_id)), "bot left")
    old_token = alice.access_token
    ok_type(await alice.logout(), NR.LogoutResponse, "(s) logout")
    st = await h.state()
    a = [u for u in st["users"] if u["user_id"] == ALICE][0]
    check("ALICEPHONE" not in a["devices"] and "ALICELAPTOP" in a["devices"], "(s) logout removed the device")
    async with h.http.get(f"{h.base}/_matrix/client/v3/account/whoami",
                          headers={"Authorization": f"Bearer {old_token}"}) as resp:
        check(resp.status == 401 and (await resp.json())["errcode"] == "M_UNKNOWN_TOKEN",
              "(s) the logged-out token is unknown")
    h.passed_check("(s) leave (rooms.leave in /sync, then 403 on send) and logout")

    if not os.environ.get("FIDELITY_R0"):
        async with h.http.get(f"{h.base}/_matrix/client/r0/account/whoami",
                              params={"access_token": strict.access_token}) as resp:
            check(resp.status == 200, "r0 prefix accepted as an alias of v3")


async def main():
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("nio").setLevel(logging.DEBUG if os.environ.get("FIDELITY_DEBUG") else logging.CRITICAL)
    h = Harness()
    t0 = time.monotonic()
    try:
        await asyncio.wait_for(run(h), OVERALL_TIMEOUT_S)
    except CheckFailed as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    except asyncio.TimeoutError:
        print(f"FAIL: the test did not finish within {OVERALL_TIMEOUT_S} s", file=sys.stderr)
        return 1
    except Exception as e:
        import traceback
        traceback.print_exc()
        print(f"FAIL: unexpected {e!r}", file=sys.stderr)
        return 1
    finally:
        await h.stop()
    print(f"OK: {len(h.passed)} fidelity checks passed in {time.monotonic() - t0:.1f} s "
          f"(matrix-nio against homeserver.py)")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
