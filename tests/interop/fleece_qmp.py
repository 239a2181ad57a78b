"""QMP fleece commands: errors, the NAME@ID export, discard, a broken snapshot.

usage: fleece_qmp.py SOCKET QMP DISK_FILE

The server exports `d` (DISK_FILE, made by lib.sh make_image: 1 MiB chunk 3
is a hole) and `e` (a second disk for the broken-snapshot case).
"""
import errno
import os
import subprocess
import sys

import nbd

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "qmp"))
from qmp_client import QmpClient  # noqa: E402

sock, qmp_path, disk_file = sys.argv[1], sys.argv[2], sys.argv[3]
M = 1 << 20


def connect(name, contexts=()):
    h = nbd.NBD()
    for c in contexts:
        h.add_meta_context(c)
    h.connect_uri("nbd+unix:///%s?socket=%s" % (name, sock))
    return h


def still_serving():
    h = connect("d")
    assert h.pread(4096, 6 * M) == original[6 * M:6 * M + 4096]
    h.shutdown()


def nbd_errno(fn):
    try:
        fn()
    except nbd.Error as e:
        return e.errnum
    return 0


with open(disk_file, "rb") as fh:
    original = fh.read()

qmp = QmpClient(qmp_path, timeout=30)
qmp.negotiate()

# --- Bad requests: each a clear error, nothing half started, server serving.
bad = [
    (dict(id="x", devices=["nope"]), "DeviceNotFound", "Device 'nope' not found"),
    (dict(id="x"), "GenericError", "Parameter 'devices' is missing"),
    (dict(devices=["d"]), "GenericError", "Parameter 'id' is missing"),
    (dict(id="x", devices=[1]), "GenericError", "Invalid parameter type for 'devices[0]', expected: string"),
    (dict(id="x", devices="d"), "GenericError", "Invalid parameter type for 'devices', expected: array"),
    (dict(id="1x", devices=["d"]), "GenericError", "expects an identifier"),
    (dict(id="a/b", devices=["d"]), "GenericError", "expects an identifier"),
    (dict(id="x", devices=[]), "GenericError", "at least one device"),
    (dict(id="x", devices=["d", "d"]), "GenericError", "listed twice"),
    # Refused until dirty bitmaps come (issue 7); then a string is the wrong type.
    (dict(id="x", devices=["d"], bitmaps=["b0"]), "GenericError", ("'bitmaps' is not supported yet", "'bitmaps[0]'")),
    (dict(id="x", devices=["d"], cluster_size=1000), "GenericError", "power of two"),
    (dict(id="x", devices=["d"], granularity=1000), "GenericError", "'granularity' must be a power of two"),
    (dict(id="x", devices=["d"], granularity=2048), "GenericError", "'granularity' must be a power of two"),
    (dict(id="x", devices=["d"], granularity=131072), "GenericError", "'granularity' must be a power of two"),
    (dict(id="x", devices=["d"], cluster_size=8192, granularity=4096), "GenericError",
     "cluster-size at least 16384"),
    (dict(id="x", devices=["d"], cbw_timeout=-1), "GenericError", "'cbw-timeout' must be >= 0"),
    (dict(id="x", devices=["d"], on_cbw_error="ignore"), "GenericError",
     "Parameter 'on-cbw-error' does not accept value 'ignore'"),
    (dict(id="x", devices=["d"], speed=1), "GenericError", "Parameter 'speed' is unexpected"),
]
for args, klass, text in bad:
    k, desc = qmp.error("fleece-start", **args)
    texts = text if isinstance(text, tuple) else (text,)
    assert k == klass and any(t in desc for t in texts), (args, k, desc)
assert qmp.ok("query-fleeces") == []
k, desc = qmp.error("fleece-stop", id="never")
assert k == "GenericError" and "Fleece 'never' not found" in desc, desc
still_serving()

