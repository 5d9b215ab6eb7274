"""Writes through redis-py for SECONDS, one SET at a time, and records each acknowledged key.

Usage: redis_py_writer.py SECONDS OUT_FILE, with RESP_PORTS (the first is used), RESP_TOKEN
and RESP_PREFIX in the environment. Key i holds "v-" + key. Exits 1 if any SET failed: the
node's own client retries through a failover, so redis-py should never see an error.
"""
import os
import sys
import time

import redis

seconds = float(sys.argv[1])
out_file = sys.argv[2]
port = int(os.environ["RESP_PORTS"].split(",")[0])
prefix = os.environ.get("RESP_PREFIX", "kill:")
r = redis.Redis(host="127.0.0.1", port=port, password=os.environ["RESP_TOKEN"], socket_timeout=30)
acked = []
errors = []
slowest = 0.0
deadline = time.time() + seconds
i = 0
while time.time() < deadline:
    # Spread over the key space: the first characters vary with i.
    key = f"{i % 97:02d}{prefix}{i}"
    started = time.time()
    try:
        r.set(key, "v-" + key)
        acked.append(key)
    except redis.exceptions.RedisError as e:
        errors.append(f"{key}: {e}")
    slowest = max(slowest, time.time() - started)
    i += 1
with open(out_file, "w") as f:
    f.write("\n".join(acked) + "\n")
print(f"{len(acked)} acknowledged, {len(errors)} errors, slowest SET {slowest * 1000:.0f} ms")
for e in errors[:10]:
    print("error:", e)
sys.exit(1 if errors else 0)
