"""A small OpenAI-compatible chat-completions server for tests (stdlib http.server), run as a subprocess.

``python _chat_server.py [--lm MODEL_DIR]`` listens on 127.0.0.1 on a free
port and prints ``PORT <n>`` on its first line. The first path segment
chooses the behaviour of ``POST /<mode>/v1/chat/completions``:

ok
    200 with hypotheses made from the prompt's Group A sentences (a bullet
    per sentence naming its longest word, a fixed one repeated for dedup
    tests, and a line without a bullet that is not a hypothesis).
lm
    200 with text generated greedily by the jaxalign.lm model in
    ``--lm MODEL_DIR`` (loaded once, at start).
flaky-<n>-<key>
    HTTP 500 for the first ``n`` requests to this path, then as ``ok``.
hang
    answers nothing for 60 s (the client must time out).
malformed
    200 with a body that is not JSON.
empty
    200 with ``{"choices": []}``.
notfound
    404.

``GET /log`` returns ``{path: [request bodies]}`` of every POST so far.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOG: dict = {}
LOCK = threading.Lock()
GENERATE = None


def canned(prompt: str) -> str:
    m = re.search(r"Group A:\n(.*?)\n\nGroup B:", prompt, re.S)
    sentences = [re.sub(r"^\d+\.\s*", "", s) for s in m.group(1).splitlines()] if m else []
    lines = ["Here are my hypotheses:", "- describes a strong emotion"]
    for s in sentences:
        word = max(re.findall(r"[A-Za-z]+", s) or ["nothing"], key=len)
        lines.append(f"- mentions the word {word.lower()}")
    lines += ["1. Describes a strong emotion.", "This line has no bullet and is not a hypothesis."]
    return "\n".join(lines)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/json"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/log":
            with LOCK:
                self._send(200, json.dumps(LOG).encode())
        else:
            self._send(404, b'{"error": "not found"}')

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            body = {"unparsed": raw.decode("utf-8", "replace")}
        with LOCK:
            LOG.setdefault(self.path, []).append(body)
            count = len(LOG[self.path])
        parts = self.path.strip("/").split("/")
        mode = parts[0]
        if parts[1:] != ["v1", "chat", "completions"]:
            return self._send(404, b'{"error": "unknown path"}')
        if mode.startswith("flaky-"):
            if count <= int(mode.split("-")[1]):
                return self._send(500, b'{"error": "internal error, try again"}')
            mode = "ok"
        if mode == "hang":
            time.sleep(60)
            return self._send(200, b"{}")
        if mode == "malformed":
            return self._send(200, b'{"choices": [{"message": {"content": "unterminated')
        if mode == "empty":
            return self._send(200, json.dumps({"id": "x", "choices": []}).encode())
        if mode == "notfound":
            return self._send(404, b'{"error": "no such model"}')
        prompt = body["messages"][-1]["content"]
        if mode == "lm":
            text = GENERATE(prompt, int(body.get("max_tokens", 32)))
        elif mode == "ok":
            text = canned(prompt)
        else:
            return self._send(400, json.dumps({"error": f"unknown mode {mode}"}).encode())
        answer = {"id": f"chat-{count}", "object": "chat.completion", "model": body.get("model"),
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                               "finish_reason": "stop"}]}
        self._send(200, json.dumps(answer).encode())


def main(argv):
    global GENERATE
    if "--lm" in argv:
        from jaxalign import lm

        model, tokenizer = lm.load(argv[argv.index("--lm") + 1])
        GENERATE = lambda prompt, max_tokens: lm.generate(  # noqa: E731
            model, tokenizer, prompt, max_new_tokens=min(max_tokens, 24), stop_at_eos=False)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
