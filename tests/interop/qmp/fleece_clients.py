"""query-fleeces: each client of NAME@ID reports its own read-bytes.

usage: fleece_clients.py SOCKET QMP

The server exports `d` (16 MiB made by lib.sh make_image). Two libnbd clients
read different amounts from d@c1; each client entry must show exactly the
bytes of its own successful READs, a failed READ (of a discarded range)
counts nothing, reads of the live export `d` count nowhere in the fleece,
and the member's read-bytes is their sum.
"""
import errno
import os
import sys
import time

import nbd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmp_client import QmpClient  # noqa: E402

sock, qmp_path = sys.argv[1], sys.argv[2]
K, M = 1 << 10, 1 << 20


def connect(name):
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///%s?socket=%s" % (name, sock))
    return h


def member():
    fleeces = qmp.ok("query-fleeces")
    assert len(fleeces) == 1 and fleeces[0]["id"] == "c1", fleeces
    (dev,) = fleeces[0]["devices"]
    assert dev["export"] == "d@c1", dev
    return dev


def figures():
    """{client id: read-bytes} of d@c1's clients."""
    dev = member()
    for c in dev["clients"]:
        assert set(c) == {"id", "address", "read-bytes"}, c
        assert c["address"] == "unix", c
    return {c["id"]: c["read-bytes"] for c in dev["clients"]}


qmp = QmpClient(qmp_path, timeout=30)
qmp.negotiate()
assert qmp.ok("fleece-start", id="c1", devices=["d"])["exports"] == ["d@c1"]

a = connect("d@c1")
got = figures()
assert list(got.values()) == [0], got
(id_a,) = got

# Client A: three 64 KiB reads and one of 1 MiB, some over holes (counted:
# the client received those bytes, as hole chunks).
for off in (0, 64 * K, 3 * M):
    a.pread(64 * K, off)
a.pread(M, 5 * M)
want_a = 3 * 64 * K + M
assert figures() == {id_a: want_a}, figures()

# Client B: five 4 KiB reads and a 512-byte one.
b = connect("d@c1")
for i in range(5):
    b.pread(4 * K, 8 * M + i * 4 * K)
b.pread(512, 9 * M + 512)
want_b = 5 * 4 * K + 512
got = figures()
(id_b,) = set(got) - {id_a}
assert got == {id_a: want_a, id_b: want_b}, got

# A failed READ counts nothing: B discards a cluster, then reads it (EIO).
b.trim(64 * K, 12 * M)
try:
    b.pread(4 * K, 12 * M)
    raise AssertionError("read of a discarded range succeeded")
except nbd.Error as e:
    assert e.errnum == errno.EIO, e
assert figures() == {id_a: want_a, id_b: want_b}, figures()

# Reads of the live export are not the fleece's.
live = connect("d")
live.pread(M, 0)
assert figures() == {id_a: want_a, id_b: want_b}, figures()
live.shutdown()

# The member's total is the sum of its clients' (nobody else read d@c1).
assert member()["read-bytes"] == want_a + want_b, member()

# A gone client leaves the list; the other keeps its figure.
a.shutdown()
for _ in range(100):
    if id_a not in figures():
        break
    time.sleep(0.05)
assert figures() == {id_b: want_b}, figures()
b.pread(4 * K, 0)
assert figures() == {id_b: want_b + 4 * K}, figures()
b.shutdown()

qmp.ok("fleece-stop", id="c1")
print("fleece_clients: ok")
