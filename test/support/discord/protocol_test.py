#!/usr/bin/python3
"""Self-test of discord_server.py with a raw client (aiohttp only): the gateway
close codes, resume/replay, zlib-stream framing, sharding, intents, and the
REST error shapes that discord.py's happy path (fidelity_test.py) never hits.

  /usr/bin/python3 test/support/discord/protocol_test.py [-v]

Exit status 0 on success, 1 with the failed check otherwise.
"""

import asyncio
import json
import os
import sys
import time
import zlib

import aiohttp

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "discord_server.py")
TOKEN = "protocol.TEST-token"
VERBOSE = "-v" in sys.argv
ZLIB_SUFFIX = b"\x00\x00\xff\xff"
INTENTS = (1 << 0) | (1 << 9) | (1 << 10) | (1 << 12) | (1 << 15)


class CheckFailed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise CheckFailed(what)
    if VERBOSE:
        print(f"  ok: {what}")


class GW:
    """A minimal gateway client."""

    def __init__(self, t, ws, zlib_stream):
        self.t = t
        self.ws = ws
        self.inflator = zlib.decompressobj() if zlib_stream else None
        self.buf = bytearray()

    async def recv(self, timeout=3.0):
        while True:
            msg = await asyncio.wait_for(self.ws.receive(), timeout)
            if msg.type == aiohttp.WSMsgType.TEXT:
                check(self.inflator is None, "text frames only without compression")
                return json.loads(msg.data)
            if msg.type == aiohttp.WSMsgType.BINARY:
                check(self.inflator is not None, "binary frames only with zlib-stream")
                self.buf.extend(msg.data)
                if len(msg.data) < 4 or msg.data[-4:] != ZLIB_SUFFIX:
                    continue
                out = self.inflator.decompress(bytes(self.buf))
                self.buf.clear()
                return json.loads(out.decode("utf-8"))
            return {"closed": self.ws.close_code, "type": str(msg.type)}

    async def recv_until(self, pred, timeout=3.0):
        deadline = time.monotonic() + timeout
        while True:
            p = await self.recv(max(0.01, deadline - time.monotonic()))
            if "closed" in p or pred(p):
                return p

    async def send(self, obj):
        await self.ws.send_str(obj if isinstance(obj, str) else json.dumps(obj))

    async def closed_with(self, timeout=3.0):
        deadline = time.monotonic() + timeout
        while True:
            p = await self.recv(max(0.01, deadline - time.monotonic()))
            if "closed" in p:
                return p["closed"]

    async def identify(self, intents=INTENTS, shard=None, token=TOKEN):
        d = {"token": token, "intents": intents,
             "properties": {"os": "linux", "browser": "protocol_test", "device": "protocol_test"}}
        if shard is not None:
            d["shard"] = shard
        await self.send({"op": 2, "d": d})


class T:
    def __init__(self):
        self.proc = None

    async def start(self):
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, SERVER, "--port", "0", "--token", TOKEN, "--guilds", "2",
            "--identify-window-s", "0", stdout=asyncio.subprocess.PIPE)
        line = (await asyncio.wait_for(self.proc.stdout.readline(), 10)).decode()
        check(line.startswith("READY port="), "server prints READY port=<n>")
        self.port = int(line.strip().split("=")[1])
        self.base = f"http://127.0.0.1:{self.port}"
        self.http = aiohttp.ClientSession()
        self.auth = {"Authorization": f"Bot {TOKEN}"}

    async def stop(self):
        await self.http.close()
        if self.proc and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()

    async def ctl(self, method, path, body=None):
        async with self.http.request(method, self.base + path, json=body) as r:
            return await r.json(content_type=None)

    async def api(self, method, path, **kw):
        headers = dict(self.auth)
        headers.update(kw.pop("headers", {}))
        async with self.http.request(method, f"{self.base}/api/v10{path}", headers=headers, **kw) as r:
            text = await r.text()
            try:
                body = json.loads(text) if text else None
            except ValueError:
                body = text
            return r.status, body, r.headers

    async def gw(self, zlib_stream=False, path="/gateway", query=None, hello=True):
        q = query or ("v=10&encoding=json" + ("&compress=zlib-stream" if zlib_stream else ""))
        ws = await self.http.ws_connect(f"ws://127.0.0.1:{self.port}{path}?{q}", autoclose=False)
        g = GW(self, ws, zlib_stream)
        if hello:
            h = await g.recv()
            check(h.get("op") == 10 and h["d"]["heartbeat_interval"] > 0 and h["s"] is None and h["t"] is None,
                  "Hello (op 10) first, with heartbeat_interval, s/t null")
        return g

    async def ready(self, g, **kw):
        await g.identify(**kw)
        r = await g.recv()
        check(r.get("op") == 0 and r.get("t") == "READY" and r.get("s") == 1, "READY is dispatch seq 1")
        return r


