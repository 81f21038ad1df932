#!/usr/bin/env python3
"""A scripted MCP server over stdio, for tests of Stargazer's MCP client.

It speaks MCP's stdio transport: newline-delimited JSON-RPC 2.0 on stdin/stdout, logs on
stderr. Standard library only. What it does is chosen by command-line flags and by the
tools a model calls:

tools (tools/list pages them 2 at a time, with nextCursor):
  echo {text}           a text content with `text`
  add_tool {name}       adds a tool (it answers "called NAME") and sends
                        notifications/tools/list_changed (before its answer)
  sleep {seconds}       answers after that long; a notifications/cancelled for it that
                        arrives first means no answer, and its id (as JSON) is appended to
                        the --cancel-log file
  big {mib}             a text result of that many MiB of 'x' on one line
  fail                  a result with isError true
  image                 an image content item (a 1x1 PNG) and a text
  resource              an embedded text resource and a resource_link
  crash                 exits with status 3 without answering
  garbage               a line that is not JSON, then the answer
  stderr_flood {lines}  that many lines on stderr, then the answer

flags:
  --garbage-first            lines that are not JSON (one not UTF-8) before anything else
  --only-garbage             answers nothing: a garbage line at start and for each line read
  --exit-after N             exits (status 0) once N tools/call have been answered
  --start-delay S            sleeps S seconds before reading stdin
  --pid-file PATH            writes its pid there at start
  --env-dump PATH            writes its environment as it was given to execve (from
                             /proc/self/environ; os.environ elsewhere) as JSON, sorted keys
  --cancel-log PATH          where cancelled sleep ids go
  --grandchild-pid-file PATH starts a grandchild (ignoring SIGTERM, sleeping an hour) in its
                             process group; the grandchild writes its pid there
  --ignore-sigterm           SIGTERM does nothing
  --ignore-eof               keeps running when stdin ends (default: exits 0)

Robustness: a line that is not JSON (or not UTF-8) gets -32700 with id null; a batch or a
malformed request -32600; an unknown method -32601; bad params or an unknown tool -32602.
Notifications it does not know are ignored, as are responses.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time

SUPPORTED_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
LATEST_VERSION = "2025-11-25"
PAGE_SIZE = 2
PNG_1X1 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP4z8DwHwAFAAH/iZk9HQAAAABJRU5ErkJggg=="

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603


def schema(properties=None, required=None):
    s = {"type": "object", "properties": properties or {}}
    if required:
        s["required"] = required
    return s


BUILTIN_TOOLS = [
    {"name": "echo", "description": "Returns its text.",
     "inputSchema": schema({"text": {"type": "string"}}, ["text"])},
    {"name": "add_tool", "description": "Adds a tool and notifies that the list changed.",
     "inputSchema": schema({"name": {"type": "string"}}, ["name"])},
    {"name": "sleep", "description": "Answers after some seconds, unless cancelled.",
     "inputSchema": schema({"seconds": {"type": "number"}}, ["seconds"])},
    {"name": "big", "description": "A text result of some MiB on one line.",
     "inputSchema": schema({"mib": {"type": "number"}}, ["mib"])},
    {"name": "fail", "description": "A tool execution error.", "inputSchema": schema()},
    {"name": "image", "description": "An image and a text.", "inputSchema": schema()},
    {"name": "resource", "description": "An embedded resource and a resource link.", "inputSchema": schema()},
    {"name": "crash", "description": "Exits with status 3 without answering.", "inputSchema": schema()},
    {"name": "garbage", "description": "A line that is not JSON, then the answer.", "inputSchema": schema()},
    {"name": "stderr_flood", "description": "Lines on stderr, then the answer.",
     "inputSchema": schema({"lines": {"type": "integer"}}, ["lines"])},
]


def write_file_atomically(path, text):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def initial_environment():
    """The environment execve gave us: Python itself may add to os.environ (PEP 538)."""
    try:
        with open("/proc/self/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return dict(os.environ)
    env = {}
    for entry in raw.split(b"\0"):
        if not entry:
            continue
        name, sep, value = entry.decode("utf-8", "surrogateescape").partition("=")
        env[name] = value if sep else None
    return env


def text_content(text):
    return {"type": "text", "text": text}


class ProtocolError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


class Server:
    def __init__(self, args):
        self.args = args
        self.out = sys.stdout.buffer
        self.write_lock = threading.Lock()
        self.tools = [dict(t) for t in BUILTIN_TOOLS]
        self.sleeping = {}  # json.dumps(request id) -> threading.Event set on cancellation
        self.sleeping_lock = threading.Lock()
        self.calls_answered = 0

    # ---- output ----------------------------------------------------------------------------

    def write_line(self, data):
        with self.write_lock:
            try:
                self.out.write(data + b"\n")
                self.out.flush()
            except (BrokenPipeError, ValueError):
                os._exit(0)  # our client is gone

    def send(self, message):
        try:
            text = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
            data = text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate from the input: escape it instead
            data = json.dumps(message, separators=(",", ":")).encode("ascii")
        self.write_line(data)

    def respond(self, request_id, result):
        self.send({"jsonrpc": "2.0", "id": request_id, "result": result})

    def respond_error(self, request_id, code, message):
        self.send({"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}})

    def notify(self, method, params=None):
        message = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)

    def garbage(self, what="this line is not JSON"):
        self.write_line(what.encode("utf-8"))

    def answer_call(self, request_id, result):
        self.respond(request_id, result)
        with self.write_lock:
            self.calls_answered += 1
            done = self.args.exit_after is not None and self.calls_answered >= self.args.exit_after
        if done:
            sys.stderr.flush()
            os._exit(0)

    # ---- input -----------------------------------------------------------------------------

    def serve(self):
        stdin = sys.stdin.buffer
        while True:
            line = stdin.readline()
            if not line:
                return
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            if self.args.only_garbage:
                self.garbage("garbage instead of an answer")
                continue
            try:
                message = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                self.respond_error(None, PARSE_ERROR, "Parse error")
                continue
            self.handle(message)

    def handle(self, message):
        if isinstance(message, list):
            self.respond_error(None, INVALID_REQUEST, "Invalid Request: batches are not supported")
            return
        if not isinstance(message, dict):
            self.respond_error(None, INVALID_REQUEST, "Invalid Request: not an object")
            return
        has_id = "id" in message
        request_id = message.get("id")
        id_ok = isinstance(request_id, str) or (isinstance(request_id, int) and not isinstance(request_id, bool))
        method = message.get("method")
        if message.get("jsonrpc") != "2.0":
            if has_id or method is not None:
                self.respond_error(request_id if id_ok else None, INVALID_REQUEST,
                                   'Invalid Request: jsonrpc must be "2.0"')
            return
        if method is None:
            return  # a response: we send no requests, so nothing waits for it
        if not isinstance(method, str):
            if has_id:
                self.respond_error(request_id if id_ok else None, INVALID_REQUEST,
                                   "Invalid Request: method must be a string")
            return
        params = message.get("params", {})
        if not has_id:
            if isinstance(params, dict):
                self.handle_notification(method, params)
            return
        if not id_ok:
            self.respond_error(None, INVALID_REQUEST, "Invalid Request: id must be a string or an integer")
            return
        try:
            if not isinstance(params, dict):
                raise ProtocolError(INVALID_PARAMS, "Invalid params: must be an object")
            self.handle_request(request_id, method, params)
        except ProtocolError as e:
            self.respond_error(request_id, e.code, e.message)
        except Exception as e:  # a bug here still answers
            print(f"internal error on {method}: {e!r}", file=sys.stderr, flush=True)
            self.respond_error(request_id, INTERNAL_ERROR, f"Internal error: {e}")

    def handle_notification(self, method, params):
        if method == "notifications/cancelled":
            key = json.dumps(params.get("requestId"))
            with self.sleeping_lock:
                event = self.sleeping.get(key)
            if event is not None:
                event.set()
        # notifications/initialized and anything else: nothing to do

    def handle_request(self, request_id, method, params):
        if method == "initialize":
            asked = params.get("protocolVersion")
            version = asked if asked in SUPPORTED_VERSIONS else LATEST_VERSION
            self.respond(request_id, {
                "protocolVersion": version,
                "capabilities": {"tools": {"listChanged": True}},
                "serverInfo": {"name": "scripted-mcp-server", "version": "1.0.0"},
            })
        elif method == "ping":
            self.respond(request_id, {})
        elif method == "tools/list":
            self.list_tools(request_id, params)
        elif method == "tools/call":
            self.call_tool(request_id, params)
        else:
            raise ProtocolError(METHOD_NOT_FOUND, f"Method not found: {method}")

    def list_tools(self, request_id, params):
        cursor = params.get("cursor")
        start = 0
        if cursor is not None:
            if not isinstance(cursor, str) or not cursor.startswith("page:") or not cursor[5:].isdigit():
                raise ProtocolError(INVALID_PARAMS, "Invalid params: unknown cursor")
            start = int(cursor[5:])
            if start >= len(self.tools):
                raise ProtocolError(INVALID_PARAMS, "Invalid params: cursor past the end")
        page = self.tools[start:start + PAGE_SIZE]
        result = {"tools": page}
        if start + PAGE_SIZE < len(self.tools):
            result["nextCursor"] = f"page:{start + PAGE_SIZE}"
        self.respond(request_id, result)

    def call_tool(self, request_id, params):
        name = params.get("name")
        arguments = params.get("arguments") or {}
        if not isinstance(name, str) or not any(t["name"] == name for t in self.tools):
            raise ProtocolError(INVALID_PARAMS, f"Unknown tool: {name}")
        if not isinstance(arguments, dict):
            raise ProtocolError(INVALID_PARAMS, "Invalid params: arguments must be an object")
        handler = getattr(self, "tool_" + name, None)
        if handler is None:  # one added by add_tool
            self.answer_call(request_id, {"content": [text_content(f"called {name}")]})
            return
        result = handler(request_id, arguments)
        if result is not None:
            self.answer_call(request_id, result)

    # ---- tools (a result, or None when answered otherwise) -----------------------------------

    @staticmethod
    def tool_error(text):
        return {"content": [text_content(text)], "isError": True}

    def tool_echo(self, _id, arguments):
        text = arguments.get("text")
        if not isinstance(text, str):
            return self.tool_error("echo: text must be a string")
        return {"content": [text_content(text)]}

    def tool_add_tool(self, _id, arguments):
        name = arguments.get("name")
        if not isinstance(name, str) or not name:
            return self.tool_error("add_tool: name must be a non-empty string")
        if any(t["name"] == name for t in self.tools):
            return self.tool_error(f"add_tool: {name} exists")
        self.tools.append({"name": name, "description": "Added at run time.", "inputSchema": schema()})
        self.notify("notifications/tools/list_changed")
        return {"content": [text_content(f"added tool {name}")]}

    def tool_sleep(self, request_id, arguments):
        seconds = arguments.get("seconds")
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds < 0:
            return self.tool_error("sleep: seconds must be a number >= 0")
        key = json.dumps(request_id)
        cancelled = threading.Event()
        with self.sleeping_lock:
            self.sleeping[key] = cancelled

        def wait():
            was_cancelled = cancelled.wait(seconds)
            with self.sleeping_lock:
                self.sleeping.pop(key, None)
            if was_cancelled:
                if self.args.cancel_log:
                    with open(self.args.cancel_log, "a", encoding="utf-8") as f:
                        f.write(key + "\n")
                return
            self.answer_call(request_id, {"content": [text_content(f"slept {seconds} s")]})

        threading.Thread(target=wait, daemon=True).start()
        return None

    def tool_big(self, _id, arguments):
        mib = arguments.get("mib")
        if not isinstance(mib, (int, float)) or isinstance(mib, bool) or mib < 0:
            return self.tool_error("big: mib must be a number >= 0")
        return {"content": [text_content("x" * int(mib * 1024 * 1024))]}

    def tool_fail(self, _id, _arguments):
        return self.tool_error("the tool failed on purpose")

    def tool_image(self, _id, _arguments):
        return {"content": [{"type": "image", "data": PNG_1X1, "mimeType": "image/png"},
                            text_content("a 1x1 PNG")]}

    def tool_resource(self, _id, _arguments):
        return {"content": [
            {"type": "resource", "resource": {"uri": "file:///scripted/readme.txt", "mimeType": "text/plain",
                                              "text": "the embedded resource's text"}},
            {"type": "resource_link", "uri": "file:///scripted/data.csv", "name": "data.csv",
             "description": "a linked resource", "mimeType": "text/csv"},
        ]}

    def tool_crash(self, _id, _arguments):
        sys.stderr.write("crashing on purpose\n")
        sys.stderr.flush()
        os._exit(3)

    def tool_garbage(self, _id, _arguments):
        self.garbage("garbage before the answer {{{")
        return {"content": [text_content("answered after garbage")]}

    def tool_stderr_flood(self, _id, arguments):
        lines = arguments.get("lines")
        if not isinstance(lines, int) or isinstance(lines, bool) or lines < 0:
            return self.tool_error("stderr_flood: lines must be an integer >= 0")
        for i in range(lines):
            sys.stderr.write(f"stderr flood line {i + 1} of {lines}\n")
        sys.stderr.flush()
        return {"content": [text_content(f"wrote {lines} lines to stderr")]}


GRANDCHILD = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
tmp = sys.argv[1] + ".tmp"
with open(tmp, "w") as f:
    f.write(str(os.getpid()))
os.replace(tmp, sys.argv[1])
time.sleep(3600)
"""


