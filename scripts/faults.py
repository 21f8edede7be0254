"""Measure what each fault does to a real server on the tiny demo model (docs/reliability.md).

    PYTHONPATH=src nice -n 19 .venv/bin/python scripts/faults.py [--json faults.json]

Four faults, each on its own ``vlmserve serve`` (or ``describe``) child process:
SIGTERM with 8 streams on 4 slots; SIGKILL with streams running, then a restart over
the same disk cache; slowloris (200 connections sending headers a byte a second); a full
disk under ``vlmserve describe`` (a real file-size limit, RLIMIT_FSIZE). Prints one JSON
document of what was observed. Not a test: the suite asserts the same behaviour.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from PIL import Image

from vlmserve.models.demo import write_demo_model

SRC = Path(__file__).resolve().parents[1] / "src"


def picture(seed: int, side: int = 128) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (seed * 40 % 256, 90, 160)).save(buf, "PNG")
    return buf.getvalue()


def uri(seed: int) -> str:
    return "data:image/png;base64," + base64.b64encode(picture(seed)).decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, files, log: Path, *flags: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {**os.environ, "PYTHONPATH": str(SRC)}
        self.t_start = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vlmserve.cli.main", "serve", "--model", str(files.model),
             "--mmproj", str(files.mmproj), "--port", str(self.port), "--no-ui", "--threads",
             "1", "--log-level", "warning", *flags], stdout=log.open("ab"),
            stderr=subprocess.STDOUT, env=env)
        while True:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.ready_s = round(time.monotonic() - self.t_start, 2)

    def tracebacks(self) -> int:
        return self.log.read_text(errors="replace").count("Traceback")


def chat(session: str | None = None, max_tokens: int = 8000, stream: bool = True,
         seed: int = 0) -> dict:
    body = {"model": "m", "max_tokens": max_tokens, "stream": stream, "temperature": 0,
            "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": uri(seed)}},
                {"type": "text", "text": "describe"}]}]}
    if session:
        body["session_id"] = session
    return body


def stream_into(url: str, body: dict, out: list, first: threading.Event) -> None:
    events: list[str] = []
    try:
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
                    if '"content":"' in line and '"content":""' not in line:
                        first.set()
        last = json.loads(events[-2]) if len(events) >= 2 else {}
        kind = "error " + last["error"]["code"] if "error" in last else "finish"
        out.append({"end": kind, "done": events[-1:] == ["[DONE]"]})
    except httpx.HTTPError as exc:
        out.append({"end": f"transport {type(exc).__name__}", "done": False})


def sigterm(files, tmp: Path) -> dict:
    server = Server(files, tmp / "sigterm.log", "--parallel", "4", "--shutdown-timeout", "2")
    out: list[dict] = []
    first = threading.Event()
    threads = [threading.Thread(target=stream_into, args=(server.url, chat(seed=i), out, first))
               for i in range(8)]
    for t in threads:
        t.start()
    first.wait(60)
    time.sleep(0.2)
    t0 = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    late = httpx.post(f"{server.url}/v1/chat/completions", json=chat(stream=False), timeout=10)
    for t in threads:
        t.join()
    rc = server.proc.wait(60)
    return {"streams": sorted(f"{o['end']}{' + [DONE]' if o['done'] else ''}" for o in out),
            "late_request": [late.status_code, late.json()["error"]["code"]],
            "exit_code": rc, "signal_to_exit_s": round(time.monotonic() - t0, 2),
            "tracebacks": server.tracebacks()}


def sigkill(files, tmp: Path) -> dict:
    cache = tmp / "cache"
    flags = ("--parallel", "4", "--image-cache-dir", str(cache))
    server = Server(files, tmp / "kill.log", *flags)
    before = httpx.post(f"{server.url}/v1/chat/completions",
                        json=chat("s1", max_tokens=4, stream=False, seed=7), timeout=60).json()
    out: list[dict] = []
    first = threading.Event()
    threads = [threading.Thread(target=stream_into, args=(server.url, chat(seed=i), out, first))
               for i in range(4)]
    for t in threads:
        t.start()
    first.wait(60)
    server.proc.send_signal(signal.SIGKILL)
    for t in threads:
        t.join()
    rc = server.proc.wait(10)
    again = Server(files, tmp / "kill.log", *flags, port=server.port)
    answer = httpx.post(f"{again.url}/v1/chat/completions",
                        json=chat("s1", max_tokens=4, stream=False, seed=7), timeout=60).json()
    again.proc.send_signal(signal.SIGTERM)
    return {"streams": sorted(o["end"] for o in out), "exit_code": rc,
            "restart_ready_s": again.ready_s,
            # Sessions live in memory: after the restart the same turn in session s1 has
            # the prompt of a first turn (its history is gone); the disk tier survives.
            "first_turn_prompt_tokens": before["usage"]["prompt_tokens"],
            "after_restart": {"image_disk_hits": answer["x_vlmserve"]["image_disk_hits"],
                              "same_turn_prompt_tokens": answer["usage"]["prompt_tokens"]},
            "second_exit_code": again.proc.wait(30), "tracebacks": again.tracebacks()}


def slowloris(files, tmp: Path, n: int = 200) -> dict:
    server = Server(files, tmp / "slow.log", "--header-timeout", "5")
    socks = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(n)]
    closed_at: list[float] = []
    t0 = time.monotonic()
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 60
    ok_latency: list[float] = []
    for i, byte in enumerate(head):
        for s in list(socks):
            try:
                s.sendall(bytes([byte]))
                s.setblocking(False)
                if s.recv(1) == b"":
                    raise ConnectionResetError
            except BlockingIOError:
                pass
            except OSError:
                closed_at.append(time.monotonic() - t0)
                socks.remove(s)
                s.close()
        if i % 2 == 0:
            t = time.monotonic()
            r = httpx.post(f"{server.url}/v1/chat/completions",
                           json=chat(max_tokens=4, stream=False), timeout=60)
            ok_latency.append(round(time.monotonic() - t, 2) if r.status_code == 200 else -1)
        if not socks:
            break
        time.sleep(1)
    for s in socks:
        s.close()
    server.proc.send_signal(signal.SIGTERM)
    closed_at.sort()
    return {"connections": n, "closed_by_server": len(closed_at),
            "closed_after_s": {"first": round(closed_at[0], 1) if closed_at else None,
                               "last": round(closed_at[-1], 1) if closed_at else None},
            "chat_seconds_meanwhile": ok_latency, "exit_code": server.proc.wait(30),
            "tracebacks": server.tracebacks()}


def disk_full(files, tmp: Path) -> dict:
    images = tmp / "imgs"
    images.mkdir()
    for i in range(24):
        (images / f"{i:02d}.png").write_bytes(picture(i))
    out = tmp / "results.jsonl"
    cmd = [sys.executable, "-m", "vlmserve.cli.main", "describe", str(images), "--output",
           str(out), "--model", str(files.model), "--mmproj", str(files.mmproj), "--threads",
           "1", "--max-tokens", "4"]
    env = {**os.environ, "PYTHONPATH": str(SRC)}

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (6000, 6000))

    full = subprocess.run(cmd, capture_output=True, text=True, env=env, preexec_fn=limit,
                          timeout=300)
    data = out.read_bytes()
    resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, env=env,
                             timeout=300)
    return {"exit_code": full.returncode, "message": full.stderr.strip().splitlines()[-1:],
            "bytes": len(data), "ends_with_whole_line": data.endswith(b"\n"),
            "lines": data.count(b"\n"), "resume_exit_code": resumed.returncode,
            "lines_after_resume": out.read_bytes().count(b"\n")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the document here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        files = write_demo_model(tmp / "model")
        doc = {"load_average_start": [round(x, 2) for x in os.getloadavg()]}
        for name, fault in (("sigterm", sigterm), ("sigkill_restart", sigkill),
                            ("slowloris", slowloris), ("disk_full", disk_full)):
            (tmp / name).mkdir()
            doc[name] = fault(files, tmp / name)
            print(name, json.dumps(doc[name]), file=sys.stderr, flush=True)
        doc["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(doc, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
