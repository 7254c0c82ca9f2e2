"""kill -9 during a pipelining flood, in durable mode: nothing acknowledged may be lost.

Usage: python3 bench/kill_under_flood.py BINARY [SECONDS] [FLOODERS]
Starts BINARY with a fresh --data-dir, runs 8 keep-alive writers (POST /ingest, 1 to 9 ids)
and FLOODERS connections that pipeline GET /health without reading, kills the server with
SIGKILL after SECONDS, restarts it on the same directory, and checks every acknowledged
ingestion is back with its ids in order. Prints one JSON line; exits 1 if any was lost.
"""
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

binary = sys.argv[1]
seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 4
flooders = int(sys.argv[3]) if len(sys.argv) > 3 else 150
data = tempfile.mkdtemp(prefix="ingestd-kill-")


def start():
    args = [binary, "--addr", "127.0.0.1:0", "--data-dir", data, "--interval", "20ms", "--fetch-delay", "0s"]
    server = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in server.stdout:
        if "listening on" in line:
            threading.Thread(target=server.stdout.read, daemon=True).start()
            return server, int(line.strip().rsplit(":", 1)[1].strip("/ "))
    sys.exit("the server did not start")


server, port = start()
acknowledged, stop = [], threading.Event()


def writer(k):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    n = 0
    while not stop.is_set():
        ids = [k * 1_000_000 + n * 10 + i + 1 for i in range(random.randint(1, 9))]
        n += 1
        try:
            conn.request("POST", "/ingest", json.dumps({"ids": ids, "priority": random.choice(["HIGH", "MEDIUM", "LOW"])}))
            answer = conn.getresponse()
            body = answer.read()
        except (OSError, http.client.HTTPException):
            return
        if answer.status == 200:
            acknowledged.append((json.loads(body)["ingestion_id"], ids))


def flooder():
    try:
        conn = socket.create_connection(("127.0.0.1", port))
    except OSError:
        return
    conn.setblocking(False)
    requests = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 100
    while not stop.is_set():
        try:
            conn.send(requests)
        except BlockingIOError:
            time.sleep(0.01)
        except OSError:
            return


writers = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
for thread in writers + [threading.Thread(target=flooder, daemon=True) for _ in range(flooders)]:
    thread.start()
time.sleep(seconds)
os.kill(server.pid, signal.SIGKILL)
server.wait()
stop.set()
for thread in writers:
    thread.join()
server, port = start()
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
lost = 0
for ingestion_id, ids in acknowledged:
    conn.request("GET", "/status/" + ingestion_id)
    answer = conn.getresponse()
    status = json.loads(answer.read())
    found = [i for batch in status.get("batches", []) for i in batch["ids"]] if answer.status == 200 else None
    lost += found != ids
server.kill()
server.wait()
shutil.rmtree(data, ignore_errors=True)
print(json.dumps({"flooders": flooders, "seconds": seconds, "acknowledged": len(acknowledged), "lost": lost}))
sys.exit(1 if lost else 0)
