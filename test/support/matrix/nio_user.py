#!/usr/bin/python3
"""Plays a human Matrix user with a real client library (Debian's
python3-matrix-nio 0.20), for the C++ process tests: log in, join the room,
send one message, and wait for the bot's reply to it.

  /usr/bin/python3 -B test/support/matrix/nio_user.py --homeserver http://127.0.0.1:PORT \\
      --user alice --password alicepw --room '!roomid:localhost' \\
      --send 'hello there, **bot**' --expect-from '@bot:localhost' [--timeout 20]

Steps: password login; an initial sync; join the room unless already joined
(works when invited or when the room is public); send one m.room.message
(msgtype m.text, body = --send) with room_send; then long-poll sync from the
initial sync's token until an m.room.message from --expect-from arrives in the
room whose content m.relates_to.m.in_reply_to.event_id is the sent event.

Prints one JSON line on stdout and exits 0 on success:
  {"sent_event_id", "reply_event_id", "reply_body", "reply_formatted_body" (or null),
   "reply_format" (or null), "mentions" (m.mentions.user_ids, [] when absent)}
On timeout (--timeout seconds for the whole run, default 20) or any error:
  {"error": "..."} and exit status 1.  nio's log goes to stderr with NIO_USER_DEBUG=1.
As in fidelity_test.py, nio is switched from its r0 paths to v3; E2EE is off.
"""

import argparse
import asyncio
import json
import logging
import os
import sys

try:
    import nio
    import nio.api
    from nio import AsyncClient, AsyncClientConfig
except ImportError as e:  # pragma: no cover
    print(json.dumps({"error": f"matrix-nio is not installed ({e}); apt-get install python3-matrix-nio"}))
    sys.exit(1)

# nio.api.Api._build_path(path, query_parameters=None, base_path=MATRIX_API_PATH)
nio.api.Api._build_path.__defaults__ = (None, "/_matrix/client/v3")
nio.api.MATRIX_API_PATH = "/_matrix/client/v3"
nio.api.MATRIX_MEDIA_API_PATH = "/_matrix/media/v3"

# A large timeline limit, so that a busy room cannot push the reply out of a sync batch.
SYNC_FILTER = {"room": {"timeline": {"limit": 100}}}


class Failed(Exception):
    pass


STAGE = ["starting"]  # the step in progress, for the timeout message


async def step(what, call, cls):
    """Runs one nio call; nio answers an ErrorResponse for an error or a malformed answer."""
    STAGE[0] = what
    resp = await call
    if not isinstance(resp, cls):
        raise Failed(f"{what} failed: {resp}")
    return resp


async def run(client, args):
    await step("login", client.login(args.password, device_name="nio_user"), nio.LoginResponse)
    first = await step("initial sync", client.sync(timeout=0, sync_filter=SYNC_FILTER, full_state=True),
                       nio.SyncResponse)
    if args.room not in first.rooms.join:
        await step(f"join {args.room}", client.join(args.room), nio.JoinResponse)
    sent = await step("room_send", client.room_send(args.room, "m.room.message",
                                                    {"msgtype": "m.text", "body": args.send}),
                      nio.RoomSendResponse)
    since = first.next_batch  # from before the send, so no reply can be missed
    wait = f"waiting for {args.expect_from} to reply to {sent.event_id}"
    while True:  # the overall --timeout is enforced by asyncio.wait_for in main()
        resp = await step(wait, client.sync(timeout=10000, sync_filter=SYNC_FILTER, since=since), nio.SyncResponse)
        since = resp.next_batch
        room = resp.rooms.join.get(args.room)
        for ev in (room.timeline.events if room else []):
            src = ev.source  # nio's event classes do not expose m.relates_to; the raw event does
            content = src.get("content") or {}
            in_reply_to = ((content.get("m.relates_to") or {}).get("m.in_reply_to") or {}).get("event_id")
            if (src.get("type") == "m.room.message" and src.get("sender") == args.expect_from
                    and in_reply_to == sent.event_id):
                return {"sent_event_id": sent.event_id, "reply_event_id": src.get("event_id"),
                        "reply_body": content.get("body"),
                        "reply_formatted_body": content.get("formatted_body"),
                        "reply_format": content.get("format"),
                        "mentions": (content.get("m.mentions") or {}).get("user_ids", [])}


async def main():
    p = argparse.ArgumentParser(description="Play a human Matrix user with matrix-nio: send, await the reply")
    p.add_argument("--homeserver", required=True)
    p.add_argument("--user", required=True, help="localpart or @user:server")
    p.add_argument("--password", required=True)
    p.add_argument("--room", required=True)
    p.add_argument("--send", required=True, help="the body of the m.text message")
    p.add_argument("--expect-from", required=True, help="the user id the reply must come from")
    p.add_argument("--timeout", type=float, default=20.0, help="seconds for the whole run")
    args = p.parse_args()
    logging.basicConfig(level=logging.DEBUG if os.environ.get("NIO_USER_DEBUG") else logging.CRITICAL,
                        stream=sys.stderr)
    config = AsyncClientConfig(encryption_enabled=False, store_sync_tokens=False,
                               backoff_factor=0.05, max_timeout_retry_wait_time=1)
    client = AsyncClient(args.homeserver, args.user, config=config)
    try:
        out = await asyncio.wait_for(run(client, args), args.timeout)
    except asyncio.TimeoutError:
        out = {"error": f"timeout after {args.timeout:g} s ({STAGE[0]})"}
    except Failed as e:
        out = {"error": str(e)}
    except Exception as e:
        out = {"error": f"unexpected {e!r}"}
    finally:
        await client.close()
    print(json.dumps(out), flush=True)
    return 1 if "error" in out else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
