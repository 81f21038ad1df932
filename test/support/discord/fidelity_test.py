#!/usr/bin/python3
"""Fidelity check of discord_server.py: runs a real discord.py (Debian's
python3-discord, 2.2.x) bot against the test server and checks that the
library, which was written against the real Discord, works unchanged.

  /usr/bin/python3 test/support/discord/fidelity_test.py [-v]

Exit status 0 and a summary on success; 1 and the failed check otherwise.
Needs the Debian packages python3-aiohttp and python3-discord.
FIDELITY_SERVER_ARGS="--zlib-chunk-size 64" adds server flags;
FIDELITY_DEBUG=1 turns on discord.py's debug log.

How discord.py is pointed at the server (nothing else is patched):
  * discord.http.Route.BASE = "http://127.0.0.1:<port>/api/v10"  (every REST call,
    interaction callbacks included, goes through Route);
  * discord.AutoShardedClient with shard_count=None asks GET /gateway/bot and
    connects to the "url" it returns, with ?v=10&encoding=json&compress=zlib-stream;
    resumes go to READY's resume_gateway_url;
  * DiscordWebSocket.DEFAULT_GATEWAY is also set to the server, because
    discord.py 2.2 falls back to it (instead of the /gateway/bot URL) when it
    must re-identify after op 9 d:false, and a plain discord.Client always uses it.
"""

import asyncio
import hashlib
import io
import json
import logging
import os
import subprocess
import sys
import time

import aiohttp

try:
    import discord
    import discord.gateway
    import discord.http
    import yarl
except ImportError as e:  # pragma: no cover
    print(f"FAIL: discord.py is not installed ({e}); apt-get install python3-discord", file=sys.stderr)
    sys.exit(1)

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "discord_server.py")
TOKEN = "fidelity.TEST-token.0123456789"
OVERALL_TIMEOUT_S = 55
VERBOSE = "-v" in sys.argv


class CheckFailed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise CheckFailed(what)
    if VERBOSE:
        print(f"  ok: {what}")


class Harness:
    def __init__(self):
        self.proc = None
        self.port = None
        self.http = None
        self.passed = []

    async def start_server(self):
        args = [sys.executable, SERVER, "--port", "0", "--token", TOKEN,
                "--shards", "2", "--guilds", "2", "--channels", "2",
                "--heartbeat-ms", "2000"] + os.environ.get("FIDELITY_SERVER_ARGS", "").split()
        self.proc = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.PIPE, stderr=None)
        line = await asyncio.wait_for(self.proc.stdout.readline(), 10)
        line = line.decode().strip()
        if not line.startswith("READY port="):
            raise CheckFailed(f"server did not print READY port=<n> (got {line!r})")
        self.port = int(line.split("=", 1)[1])
        self.base = f"http://127.0.0.1:{self.port}"
        self.http = aiohttp.ClientSession()

    async def stop(self):
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

    async def records(self, since=0, kind=None):
        q = f"?since={since}" + (f"&kind={kind}" if kind else "")
        return (await self.ctl("GET", "/_test/requests" + q))["records"]

    def passed_check(self, name):
        self.passed.append(name)
        print(f"PASS {name}")


