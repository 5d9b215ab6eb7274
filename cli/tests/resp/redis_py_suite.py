"""Every command of Ampstore's Redis interface through redis-py, against a running cluster.

Run by cli/tests/resp_process.rs with the environment:
  RESP_PORTS    comma-separated RESP ports of the cluster's nodes (the first is used most)
  RESP_TOKEN    the cluster credential (cluster.token)
  RESP_ADMIN    the admin credential (admin.token)
  RESP_PREFIX   a prefix for every key this run writes
Exits non-zero on the first failed check, printing it.
"""
import os
import sys
import time

import redis

PORTS = [int(p) for p in os.environ["RESP_PORTS"].split(",")]
TOKEN = os.environ["RESP_TOKEN"]
ADMIN = os.environ["RESP_ADMIN"]
P = os.environ.get("RESP_PREFIX", "py:")
checks = 0


def check(cond, what):
    global checks
    checks += 1
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


def eq(got, want, what):
    check(got == want, f"{what}: got {got!r}, want {want!r}")


def raises(fn, text, what):
    try:
        fn()
    except redis.exceptions.ResponseError as e:
        check(text in str(e), f"{what}: error {e!r} does not contain {text!r}")
        return
    check(False, f"{what}: no error")


def conn(port=None, protocol=2, password=TOKEN):
    return redis.Redis(host="127.0.0.1", port=port or PORTS[0], password=password, protocol=protocol,
                       socket_timeout=30, decode_responses=False)


def k(name):
    return (P + name).encode()


def connection_commands(r):
    eq(r.ping(), True, "PING")
    eq(r.echo(b"hi"), b"hi", "ECHO")
    check(r.execute_command("SELECT", 0) in (True, b"OK"), "SELECT 0")
    raises(lambda: r.execute_command("SELECT", 1), "DB index is out of range", "SELECT 1")
    eq(r.client_setname("tester"), True, "CLIENT SETNAME")
    check(r.client_getname() in ("tester", b"tester"), "CLIENT GETNAME")
    check(isinstance(r.client_id(), int), "CLIENT ID")
    info = r.client_info()
    eq(info["name"], "tester", "CLIENT INFO name")
    raises(lambda: r.execute_command("CLIENT", "SETNAME", "a b"), "cannot contain spaces", "CLIENT SETNAME space")
    server = r.info("server")
    check("redis_version" in server and "ampstore_version" in server, f"INFO server: {server}")
    eq(r.info("replication")["role"], "master", "INFO replication role")
    check("connected_clients" in r.info("clients"), "INFO clients")
    check(r.info("memory")["used_memory"] > 0, "INFO memory")
    check(isinstance(r.dbsize(), int), "DBSIZE")
    secs, micros = r.time()
    check(abs(secs - time.time()) < 5 and 0 <= micros < 1_000_000, f"TIME: {secs} {micros}")
    check(len(r.command()) > 40, "COMMAND")
    check(r.command_count() > 40, "COMMAND COUNT")
    raises(lambda: r.execute_command("NOSUCHCOMMAND", "a"), "unknown command 'NOSUCHCOMMAND'", "unknown command")
    eq(r.ping(), True, "still connected after an unknown command")
    raises(lambda: r.execute_command("GET"), "wrong number of arguments for 'get' command", "arity")
    raises(lambda: r.execute_command("LPUSH", k("l"), "x"), "append-only", "LPUSH refused")
    raises(lambda: r.execute_command("FLUSHDB"), "needs the admin credential", "FLUSHDB with the cluster credential")
    # HELLO 3 and RESP3 replies.
    r3 = conn(protocol=3)
    eq(r3.ping(), True, "RESP3 PING")
    hello = r3.execute_command("HELLO", 3, "AUTH", "default", TOKEN)
    eq(hello[b"proto"], 3, "HELLO 3 proto")
    r3.set(k("r3"), "v")
    eq(r3.get(k("r3")), b"v", "RESP3 GET")
    eq(r3.get(k("r3-missing")), None, "RESP3 nil")
    raises(lambda: r3.execute_command("HELLO", 4), "NOPROTO", "HELLO 4")
    # Credentials.
    try:
        conn(password=None).get(k("x"))
        check(False, "a command before AUTH was answered")
    except redis.exceptions.AuthenticationError as e:
        check("Authentication required" in str(e), f"a command before AUTH: {e!r}")
    try:
        conn(password="wrong").ping()
        check(False, "a wrong password was accepted")
    except redis.exceptions.AuthenticationError:
        check(True, "")
    r.execute_command("QUIT")


