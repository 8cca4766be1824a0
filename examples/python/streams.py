"""evring's RESP port with redis-py: a durable Redis Streams server.

    pip install redis
    python3 examples/python/streams.py [PORT]     # evringd's resp_listen, default 6380

Every write below is acknowledged only once it is on disk (fsynced), as Redis with
`appendfsync always` does.
"""
import sys
import threading

import redis

port = int(sys.argv[1]) if len(sys.argv) > 1 else 6380
r = redis.Redis(host="127.0.0.1", port=port, decode_responses=True)
r.delete("orders", "{user1}.cart", "{user1}.payments")

# Append entries: the server chooses IDs ('*'), or you give them.
r.xadd("orders", {"item": "book", "qty": 2})
r.xadd("orders", {"item": "pen", "qty": 10})
print("xlen:", r.xlen("orders"))
for entry_id, fields in r.xrange("orders", "-", "+"):
    print("entry:", fields)

# A blocked reader is woken by the next durable XADD.
got = []
reader = threading.Thread(
    target=lambda: got.extend(
        redis.Redis(port=port, decode_responses=True).xread({"orders": "$"}, block=5000)
    )
)
reader.start()
while int(r.info("clients")["blocked_clients"]) == 0:
    pass
r.xadd("orders", {"item": "lamp", "qty": 1})
reader.join()
print("xread woke with:", got[0][1][0][1])

# A transaction: keys with one hash tag share a partition, and the writes of one EXEC
# are one atomic journal write (all durable, or none after a crash).
with r.pipeline(transaction=True) as tx:
    tx.xadd("{user1}.cart", {"item": "book"})
    tx.xadd("{user1}.payments", {"amount": "12.50"})
    ids = tx.execute()
print("transaction wrote", len(ids), "entries")

# Trimming and deletion are durable too.
# Exact (approximate=False): with "~" only whole nodes of 100 entries go.
print("trimmed:", r.xtrim("orders", maxlen=1, approximate=False))
print("left:", r.xlen("orders"))

# Consumer groups: each entry goes to one consumer of the group and stays pending until it
# is acknowledged; a delivery and an acknowledgement are durable before their replies.
r.xgroup_create("jobs", "workers", id="0", mkstream=True)
for n in range(3):
    r.xadd("jobs", {"n": n})


def entries(reply):
    # RESP3 (redis-py's default) gives a map of key to entries, RESP2 a list of pairs.
    return list(reply.values())[0][0] if isinstance(reply, dict) else reply[0][1]


w1 = entries(r.xreadgroup("workers", "w1", {"jobs": ">"}, count=2))
w2 = entries(r.xreadgroup("workers", "w2", {"jobs": ">"}, count=2))
print("w1 got", [f["n"] for _, f in w1], "and w2 got", [f["n"] for _, f in w2])
print("acknowledged:", r.xack("jobs", "workers", *[i for i, _ in w1]))
print("pending:", r.xpending("jobs", "workers")["pending"])

# evring's own operations: an append with an expected version, then a read.
print(r.execute_command("EV.APPEND", "ledger-1", "NO-STREAM", "opened", '{"owner":"ann"}'))
print(r.execute_command("EV.READ", "ledger-1", 0, 10))