async def gateway_checks(t):
    st = await t.ctl("GET", "/_test/state")
    g0, g1 = st["guilds"][0], st["guilds"][1]
    c0 = g0["channels"][0]["id"]
    c1 = g1["channels"][0]["id"]

    # zlib-stream framing and heartbeats
    g = await t.gw(zlib_stream=True)
    await g.send({"op": 1, "d": None})
    check((await g.recv())["op"] == 11, "heartbeat -> op 11 ACK (zlib-stream, shared inflate context)")
    r = await t.ready(g)
    d = r["d"]
    check(d["v"] == 10 and d["user"]["bot"] is True and d["session_id"] and
          d["resume_gateway_url"].endswith("/gateway-resume") and "shard" not in d,
          "READY: v, user.bot, session_id, resume_gateway_url; no shard when none was sent")
    check(all(x["unavailable"] for x in d["guilds"]) and len(d["guilds"]) == 2, "READY guilds are unavailable stubs")
    gc = [await g.recv(), await g.recv()]
    check([x["t"] for x in gc] == ["GUILD_CREATE"] * 2 and [x["s"] for x in gc] == [2, 3],
          "GUILD_CREATE per guild, sequence numbers 2, 3")
    check(all("guild_id" not in ch for ch in gc[0]["d"]["channels"]), "GUILD_CREATE channels omit guild_id")
    await g.ws.close()
    # raw frames split across several websocket messages still end with the suffix
    await t.ctl("POST", "/_test/config", {"zlib_chunk_size": 7})
    g = await t.gw(zlib_stream=True)
    await g.send({"op": 1, "d": 0})
    check((await g.recv())["op"] == 11, "messages split over several binary frames are reassembled")
    await g.ws.close()
    await t.ctl("POST", "/_test/config", {"zlib_chunk_size": 0})

    # close codes
    async def expect_close(setup, code, what, **gwkw):
        g = await t.gw(**gwkw)
        await setup(g)
        got = await g.closed_with()
        check(got == code, f"{what} -> close {code} (got {got})")

    await expect_close(lambda g: g.identify(token="wrong"), 4004, "bad token")
    await expect_close(lambda g: g.identify(shard=[2, 2]), 4010, "shard id >= count")
    await expect_close(lambda g: g.identify(shard=[0, 0]), 4010, "zero shards")
    await expect_close(lambda g: g.identify(intents=1 << 30), 4013, "undefined intent bit")
    await expect_close(lambda g: g.send({"op": 2, "d": {"token": TOKEN, "properties": {}}}), 4013, "missing intents")
    await expect_close(lambda g: g.send({"op": 3, "d": {"status": "online", "activities": [], "afk": False,
                                                        "since": None}}), 4003, "presence before identify")
    await expect_close(lambda g: g.send("{not json"), 4002, "invalid JSON")
    await expect_close(lambda g: g.send({"op": 99, "d": None}), 4001, "unknown opcode")
    await expect_close(lambda g: g.send({"op": 1, "d": "x" * 5000}), 4002, "payload over 4096 bytes")

    async def twice(g):
        await t.ready(g)
        await g.identify()
    await expect_close(twice, 4005, "second identify")
    await t.ctl("POST", "/_test/config", {"privileged_allowed": 0})
    await expect_close(lambda g: g.identify(), 4014, "message content intent not enabled")
    await t.ctl("POST", "/_test/config", {"privileged_allowed": (1 << 1) | (1 << 8) | (1 << 15)})
    await t.ctl("POST", "/_test/config", {"max_guilds_per_shard": 1})
    await expect_close(lambda g: g.identify(shard=[0, 1]), 4011, "2 guilds on one shard with max 1")
    await t.ctl("POST", "/_test/config", {"max_guilds_per_shard": 2500})
    await t.ctl("POST", "/_test/config", {"gateway_limit": 5})

    async def flood(g):
        for _ in range(6):
            await g.send({"op": 1, "d": None})
    await expect_close(flood, 4008, "6 commands with a limit of 5")
    await t.ctl("POST", "/_test/config", {"gateway_limit": 120})
    await t.ctl("POST", "/_test/config", {"hello_delay_ms": 500})
    await expect_close(lambda g: g.identify(), 4003, "identify before hello", hello=False)
    await t.ctl("POST", "/_test/config", {"hello_delay_ms": 0})
    g = await t.gw(hello=False, query="v=5&encoding=json")
    check(await g.closed_with() == 4012, "v=5 -> close 4012")

    # missing heartbeats -> closed; ACKs switched off -> no op 11
    await t.ctl("POST", "/_test/config", {"heartbeat_ms": 200})
    g = await t.gw()
    got = await g.closed_with(3)
    check(got == 4000, f"no heartbeat within interval*1.5 -> closed with a resumable code ({got})")
    await t.ctl("POST", "/_test/config", {"heartbeat_ms": 41250})
    await t.ctl("POST", "/_test/gateway/ack", {"enabled": False})
    g = await t.gw()
    await g.send({"op": 1, "d": None})
    try:
        p = await g.recv(0.5)
        check(False, f"no ACK expected, got {p}")
    except asyncio.TimeoutError:
        check(True, "ack disabled -> heartbeat not acknowledged (zombie)")
    await t.ctl("POST", "/_test/gateway/ack", {"enabled": True})
    await g.send({"op": 1, "d": None})
    check((await g.recv())["op"] == 11, "ack re-enabled")
    await g.ws.close()

    # identify concurrency: second identify on the same key within 5 s -> op 9
    a = await t.gw()
    await t.ready(a, shard=[0, 2])
    await t.ctl("POST", "/_test/config", {"identify_window_s": 5})
    b = await t.gw()
    await b.identify(shard=[0, 2])
    p = await b.recv()
    check(p["op"] == 9 and p["d"] is False, "max_concurrency: 2nd identify of key 0 within 5 s -> op 9 d:false")
    await t.ctl("POST", "/_test/config", {"identify_window_s": 0, "max_concurrency": 2})
    await t.ready(b, shard=[1, 2])
    await a.ws.close(code=1000)   # 1000: the sessions end (not resumable)
    await b.ws.close(code=1000)
    await t.ctl("POST", "/_test/config", {"max_concurrency": 1})

    # sharding + DMs + message content intent
    s0 = await t.gw()
    r0 = await t.ready(s0, shard=[0, 2], intents=INTENTS & ~(1 << 15))
    s1 = await t.gw()
    r1 = await t.ready(s1, shard=[1, 2])
    check(r0["d"]["shard"] == [0, 2] and [x["id"] for x in r0["d"]["guilds"]] == [g0["id"]],
          "shard [0,2] READY lists guild 0 only")
    check([x["id"] for x in r1["d"]["guilds"]] == [g1["id"]], "shard [1,2] READY lists guild 1 only")
    await s0.recv()
    await s1.recv()
    alice = {"id": "222222222222222222", "username": "alice"}
    res = await t.ctl("POST", "/_test/messages", {"channel_id": c0, "author": alice, "content": "secret words"})
    check(res["delivered_to"] == [r0["d"]["session_id"]], "guild 0 message only to shard 0")
    p = await s0.recv()
    check(p["t"] == "MESSAGE_CREATE" and p["d"]["content"] == "" and p["d"]["guild_id"] == g0["id"]
          and "member" in p["d"], "without MESSAGE_CONTENT the content is empty; guild_id and member present")
    bot_id = st["bot_user"]["id"]
    await t.ctl("POST", "/_test/messages", {"channel_id": c0, "author": alice, "content": f"hi <@{bot_id}>"})
    p = await s0.recv()
    check(p["d"]["content"] == f"hi <@{bot_id}>" and p["d"]["mentions"][0]["id"] == bot_id,
          "...but a message mentioning the bot keeps its content")
    dm = (await t.ctl("POST", "/_test/dm_channels", {"user": alice}))["channel"]
    res = await t.ctl("POST", "/_test/messages", {"channel_id": dm["id"], "author": alice, "content": "psst"})
    check(res["delivered_to"] == [r0["d"]["session_id"]], "DM goes to shard 0 only")
    p = await s0.recv()
    check(p["d"]["content"] == "psst" and "guild_id" not in p["d"], "DM content kept, no guild_id")
    res = await t.ctl("POST", "/_test/messages", {"channel_id": c1, "author": alice, "content": "to shard 1"})
    p = await s1.recv()
    check(p["d"]["content"] == "to shard 1" and p["s"] == 3, "shard 1 gets its guild's message with its own seq")

    # resume: client closes with 4000, misses two messages, resumes on resume_gateway_url
    sid = r1["d"]["session_id"]
    await s1.ws.close(code=4000)
    await asyncio.sleep(0.1)
    res = await t.ctl("POST", "/_test/messages", {"channel_id": c1, "author": alice, "content": "missed 1"})
    check(sid in res["queued_for"] and not res["delivered_to"], "message for a disconnected session is queued")
    await t.ctl("POST", "/_test/messages", {"channel_id": c1, "author": alice, "content": "missed 2"})
    g = await t.gw(path="/gateway-resume")
    await g.send({"op": 6, "d": {"token": TOKEN, "session_id": sid, "seq": 3}})
    a, b, c = await g.recv(), await g.recv(), await g.recv()
    check([a["d"]["content"], b["d"]["content"]] == ["missed 1", "missed 2"] and [a["s"], b["s"]] == [4, 5],
          "resume replays the missed dispatches in order with their seq")
    check(c["t"] == "RESUMED", "then RESUMED")
    g2 = await t.gw()
    await g2.send({"op": 6, "d": {"token": TOKEN, "session_id": sid, "seq": 99}})
    check(await g2.closed_with() == 4007, "resume with a seq beyond the session's -> 4007")
    await g.ws.close(code=1000)
    await asyncio.sleep(0.1)
    g3 = await t.gw()
    await g3.send({"op": 6, "d": {"token": TOKEN, "session_id": sid, "seq": 5}})
    p = await g3.recv()
    check(p["op"] == 9 and p["d"] is False, "after a client close 1000 the session is gone: resume -> op 9 d:false")
    await g3.ws.close()

    # server-side controls: op 7, op 9 true/false, close with code, raw frames
    await t.ctl("POST", "/_test/gateway/reconnect", {"session_id": r0["d"]["session_id"]})
    check((await s0.recv_until(lambda p: p.get("op") == 7))["op"] == 7, "control: op 7 sent")
    await t.ctl("POST", "/_test/gateway/invalid_session", {"session_id": r0["d"]["session_id"], "d": True})
    p = await s0.recv_until(lambda p: p.get("op") == 9)
    check(p["d"] is True, "control: op 9 d:true sent")
    await t.ctl("POST", "/_test/gateway/raw", {"session_id": r0["d"]["session_id"], "text": "{\"op\": 0, \"t\": \"SOMETHING_NEW\", \"s\": null, \"d\": {}}"})
    check((await s0.recv())["t"] == "SOMETHING_NEW", "control: raw frame sent")
    await t.ctl("POST", "/_test/gateway/close", {"session_id": r0["d"]["session_id"], "code": 4009})
    check(await s0.closed_with() == 4009, "control: close with a given code")

    # channel cache events, GUILD_DELETE, and re-identify after op 9 d:false
    g = await t.gw()
    r = await t.ready(g)
    await g.recv()
    await g.recv()
    await t.ctl("PATCH", f"/_test/channels/{c1}", {"name": "renamed"})
    p = await g.recv()
    check(p["t"] == "CHANNEL_UPDATE" and p["d"]["name"] == "renamed", "control: CHANNEL_UPDATE")
    extra = g1["channels"][1]["id"]
    await t.ctl("DELETE", f"/_test/channels/{extra}")
    p = await g.recv()
    check(p["t"] == "CHANNEL_DELETE" and p["d"]["id"] == extra, "control: CHANNEL_DELETE")
    s_, b_, _ = await t.api("GET", f"/channels/{extra}")
    check(s_ == 404, "deleted channel -> 404")
    await t.ctl("DELETE", f"/_test/guilds/{g1['id']}", {"unavailable": True})
    p = await g.recv()
    check(p["t"] == "GUILD_DELETE" and p["d"] == {"id": g1["id"], "unavailable": True}, "control: GUILD_DELETE outage")
    await t.ctl("POST", "/_test/gateway/invalid_session", {"session_id": r["d"]["session_id"], "d": False})
    p = await g.recv()
    check(p["op"] == 9 and p["d"] is False, "op 9 d:false")
    await g.identify()
    p = await g.recv()
    check(p.get("t") == "READY" and p["d"]["session_id"] != r["d"]["session_id"],
          "re-identify on the same connection after op 9 d:false -> new session")
    await g.ws.close()