def string_commands(r):
    eq(r.set(k("s"), "v1"), True, "SET")
    eq(r.get(k("s")), b"v1", "GET")
    eq(r.get(k("nothing")), None, "GET missing")
    eq(r.set(k("s"), "v2", nx=True), None, "SET NX on an existing key")
    eq(r.set(k("new"), "n", nx=True), True, "SET NX on a new key")
    eq(r.set(k("absent"), "x", xx=True), None, "SET XX on a missing key")
    eq(r.exists(k("absent")), 0, "SET XX created nothing")
    eq(r.set(k("s"), "v3", xx=True), True, "SET XX on an existing key")
    eq(r.set(k("s"), "v4", get=True), b"v3", "SET GET")
    eq(r.set(k("s"), "v5", ex=100), True, "SET EX")
    check(95 <= r.ttl(k("s")) <= 100, "TTL after SET EX")
    eq(r.set(k("s"), "v6", keepttl=True), True, "SET KEEPTTL")
    check(90 <= r.ttl(k("s")) <= 100, f"TTL kept: {r.ttl(k('s'))}")
    r.set(k("s"), "v7")
    eq(r.ttl(k("s")), -1, "plain SET clears the TTL")
    r.set(k("px"), "v", px=5000)
    check(4000 <= r.pttl(k("px")) <= 5000, "SET PX")
    r.set(k("exat"), "v", exat=int(time.time()) + 50)
    check(45 <= r.ttl(k("exat")) <= 51, "SET EXAT")
    r.set(k("pxat"), "v", pxat=int(time.time() * 1000) + 50_000)
    check(45 <= r.ttl(k("pxat")) <= 51, "SET PXAT")
    raises(lambda: r.set(k("bad"), "v", ex=0), "invalid expire time in 'set' command", "SET EX 0")
    raises(lambda: r.execute_command("SET", k("bad"), "v", "NX", "XX"), "syntax error", "SET NX XX")
    eq(r.setnx(k("s"), "x"), False, "SETNX existing")
    eq(r.setnx(k("setnx"), "x"), True, "SETNX new")
    eq(r.setex(k("setex"), 100, "v"), True, "SETEX")
    check(95 <= r.ttl(k("setex")) <= 100, "SETEX TTL")
    eq(r.psetex(k("psetex"), 100_000, "v"), True, "PSETEX")
    check(95 <= r.ttl(k("psetex")) <= 100, "PSETEX TTL")
    eq(r.getset(k("s"), "g"), b"v7", "GETSET")
    eq(r.getdel(k("s")), b"g", "GETDEL")
    eq(r.get(k("s")), None, "GETDEL deleted")
    eq(r.getdel(k("s")), None, "GETDEL missing")
    r.set(k("gx"), "v")
    eq(r.getex(k("gx"), ex=100), b"v", "GETEX EX")
    check(95 <= r.ttl(k("gx")) <= 100, "GETEX set the TTL")
    eq(r.getex(k("gx"), persist=True), b"v", "GETEX PERSIST")
    eq(r.ttl(k("gx")), -1, "GETEX PERSIST removed the TTL")
    eq(r.getex(k("gx-missing"), ex=5), None, "GETEX missing")
    eq(r.mset({k("m1"): "a", k("m2"): "b", k("m3"): "c"}), True, "MSET")
    check(r.execute_command("MSET", k("dup"), "1", k("dup"), "2") in (True, b"OK"), "MSET with a key twice")
    eq(r.get(k("dup")), b"2", "MSET: the last value of a key given twice wins")
    eq(r.mget([k("m1"), k("m2"), k("nothing"), k("m3")]), [b"a", b"b", None, b"c"], "MGET")
    eq(r.msetnx({k("m1"): "x", k("m4"): "d"}), False, "MSETNX with an existing key")
    eq(r.exists(k("m4")), 0, "MSETNX wrote nothing")
    eq(r.msetnx({k("m4"): "d", k("m5"): "e"}), True, "MSETNX all new")
    eq(r.mget([k("m4"), k("m5")]), [b"d", b"e"], "MSETNX wrote both")
    eq(r.append(k("ap"), "Hello"), 5, "APPEND new")
    eq(r.append(k("ap"), " World"), 11, "APPEND")
    eq(r.get(k("ap")), b"Hello World", "APPEND value")
    eq(r.strlen(k("ap")), 11, "STRLEN")
    eq(r.strlen(k("nothing")), 0, "STRLEN missing")
    eq(r.getrange(k("ap"), 0, 4), b"Hello", "GETRANGE")
    eq(r.getrange(k("ap"), -5, -1), b"World", "GETRANGE negative")
    eq(r.getrange(k("ap"), 5, 3), b"", "GETRANGE empty")
    eq(r.setrange(k("ap"), 6, "Redis"), 11, "SETRANGE")
    eq(r.get(k("ap")), b"Hello Redis", "SETRANGE value")
    eq(r.setrange(k("sr"), 3, "x"), 4, "SETRANGE pads")
    eq(r.get(k("sr")), b"\x00\x00\x00x", "SETRANGE zero padding")
    raises(lambda: r.setrange(k("sr"), -1, "x"), "offset is out of range", "SETRANGE negative")
    r.set(k("bin"), b"\x00\xff\r\n")
    eq(r.get(k("bin")), b"\x00\xff\r\n", "binary-safe values")
    # A framing error closes its connection (as in Redis): on a connection of its own.
    raises(lambda: conn().set(k("big"), b"x" * (256 * 1024 + 1)), "RESP_BULK_BYTES_MAX", "a value over the limit")
    eq(r.set(k("big"), b"x" * (256 * 1024)), True, "a value at the limit")
    eq(r.strlen(k("big")), 256 * 1024, "STRLEN at the limit")