def main():
    parser = argparse.ArgumentParser(description="A scripted MCP server over stdio, for tests.")
    parser.add_argument("--garbage-first", action="store_true")
    parser.add_argument("--only-garbage", action="store_true")
    parser.add_argument("--exit-after", type=int, metavar="N")
    parser.add_argument("--start-delay", type=float, default=0.0, metavar="S")
    parser.add_argument("--pid-file", metavar="PATH")
    parser.add_argument("--env-dump", metavar="PATH")
    parser.add_argument("--cancel-log", metavar="PATH")
    parser.add_argument("--grandchild-pid-file", metavar="PATH")
    parser.add_argument("--ignore-sigterm", action="store_true")
    parser.add_argument("--ignore-eof", action="store_true")
    args = parser.parse_args()

    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.env_dump:
        write_file_atomically(args.env_dump, json.dumps(initial_environment(), sort_keys=True))
    if args.grandchild_pid_file:
        subprocess.Popen([sys.executable, "-c", GRANDCHILD, args.grandchild_pid_file],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if args.pid_file:
        write_file_atomically(args.pid_file, str(os.getpid()))
    print(f"scripted MCP server pid {os.getpid()} started", file=sys.stderr, flush=True)
    if args.start_delay > 0:
        time.sleep(args.start_delay)

    server = Server(args)
    if args.only_garbage:
        server.garbage("only garbage here")
    elif args.garbage_first:
        server.garbage("garbage before the protocol")
        server.garbage("{not json either")
        server.write_line(b"\xff\xfe not UTF-8 \xc3")
    server.serve()
    if args.ignore_eof:
        while True:
            time.sleep(3600)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