async def rest_checks(t):
    st = await t.ctl("GET", "/_test/state")
    c0 = st["guilds"][0]["channels"][0]["id"]
    await t.ctl("POST", "/_test/config", {"channel_limit": 1000, "route_limit": 1000, "reaction_limit": 1000})
    s, b, h = await t.api("GET", f"/channels/{c0}", headers={"Authorization": "Bot nope"})
    check(s == 401 and b == {"message": "401: Unauthorized", "code": 0} and h["Content-Type"] == "application/json",
          "wrong token -> 401 JSON")
    s, b, _ = await t.api("GET", "/channels/1")
    check(s == 404 and b == {"message": "Unknown Channel", "code": 10003}, "unknown channel -> 404 / 10003")
    s, b, _ = await t.api("POST", f"/channels/{c0}/messages", data=b"x", headers={"Content-Type": "text/plain"})
    check(s == 400 and b["code"] == 50035, "wrong Content-Type -> 50035")
    s, m1, _ = await t.api("POST", f"/channels/{c0}/messages", json={"content": "first"})
    s, b, _ = await t.api("POST", f"/channels/{c0}/messages",
                          json={"content": "r", "message_reference": {"message_id": "1"}})
    check(s == 400 and "message_reference" in b["errors"], "reply to an unknown message -> 50035")
    s, b, _ = await t.api("POST", f"/channels/{c0}/messages",
                          json={"content": "r", "message_reference": {"message_id": "1", "fail_if_not_exists": False}})
    check(s == 200 and b["type"] == 0, "fail_if_not_exists:false -> plain message")
    s, b, _ = await t.api("POST", f"/channels/{c0}/messages",
                          json={"content": "@everyone look", "allowed_mentions": {"parse": []},
                                "message_reference": {"message_id": m1["id"]}})
    check(s == 200 and b["mention_everyone"] is False and b["type"] == 19
          and b["referenced_message"]["id"] == m1["id"], "allowed_mentions parse:[] -> no @everyone; reply type 19")
    s, b, _ = await t.api("POST", f"/channels/{c0}/messages", json={"content": "@everyone"})
    check(b["mention_everyone"] is True, "default allowed_mentions parses @everyone")
    s, b, _ = await t.api("POST", f"/channels/{c0}/messages",
                          json={"content": "x", "allowed_mentions": {"parse": ["users"], "users": ["1"]}})
    check(s == 400 and b["code"] == 50035, "parse users + users list -> 50035")
    s, b, _ = await t.api("POST", f"/channels/{c0}/messages", json={"content": "x", "nonce": "y" * 26})
    check(s == 400 and "nonce" in b["errors"], "nonce over 25 characters -> 50035")
    rows = [{"type": 1, "components": [{"type": 2, "style": 1, "custom_id": f"r{r}b{i}", "label": "x"}
                                       for i in range(5)]} for r in range(6)]
    s, b, _ = await t.api("POST", f"/channels/{c0}/messages", json={"content": "x", "components": rows})
    check(s == 400 and "components" in b["errors"], "6 action rows -> 50035")
    s, b, _ = await t.api("POST", f"/channels/{c0}/messages", json={"content": "x", "components": rows[:5]})
    check(s == 200 and len(b["components"]) == 5, "5x5 buttons accepted")
    s, b, _ = await t.api("PUT", f"/channels/{c0}/messages/{m1['id']}/reactions/thumbsup/@me")
    check(s == 404 and b["code"] == 10014, "emoji given by name -> 10014 Unknown Emoji")
    s, b, _ = await t.api("PUT", f"/channels/{c0}/messages/{m1['id']}/reactions/%E2%9C%85/@me")
    check(s == 204, "URL-encoded unicode emoji -> 204")
    s, b, _ = await t.api("GET", f"/channels/{c0}/messages?limit=101")
    check(s == 400 and b["code"] == 50035, "limit=101 -> 50035")
    s, b, _ = await t.api("GET", f"/channels/{c0}/messages?limit=2&after={m1['id']}")
    check(s == 200 and len(b) == 2 and int(b[0]["id"]) > int(b[1]["id"]) > int(m1["id"]),
          "after= returns the next messages, newest first")
    form = aiohttp.FormData(quote_fields=False)
    form.add_field("payload_json", json.dumps({"content": "f"}), content_type="application/json")
    form.add_field("upload", b"abc", filename="a.txt")
    s, b, _ = await t.api("POST", f"/channels/{c0}/messages", data=form)
    check(s == 400 and b["code"] == 50035, "file field not named files[n] -> 50035")

    # interactions: late and double callbacks
    alice = {"id": "222222222222222222", "username": "alice"}
    await t.ctl("POST", "/_test/config", {"interaction_deadline_s": 0.2})
    it = (await t.ctl("POST", "/_test/interactions", {"channel_id": c0, "message_id": m1["id"], "user": alice,
                                                      "custom_id": "x"}))["interaction"]
    await asyncio.sleep(0.3)
    s, b, _ = await t.api("POST", f"/interactions/{it['id']}/{it['token']}/callback", json={"type": 6}, headers={})
    check(s == 404 and b["code"] == 10062, "callback after the deadline -> 10062 Unknown interaction")
    await t.ctl("POST", "/_test/config", {"interaction_deadline_s": 3})
    it = (await t.ctl("POST", "/_test/interactions", {"channel_id": c0, "message_id": m1["id"], "user": alice,
                                                      "custom_id": "x"}))["interaction"]
    s, b, _ = await t.api("POST", f"/interactions/{it['id']}/{it['token']}/callback?with_response=true",
                          json={"type": 4, "data": {"content": "clicked"}})
    check(s == 200 and b["resource"]["message"]["content"] == "clicked", "type 4 callback creates a message")
    s, b, _ = await t.api("POST", f"/interactions/{it['id']}/{it['token']}/callback", json={"type": 6})
    check(s == 400 and b["code"] == 40060, "second callback -> 40060 already acknowledged")

    # forced responses: shared 429 (not an invalid request) and a non-JSON 502
    before = (await t.ctl("GET", "/_test/state"))["counters"].get("invalid_requests", 0)
    await t.ctl("POST", "/_test/force", {"match": "/typing", "status": 429, "scope": "shared", "retry_after": 0.5})
    s, b, h = await t.api("POST", f"/channels/{c0}/typing")
    check(s == 429 and h["X-RateLimit-Scope"] == "shared" and b["global"] is False, "forced shared 429")
    after = (await t.ctl("GET", "/_test/state"))["counters"].get("invalid_requests", 0)
    check(after == before, "shared-scope 429s are not counted as invalid requests")
    await t.ctl("POST", "/_test/force", {"match": "/typing", "status": 502, "body": "<html>bad gateway</html>"})
    s, b, _ = await t.api("POST", f"/channels/{c0}/typing")
    check(s == 502 and isinstance(b, str), "forced 502 with a non-JSON body")
    s, b, _ = await t.api("POST", f"/channels/{c0}/typing")
    check(s == 204, "typing -> 204")


async def main():
    t = T()
    t0 = time.monotonic()
    try:
        await t.start()
        await asyncio.wait_for(gateway_checks(t), 40)
        print("PASS gateway: close codes, zlib-stream, sharding, intents, resume/replay, controls")
        await asyncio.wait_for(rest_checks(t), 20)
        print("PASS rest: error shapes, mentions, replies, components, reactions, interactions, forced errors")
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