def counter_commands(r):
    eq(r.incr(k("c")), 1, "INCR new")
    eq(r.incr(k("c")), 2, "INCR")
    eq(r.decr(k("c")), 1, "DECR")
    eq(r.incrby(k("c"), 10), 11, "INCRBY")
    eq(r.decrby(k("c"), 5), 6, "DECRBY")
    eq(r.get(k("c")), b"6", "counter value")
    r.set(k("notint"), "abc")
    raises(lambda: r.incr(k("notint")), "value is not an integer or out of range", "INCR on text")
    r.set(k("max"), str(2**63 - 1))
    raises(lambda: r.incr(k("max")), "overflow", "INCR overflow")
    raises(lambda: r.incrby(k("c"), "x"), "not an integer", "INCRBY x")
    eq(r.incrbyfloat(k("f"), 10.5), 10.5, "INCRBYFLOAT new")
    eq(r.incrbyfloat(k("f"), 0.1), 10.6, "INCRBYFLOAT")
    r.set(k("f2"), "5.0e3")
    eq(r.incrbyfloat(k("f2"), 2.0e2), 5200.0, "INCRBYFLOAT exponent")
    eq(r.get(k("f2")), b"5200", "INCRBYFLOAT value printed like Redis")
    raises(lambda: r.incrbyfloat(k("notint"), 1), "not a valid float", "INCRBYFLOAT on text")
    r.set(k("cttl"), "1", ex=100)
    r.incr(k("cttl"))
    check(r.ttl(k("cttl")) > 90, "INCR keeps the TTL")