r = qmp.ok("fleece-start", id="e1", devices=["d"])
assert r["exports"] == ["d@e1"], r
k, desc = qmp.error("fleece-start", id="e1", devices=["e"])
assert "Fleece 'e1' already exists" in desc, desc
k, desc = qmp.error("fleece-start", id="e2", devices=["d"], granularity=8192)
assert "granularity 4096" in desc, desc
member = qmp.ok("query-fleeces")[0]["devices"][0]
assert member["cluster-size"] == 65536 and member["granularity"] == 4096, member
assert [f["id"] for f in qmp.ok("query-fleeces")] == ["e1"]
still_serving()

# --- The export: not read-only (so TRIM can be sent), writes refused, multi-conn,
# base:allocation describing the frozen image.
v = connect("d@e1", ["base:allocation"])
assert not v.is_read_only() and v.can_trim() and v.can_multi_conn(), "flags"
assert v.get_size() == len(original)
e = nbd_errno(lambda: v.pwrite(b"x" * 4096, 0))
assert e == errno.EPERM, "write to a frozen view: errno %r" % e
assert v.pread(2 * M, 2 * M) == original[2 * M:4 * M]
seen = []
v.block_status(M, 3 * M, lambda ctx, off, ents, err: seen.append((ctx, off, list(ents))))
ctx, off, ents = seen[0]
assert ctx == "base:allocation" and off == 3 * M and ents[1] & 1, seen  # chunk 3: a hole

# Writes to the live disk are not seen by the view; its store is a valid qcow2.
live = connect("d")
live.pwrite(b"\xaa" * (2 * M), 0)
live.flush()
assert v.pread(2 * M, 0) == original[:2 * M]
store = qmp.ok("query-fleeces")[0]["devices"][0]["store"]
subprocess.run(["qemu-img", "check", "-U", store], check=True, stdout=subprocess.DEVNULL)
info = subprocess.run(["qemu-img", "info", "-U", "--output=json", store], check=True,
                      capture_output=True, text=True).stdout
assert os.path.abspath(disk_file) in info and '"cluster-size": 65536' in info, info
assert '"extended-l2": true' in info, info  # 4 KiB copies in subclusters

# --- Discard on the view: those clusters read as EIO from then on; the rest is intact.
v.trim(M, 0)
assert nbd_errno(lambda: v.pread(4096, 4096)) == errno.EIO, "read after discard"
assert v.pread(M, M) == original[M:2 * M]
live.pwrite(b"\xbb" * M, 0)  # no copy needed any more; the view stays revoked
assert nbd_errno(lambda: v.pread(4096, 0)) == errno.EIO
subprocess.run(["qemu-img", "check", "-U", store], check=True, stdout=subprocess.DEVNULL)
v.shutdown()

# --- A store limit breaks the snapshot (break-snapshot): the guest write
# succeeds, FLEECE_BROKEN is sent, readers get EIO.
r = qmp.ok("fleece-start", id="small", devices=["e"], max_store_bytes=65536)
ve = connect("e@small")
le = connect("e")
le.pwrite(b"\x11" * (4 * 65536), 0)  # four first touches of data clusters
ev = qmp.event("FLEECE_BROKEN")
assert ev["data"]["id"] == "small" and ev["data"]["device"] == "e" and ev["data"]["reason"], ev
assert nbd_errno(lambda: ve.pread(4096, 0)) == errno.EIO
assert le.pread(4 * 65536, 0) == b"\x11" * (4 * 65536)
small = [f for f in qmp.ok("query-fleeces") if f["id"] == "small"][0]
assert small["devices"][0]["broken"] is True and small["max-store-bytes"] == 65536, small

# --- fleece-stop closes connected clients and deletes the store.
assert qmp.ok("fleece-stop", id="small") == {}
assert nbd_errno(lambda: ve.pread(4096, 0)) != 0
qmp.ok("fleece-stop", id="e1")
assert not os.path.exists(store)
assert qmp.ok("query-fleeces") == []
still_serving()
print("fleece_qmp: ok", file=sys.stderr)