class Bot(discord.AutoShardedClient):
    def __init__(self):
        intents = discord.Intents.default()
        intents.message_content = True
        super().__init__(intents=intents, shard_count=None, guild_ready_timeout=0.5)
        self.ready_evt = asyncio.Event()
        self.messages = asyncio.Queue()
        self.resumed_shards = []
        self.reactions = asyncio.Queue()

    async def on_ready(self):
        self.ready_evt.set()

    async def on_message(self, message):
        await self.messages.put(message)

    async def on_shard_resumed(self, shard_id):
        self.resumed_shards.append(shard_id)

    async def on_raw_reaction_add(self, payload):
        await self.reactions.put(payload)

    async def wait_message(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CheckFailed(f"timed out waiting for {what}")
            try:
                m = await asyncio.wait_for(self.messages.get(), left)
            except asyncio.TimeoutError:
                raise CheckFailed(f"timed out waiting for {what}")
            if pred(m):
                return m


async def run(h: Harness):
    await h.start_server()
    print(f"server listening on port {h.port}")

    # ---- point discord.py at the server
    discord.http.Route.BASE = f"{h.base}/api/v10"
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(f"ws://127.0.0.1:{h.port}/gateway")

    st = await h.state()
    g0, g1 = st["guilds"][0], st["guilds"][1]
    check(g0["shard_for"]["2"] == 0 and g1["shard_for"]["2"] == 1, "guild 0 -> shard 0, guild 1 -> shard 1 of 2")
    c0 = g0["channels"][0]["id"]
    c1 = g1["channels"][0]["id"]
    bot_user_id = st["bot_user"]["id"]

    bot = Bot()
    bot_task = asyncio.create_task(bot.start(TOKEN))
    try:
        await _checks(h, bot, g0, g1, c0, c1, bot_user_id)
    finally:
        await bot.close()
        try:
            await asyncio.wait_for(bot_task, 5)
        except Exception:
            pass


async def _checks(h, bot, g0, g1, c0, c1, bot_user_id):
    # ---------------------------------------------------------------- (a)
    try:
        await asyncio.wait_for(bot.ready_evt.wait(), 25)
    except asyncio.TimeoutError:
        raise CheckFailed("(a) on_ready did not fire within 25 s")
    check(bot.user is not None and str(bot.user.id) == bot_user_id, "(a) bot.user is the server's bot user")
    check(bot.shard_count == 2, f"(a) shard count from /gateway/bot is 2 (got {bot.shard_count})")
    guild_ids = sorted(str(g.id) for g in bot.guilds)
    check(guild_ids == sorted([g0["id"], g1["id"]]), f"(a) both guilds cached (got {guild_ids})")
    ch0 = bot.get_channel(int(c0))
    ch1 = bot.get_channel(int(c1))
    check(ch0 is not None and ch0.name == g0["channels"][0]["name"], "(a) channel of guild 0 cached with its name")
    check(ch1 is not None and ch1.guild.id == int(g1["id"]), "(a) channel of guild 1 cached in its guild")
    check(ch0.guild.shard_id == 0 and ch1.guild.shard_id == 1, "(a) discord.py computes the same shard ids")
    st = await h.state()
    sess = {tuple(s["shard"]): s for s in st["sessions"]}
    check(set(sess) == {(0, 2), (1, 2)}, f"(a) server has sessions for shards [0,2] and [1,2] (got {list(sess)})")
    recs = await h.records()
    rest_paths = [r["path"] for r in recs if r["kind"] == "rest"]
    check("/api/v10/gateway/bot" in rest_paths, "(a) discord.py asked GET /gateway/bot")
    check(all(r.get("headers", {}).get("Authorization") == "Bot <valid>"
              for r in recs if r["kind"] == "rest" and r["path"] != "/api/v10/gateway"),
          "(a) every REST request carried Authorization: Bot <token>")
    identifies = [r for r in recs if r["kind"] == "gateway_recv" and r["op"] == 2]
    check(len(identifies) == 2, f"(a) two Identify payloads (got {len(identifies)})")
    for r in identifies:
        d = r["d"]
        check(d["token_valid"] and isinstance(d["intents"], int) and d["intents"] & (1 << 15),
              "(a) Identify carries the token and intents incl. MESSAGE_CONTENT")
    sent = [r for r in recs if r["kind"] == "gateway_sent" and r["op"] == 0]
    check(sum(1 for r in sent if r["t"] == "READY") == 2 and sum(1 for r in sent if r["t"] == "GUILD_CREATE") == 2,
          "(a) READY and GUILD_CREATE sent per shard")
    h.passed_check("(a) connect: READY + GUILD_CREATE, on_ready, guild/channel cache, 2 shards via /gateway/bot")

    # ---------------------------------------------------------------- (b)
    author = {"id": "111111111111111111", "username": "alice"}
    r = await h.ctl("POST", "/_test/messages", {"channel_id": c0, "guild_id": g0["id"], "author": author,
                                                "content": "hello from alice"})
    check(r["delivered_to"] == [sess[(0, 2)]["session_id"]], "(b) injected message routed to shard 0's session only")
    m = await bot.wait_message(lambda m: m.content == "hello from alice", 10, "(b) on_message for injected message")
    check(str(m.author.id) == author["id"] and m.author.name == "alice", "(b) author id and name")
    check(m.channel.id == int(c0) and m.guild.id == int(g0["id"]), "(b) channel and guild")
    check(str(m.id) == r["message"]["id"], "(b) message id")
    r1 = await h.ctl("POST", "/_test/messages", {"channel_id": c1, "author": author, "content": "second guild"})
    check(r1["delivered_to"] == [sess[(1, 2)]["session_id"]], "(b) guild 1 message routed to shard 1")
    m1 = await bot.wait_message(lambda m: m.content == "second guild", 10, "(b) on_message on shard 1")
    check(m1.guild.shard_id == 1, "(b) received on shard 1")
    h.passed_check("(b) injected MESSAGE_CREATE -> on_message with content, author, channel; shard routing")

    # ---------------------------------------------------------------- (c)
    reply = await m.channel.send("echo: hello from alice", reference=m)
    stored = await h.ctl("GET", f"/_test/channels/{c0}/messages")
    mine = [x for x in stored if x["author"]["id"] == bot_user_id]
    check(len(mine) == 1 and mine[0]["content"] == "echo: hello from alice", "(c) reply stored in the channel")
    check(mine[0]["id"] == str(reply.id), "(c) discord.py got the created message back (same id)")
    check(mine[0]["type"] == 19 and mine[0]["message_reference"]["message_id"] == str(m.id),
          "(c) reply is type 19 with message_reference to the user's message")
    own = await bot.wait_message(lambda x: x.id == reply.id, 10, "(c) MESSAGE_CREATE of the bot's own message")
    check(own.author == bot.user and own.reference is not None and own.reference.message_id == m.id,
          "(c) the bot sees its own message via the gateway, as a reply")
    h.passed_check("(c) channel.send(reference=...) -> POST /channels/{id}/messages, stored, echoed on gateway")

    # ---------------------------------------------------------------- (d)
    s0 = sess[(0, 2)]["session_id"]
    before = len(await h.records())
    await h.ctl("POST", "/_test/config", {"resume_delay_ms": 1500})
    await h.ctl("POST", "/_test/gateway/reconnect", {"session_id": s0})
    deadline = time.monotonic() + 5
    while True:
        s = {x["session_id"]: x for x in (await h.state())["sessions"]}[s0]
        if not s["connected"]:
            break
        if time.monotonic() > deadline:
            raise CheckFailed("(d) discord.py did not disconnect after op 7")
        await asyncio.sleep(0.02)
    r = await h.ctl("POST", "/_test/messages", {"channel_id": c0, "author": author,
                                                "content": "sent while you were away"})
    check(r["queued_for"] == [s0] and not r["delivered_to"], "(d) message queued for the disconnected session")
    await bot.wait_message(lambda m: m.content == "sent while you were away", 10,
                           "(d) replayed message after resume")
    await h.ctl("POST", "/_test/config", {"resume_delay_ms": 0})
    recs = await h.records(since=before)
    resumes = [x for x in recs if x["kind"] == "gateway_recv" and x["op"] == 6]
    new_identifies = [x for x in recs if x["kind"] == "gateway_recv" and x["op"] == 2]
    check(len(resumes) == 1 and resumes[0]["d"]["session_id"] == s0 and resumes[0].get("replayed", 0) >= 1,
          "(d) server recorded one Resume of the session, with replayed events")
    check(not new_identifies, "(d) no new Identify")
    opens = [x for x in recs if x["kind"] == "gateway_open"]
    check(len(opens) == 1 and opens[0]["via_resume_url"], "(d) reconnected via READY's resume_gateway_url")
    check(any(x["kind"] == "gateway_sent" and x["t"] == "RESUMED" for x in recs), "(d) RESUMED dispatched")
    for _ in range(50):
        if 0 in bot.resumed_shards:
            break
        await asyncio.sleep(0.05)
    check(0 in bot.resumed_shards, "(d) discord.py fired on_shard_resumed(0)")
    closes = [x for x in recs if x["kind"] == "gateway_close"]
    check(closes and closes[0]["by"] == "client" and closes[0]["code"] not in (1000, 1001),
          "(d) discord.py closed the old connection itself with a resumable code")
    h.passed_check("(d) op 7 -> Resume (not Identify) on resume_gateway_url, missed dispatch replayed")

    # ---------------------------------------------------------------- (e)
    st = await h.state()
    conns = st["connections"]
    check(conns and all(c["query"].get("compress") == "zlib-stream" and c["query"].get("v") == "10"
                        and c["query"].get("encoding") == "json" for c in conns),
          "(e) every connection asked for v=10, encoding=json, compress=zlib-stream")
    check(all(c["frames_sent"] > 0 and c["binary_frames_sent"] == c["frames_sent"] for c in conns),
          "(e) every frame the server sent was a zlib-stream binary frame")
    hb = sum(c["heartbeats"] for c in conns)
    check(hb >= 3, f"(e) heartbeats were exchanged ({hb})")
    h.passed_check("(e) zlib-stream transport compression (one compressor per connection, Z_SYNC_FLUSH)")

    # ---------------------------------------------------------------- extras
    await extra_checks(h, bot, ch0, c0, bot_user_id, author)


async def extra_checks(h, bot, ch0, c0, bot_user_id, author):
    # Per-route bucket headers: discord.py must pace itself from the headers alone.
    await h.ctl("POST", "/_test/config", {"channel_limit": 3, "channel_window_s": 1.5})
    before = len(await h.records())
    t0 = time.monotonic()
    for i in range(7):
        await ch0.send(f"paced {i}")
    elapsed = time.monotonic() - t0
    recs = await h.records(since=before, kind="rest")
    n429 = sum(1 for r in recs if r.get("status") == 429)
    stored = [x["content"] for x in await h.ctl("GET", f"/_test/channels/{c0}/messages")]
    check(all(f"paced {i}" in stored for i in range(7)), "(f) all 7 paced messages stored")
    check(n429 == 0, f"(f) discord.py honoured X-RateLimit-* headers: no 429 (got {n429})")
    check(elapsed >= 2.5, f"(f) and actually waited for the bucket to reset ({elapsed:.2f}s)")
    h.passed_check("(f) per-route bucket headers honoured by discord.py (7 sends at 3/1.5s, no 429)")

    # Global limit 429: discord.py must wait retry_after and retry.
    await h.ctl("POST", "/_test/config", {"global_limit": 4, "route_limit": 100, "channel_limit": 5,
                                          "channel_window_s": 5})
    before = len(await h.records())
    results = await asyncio.gather(*[bot.fetch_channel(int(c0)) for _ in range(10)])
    recs = await h.records(since=before, kind="rest")
    g429 = [r for r in recs if r.get("status") == 429 and r.get("scope") == "global"]
    check(all(r.id == int(c0) for r in results), "(g) all 10 fetch_channel calls succeeded")
    check(len(g429) >= 1, f"(g) server answered global 429s ({len(g429)})")
    check(all(r["response"]["global"] is True for r in g429), "(g) 429 body says global: true")
    await h.ctl("POST", "/_test/config", {"global_limit": 50, "route_limit": 5})
    h.passed_check("(g) global rate limit 429 (X-RateLimit-Global, retry_after) handled by discord.py")

    # Typing, reactions (unicode and custom emoji, URL-encoded).
    msg = await ch0.send("react to me")
    async with ch0.typing():
        pass
    await msg.add_reaction("\N{THUMBS UP SIGN}")
    await asyncio.sleep(0.3)
    await msg.add_reaction("blob:123456789012345678")
    recs = await h.records(kind="rest")
    typing = [r for r in recs if r["path"].endswith("/typing") and r["status"] == 204]
    reacts = [r for r in recs if "/reactions/" in r["path"] and r["method"] == "PUT"]
    check(typing, "(h) POST /channels/{id}/typing -> 204")
    check(len(reacts) == 2 and all(r["status"] == 204 for r in reacts),
          f"(h) two PUT reactions -> 204 ({[r['status'] for r in reacts]})")
    check(reacts[0]["emoji"] == {"id": None, "name": "\N{THUMBS UP SIGN}"}
          and reacts[1]["emoji"] == {"id": "123456789012345678", "name": "blob"},
          "(h) unicode and custom name:id emoji decoded")
    p = await asyncio.wait_for(bot.reactions.get(), 5)
    check(p.user_id == bot.user.id and p.message_id == msg.id, "(h) MESSAGE_REACTION_ADD reached discord.py")
    await h.ctl("POST", "/_test/reactions", {"channel_id": c0, "message_id": str(msg.id), "user": author,
                                             "emoji": {"name": "\N{RED APPLE}"}})
    p = None
    for _ in range(3):
        p = await asyncio.wait_for(bot.reactions.get(), 5)
        if str(p.emoji) == "\N{RED APPLE}":
            break
    check(p is not None and str(p.user_id) == author["id"] and p.member is not None,
          "(h) user reaction injected by the control API -> on_raw_reaction_add with member")
    h.passed_check("(h) typing, reactions (URL-encoded unicode + name:id), MESSAGE_REACTION_ADD")

    # Multipart upload, and the upload limit.
    data = os.urandom(3000)
    fm = await ch0.send("a file", file=discord.File(io.BytesIO(data), "blob.bin"))
    check(len(fm.attachments) == 1 and fm.attachments[0].size == 3000 and fm.attachments[0].filename == "blob.bin",
          "(i) attachment returned to discord.py")
    async with h.http.get(fm.attachments[0].url) as r:
        got = await r.read()
    check(hashlib.sha256(got).digest() == hashlib.sha256(data).digest(), "(i) uploaded bytes served back intact")
    await h.ctl("POST", "/_test/config", {"upload_limit": 2000})
    try:
        await ch0.send("too big", file=discord.File(io.BytesIO(data), "big.bin"))
        raise CheckFailed("(i) upload over the limit was accepted")
    except discord.HTTPException as e:
        check(e.status == 413 and e.code == 40005, f"(i) over the limit -> 413 / 40005 (got {e.status}/{e.code})")
    await h.ctl("POST", "/_test/config", {"upload_limit": 25 * 1024 * 1024})
    try:
        await ch0.send("x" * 2001)
        raise CheckFailed("(i) 2001-character content was accepted")
    except discord.HTTPException as e:
        check(e.status == 400 and e.code == 50035 and "content" in (e.text or ""),
              f"(i) 2001 characters -> 400 / 50035 naming content (got {e.status}/{e.code})")
    h.passed_check("(i) multipart payload_json + files[0]; 413/40005 over the limit; 50035 over 2000 chars")

    # Buttons and an interaction acknowledged within 3 s.
    clicked = asyncio.Event()

    class V(discord.ui.View):
        @discord.ui.button(label="Yes", custom_id="sg:yes", style=discord.ButtonStyle.primary)
        async def yes(self, interaction, button):
            await interaction.response.defer()
            clicked.set()

    bm = await ch0.send("choose", view=V(timeout=None))
    stored = {x["id"]: x for x in await h.ctl("GET", f"/_test/channels/{c0}/messages")}[str(bm.id)]
    check(stored["components"][0]["type"] == 1 and stored["components"][0]["components"][0]["custom_id"] == "sg:yes",
          "(j) components stored as an action row with the button")
    r = await h.ctl("POST", "/_test/interactions", {"channel_id": c0, "message_id": str(bm.id), "user": author,
                                                    "custom_id": "sg:yes"})
    await asyncio.wait_for(clicked.wait(), 5)
    await asyncio.sleep(0.2)
    st = await h.ctl("GET", f"/_test/interactions/{r['interaction']['id']}")
    check(st["acknowledged"] and st["ack_type"] == 6 and st["within_deadline"],
          f"(j) interaction acknowledged with a deferred update within 3 s ({st['ack_latency_s']})")
    bad_rows = [{"type": 1, "components": [{"type": 2, "style": 1, "label": str(i), "custom_id": f"b{i}"}
                                           for i in range(6)]}]
    async with h.http.post(f"{h.base}/api/v10/channels/{c0}/messages", json={"content": "x", "components": bad_rows},
                           headers={"Authorization": f"Bot {TOKEN}"}) as resp:
        body = await resp.json()
    check(resp.status == 400 and body["code"] == 50035 and "components" in body["errors"],
          "(j) 6 buttons in a row -> 400 / 50035")
    h.passed_check("(j) buttons (action rows), INTERACTION_CREATE, callback type 6 within the deadline")

    # enforce_nonce: discord.py 2.2 cannot send it, so use raw HTTP.
    body = {"content": "once", "nonce": "sg-nonce-1", "enforce_nonce": True}
    ids = []
    for _ in range(2):
        async with h.http.post(f"{h.base}/api/v10/channels/{c0}/messages", json=body,
                               headers={"Authorization": f"Bot {TOKEN}"}) as resp:
            ids.append((resp.status, (await resp.json())["id"]))
    stored = [x for x in await h.ctl("GET", f"/_test/channels/{c0}/messages") if x["content"] == "once"]
    check(ids[0] == ids[1] and ids[0][0] == 200 and len(stored) == 1,
          "(k) a repeated nonce with enforce_nonce returns the first message, creates no second")
    h.passed_check("(k) nonce + enforce_nonce deduplication")

    # History through discord.py: newest first, paginated with before=.
    hist = [m async for m in ch0.history(limit=5)]
    check(len(hist) == 5 and all(hist[i].id > hist[i + 1].id for i in range(4)), "(l) history newest first")
    older = [m async for m in ch0.history(limit=3, before=hist[-1])]
    check(len(older) == 3 and older[0].id < hist[-1].id, "(l) history(before=) pages back")
    h.passed_check("(l) GET /channels/{id}/messages?limit=&before=")

    # Presence: op 3 reaches the server.
    await bot.change_presence(status=discord.Status.idle, activity=discord.Game("testing"))
    for _ in range(50):
        st = await h.state()
        pres = [s["presence"] for s in st["sessions"] if s["presence"]]
        if pres and all(p.get("status") == "idle" for p in pres) and len(pres) == 2:
            break
        await asyncio.sleep(0.05)
    check(len(pres) == 2 and all(p["status"] == "idle" for p in pres), "(m) op 3 presence recorded on both shards")
    h.passed_check("(m) presence update (op 3)")

    # Server-initiated heartbeat request (op 1) answered at once.
    before = len(await h.records())
    await h.ctl("POST", "/_test/gateway/heartbeat_request", {"shard_id": 1})
    got = False
    for _ in range(40):
        await asyncio.sleep(0.05)
        recs = await h.records(since=before, kind="gateway_recv")
        if any(r["op"] == 1 for r in recs):
            got = True
            break
    check(got, "(n) discord.py answered a server op 1 with a heartbeat")

    # Abrupt TCP drop (no close frame) -> discord.py resumes.
    st = await h.state()
    s1 = [s for s in st["sessions"] if s["shard"] == [1, 2]][0]["session_id"]
    before = len(await h.records())
    n_resumed = len(bot.resumed_shards)
    await h.ctl("POST", "/_test/gateway/drop", {"session_id": s1})
    for _ in range(200):
        if len(bot.resumed_shards) > n_resumed:
            break
        await asyncio.sleep(0.05)
    recs = await h.records(since=before, kind="gateway_recv")
    check(any(r["op"] == 6 and r["d"]["session_id"] == s1 for r in recs) and not any(r["op"] == 2 for r in recs),
          "(n) after an abrupt drop discord.py resumed the session (no Identify)")
    h.passed_check("(n) heartbeat request and abrupt connection drop")

    st = await h.state()
    check(st["counters"].get("invalid_requests", 0) == len([1 for r in await h.records(kind="rest")
                                                             if r.get("invalid")]),
          "(o) invalid request counter matches the recording")
    h.passed_check("(o) recording: invalid requests (401/403/429) counted")


async def main():
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    if not VERBOSE:
        logging.getLogger("discord").setLevel(logging.ERROR)
    elif os.environ.get("FIDELITY_DEBUG"):
        logging.getLogger("discord").setLevel(logging.DEBUG)
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
    finally:
        await h.stop()
    print(f"OK: {len(h.passed)} fidelity checks passed in {time.monotonic() - t0:.1f} s "
          f"(discord.py {discord.__version__} against discord_server.py)")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