def key_commands(r):
    r.mset({k("d1"): "1", k("d2"): "2"})
    eq(r.delete(k("d1"), k("d2"), k("nothing")), 2, "DEL counts")
    r.set(k("u1"), "1")
    eq(r.unlink(k("u1")), 1, "UNLINK")
    r.set(k("e1"), "1")
    eq(r.exists(k("e1"), k("e1"), k("nothing")), 2, "EXISTS counts repeats")
    eq(r.type(k("e1")), b"string", "TYPE string")
    eq(r.type(k("nothing")), b"none", "TYPE none")
    r.rpush(k("list"), "a")
    eq(r.type(k("list")), b"list", "TYPE list")
    eq(r.expire(k("e1"), 100), True, "EXPIRE")
    check(95 <= r.ttl(k("e1")) <= 100, "TTL")
    eq(r.expire(k("e1"), 200, nx=True), False, "EXPIRE NX with a TTL")
    eq(r.expire(k("e1"), 200, xx=True), True, "EXPIRE XX with a TTL")
    eq(r.expire(k("e1"), 50, gt=True), False, "EXPIRE GT smaller")
    eq(r.expire(k("e1"), 50, lt=True), True, "EXPIRE LT smaller")
    raises(lambda: r.execute_command("EXPIRE", k("e1"), 5, "NX", "XX"), "not compatible", "EXPIRE NX XX")
    eq(r.expire(k("nothing"), 100), False, "EXPIRE missing")
    eq(r.pexpire(k("e1"), 80_000), True, "PEXPIRE")
    check(75_000 <= r.pttl(k("e1")) <= 80_000, "PTTL")
    at = int(time.time()) + 300
    eq(r.expireat(k("e1"), at), True, "EXPIREAT")
    eq(r.expiretime(k("e1")), at, "EXPIRETIME")
    eq(r.pexpireat(k("e1"), at * 1000 + 500), True, "PEXPIREAT")
    # From the time left and this node's clock: within a few ms of the absolute time.
    check(abs(r.pexpiretime(k("e1")) - (at * 1000 + 500)) <= 50, "PEXPIRETIME")
    eq(r.ttl(k("nothing")), -2, "TTL missing")
    eq(r.pttl(k("nothing")), -2, "PTTL missing")
    eq(r.persist(k("e1")), True, "PERSIST")
    eq(r.ttl(k("e1")), -1, "TTL persistent")
    eq(r.persist(k("e1")), False, "PERSIST without a TTL")
    eq(r.expiretime(k("e1")), -1, "EXPIRETIME persistent")
    r.set(k("gone"), "1")
    eq(r.expire(k("gone"), -1), True, "EXPIRE in the past")
    eq(r.exists(k("gone")), 0, "EXPIRE in the past deleted it")
    r.set(k("short"), "1", px=300)
    time.sleep(0.5)
    eq(r.get(k("short")), None, "an expired key is absent")
    r.set(k("src"), "v", ex=100)
    eq(r.rename(k("src"), k("dst")), True, "RENAME")
    eq(r.get(k("dst")), b"v", "RENAME moved the value")
    eq(r.exists(k("src")), 0, "RENAME removed the source")
    check(r.ttl(k("dst")) > 90, "RENAME kept the TTL")
    raises(lambda: r.rename(k("src"), k("dst")), "no such key", "RENAME missing")
    r.set(k("src"), "w")
    eq(r.renamenx(k("src"), k("dst")), False, "RENAMENX onto an existing key")
    eq(r.renamenx(k("src"), k("dst2")), True, "RENAMENX")
    eq(r.get(k("dst2")), b"w", "RENAMENX value")
    # SCAN, KEYS, RANDOMKEY over keys of their own prefix.
    names = [k(f"scan:{i:03d}") for i in range(250)]
    r.mset({n: "x" for n in names})
    seen = []
    cursor = 0
    while True:
        cursor, batch = r.scan(cursor=cursor, match=P + "scan:*", count=40)
        seen.extend(batch)
        if cursor == 0:
            break
    eq(sorted(seen), names, "SCAN MATCH visits every key once")
    eq(sorted(r.scan_iter(match=P + "scan:1?5")), [k("scan:105"), k("scan:115"), k("scan:125"), k("scan:135"),
       k("scan:145"), k("scan:155"), k("scan:165"), k("scan:175"), k("scan:185"), k("scan:195")], "SCAN ?")
    eq(len(list(r.scan_iter(match=P + "scan:*", _type="string"))), 250, "SCAN TYPE string")
    eq(list(r.scan_iter(match=P + "scan:*", _type="list")), [], "SCAN TYPE list")
    raises(lambda: r.scan(cursor=12345), "invalid cursor", "SCAN with a foreign cursor")
    eq(sorted(r.keys(P + "scan:0[0-1]*")), names[:20], "KEYS with a class")
    check(r.randomkey() is not None, "RANDOMKEY")


def list_commands(r):
    eq(r.rpush(k("l1"), "a", "b", "c"), 3, "RPUSH")
    eq(r.rpush(k("l1"), "d"), 4, "RPUSH again")
    eq(r.llen(k("l1")), 4, "LLEN")
    eq(r.lrange(k("l1"), 0, -1), [b"a", b"b", b"c", b"d"], "LRANGE all")
    eq(r.lrange(k("l1"), 1, 2), [b"b", b"c"], "LRANGE middle")
    eq(r.lrange(k("l1"), -2, -1), [b"c", b"d"], "LRANGE negative")
    eq(r.lindex(k("l1"), 0), b"a", "LINDEX")
    eq(r.lindex(k("l1"), -1), b"d", "LINDEX negative")
    eq(r.lindex(k("l1"), 10), None, "LINDEX out of range")
    eq(r.llen(k("nolist")), 0, "LLEN missing")
    eq(r.rpushx(k("nolist"), "x"), 0, "RPUSHX missing")
    eq(r.rpushx(k("l1"), "e"), 5, "RPUSHX")
    r.set(k("str"), "x")
    raises(lambda: r.rpush(k("str"), "x"), "WRONGTYPE", "RPUSH on a string")
    raises(lambda: r.get(k("l1")), "WRONGTYPE", "GET on a list")
    for cmd in ("LPOP", "RPOP", "LSET", "LREM", "LTRIM", "LINSERT"):
        raises(lambda: r.execute_command(cmd, k("l1"), "0", "x"), "append-only", f"{cmd} refused")


def rpush_is_atomic():
    """RPUSH of several elements is one step, as in Redis: two connections pushing blocks of
    20 at once never interleave their blocks."""
    import threading
    name = k("atomic-list")

    def pusher(tag):
        c = conn()
        for i in range(8):
            c.rpush(name, *[f"{tag}{i}:{j}" for j in range(20)])

    threads = [threading.Thread(target=pusher, args=(t,)) for t in ("A", "B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    items = [x.decode() for x in conn().lrange(name, 0, -1)]
    eq(len(items), 320, "every pushed element is there")
    for b in range(0, 320, 20):
        block = items[b:b + 20]
        tag = block[0].split(":")[0]
        eq(block, [f"{tag}:{j}" for j in range(20)], f"block {b // 20} is one RPUSH, in order")


def transactions(r):
    p = r.pipeline(transaction=True)
    p.set(k("t1"), "a").get(k("t1")).incr(k("tc")).incr(k("tc")).mget([k("t1"), k("tc")]).delete(k("t1")).exists(k("t1"))
    eq(p.execute(), [True, b"a", 1, 2, [b"a", b"2"], 1, 0], "MULTI/EXEC sees its own writes in order")
    # WATCH: a change by another connection makes EXEC answer nil.
    r.set(k("w"), "0")
    other = conn()
    with r.pipeline() as p:
        p.watch(k("w"))
        p.multi()
        p.set(k("w"), "mine")
        other.set(k("w"), "theirs")
        try:
            p.execute()
            check(False, "EXEC after a watched key changed did not abort")
        except redis.exceptions.WatchError:
            check(True, "")
    eq(r.get(k("w")), b"theirs", "the aborted transaction wrote nothing")
    with r.pipeline() as p:
        p.watch(k("w"))
        p.multi()
        p.set(k("w"), "mine")
        eq(p.execute(), [True], "EXEC with an unchanged watched key")
    eq(r.get(k("w")), b"mine", "the transaction wrote")
    # An unsupported command queued inside MULTI aborts EXEC.
    raw = conn()
    raw.execute_command("MULTI")
    raises(lambda: raw.execute_command("APPEND", k("x"), "y"), "not supported inside MULTI", "APPEND in MULTI")
    raises(lambda: raw.execute_command("EXEC"), "Transaction discarded because of previous errors", "EXECABORT")
    raises(lambda: raw.execute_command("EXEC"), "EXEC without MULTI", "EXEC without MULTI")
    raw.execute_command("MULTI")
    raw.execute_command("SET", k("disc"), "x")
    check(raw.execute_command("DISCARD") in (True, b"OK"), "DISCARD")
    eq(r.exists(k("disc")), 0, "DISCARD wrote nothing")
    check(raw.execute_command("UNWATCH") in (True, b"OK"), "UNWATCH")


def big_pipeline(r):
    p = r.pipeline(transaction=False)
    for i in range(10_000):
        p.set(k(f"pipe:{i}"), str(i))
    for i in range(10_000):
        p.get(k(f"pipe:{i}"))
    out = p.execute()
    eq(out[:10_000], [True] * 10_000, "10,000 pipelined SETs")
    eq(out[10_000:], [str(i).encode() for i in range(10_000)], "10,000 pipelined GETs")
    p = r.pipeline(transaction=False)
    for i in range(10_000):
        p.incr(k("pipe:counter"))
    eq(p.execute()[-1], 10_000, "10,000 pipelined INCRs")


def admin_commands():
    admin = conn(password=ADMIN)
    eq(admin.ping(), True, "the admin credential")
    # FLUSHDB is checked by the Rust test at the end (it deletes every key).


def every_node_sees_every_key():
    for port in PORTS:
        r = conn(port)
        eq(r.get(k("m1")), b"a", f"node on port {port} reads a key written through another")
        eq(r.get(k("pipe:9999")), b"9999", f"node on port {port} reads the pipeline's keys")


def cross_range_transactions(r):
    """Run after the big pipeline split the key space: the first and last keys below are in
    different ranges (the Rust test checks), so these transactions span ranges."""
    lo, hi = ("!" + P + "x").encode(), ("~" + P + "y").encode()
    eq(r.mset({lo: "1", hi: "1"}), True, "MSET across ranges")
    p = r.pipeline(transaction=True)
    p.incr(lo).incr(hi).mget([lo, hi])
    eq(p.execute(), [2, 2, [b"2", b"2"]], "MULTI/EXEC across ranges")
    other = conn(PORTS[-1])
    with r.pipeline() as p:
        p.watch(lo, hi)
        p.multi()
        p.set(lo, "mine")
        p.set(hi, "mine")
        other.set(hi, "theirs")
        try:
            p.execute()
            check(False, "EXEC across ranges after a watched key changed did not abort")
        except redis.exceptions.WatchError:
            check(True, "")
    eq(r.mget([lo, hi]), [b"2", b"theirs"], "the aborted cross-range transaction wrote nothing")
    eq(r.rename(lo, hi), True, "RENAME across ranges")
    eq(r.mget([lo, hi]), [None, b"2"], "RENAME across ranges moved the value")


def main():
    r = conn()
    connection_commands(conn())
    string_commands(r)
    counter_commands(r)
    key_commands(r)
    list_commands(r)
    rpush_is_atomic()
    transactions(r)
    big_pipeline(r)
    admin_commands()
    every_node_sees_every_key()
    cross_range_transactions(r)
    print(f"ok: {checks} checks passed")


if __name__ == "__main__":
    main()
