#!/usr/bin/python3
"""blockdev-snapshot-sync while a client writes: base.img <- top.qcow2
served as a qcow2 disk; a libnbd writer keeps random writes going (and a
model of them) while a snapshot makes snap.qcow2 the active layer. Then the
export serves exactly the model, query-block and qemu-img info show
snap.qcow2 -> top.qcow2 -> base.img, qemu-img check passes, the files hold
the model, and qemu:allocation-depth equals qemu-nbd -A's for the new chain.
A second snapshot onto the same file is refused while serving goes on.
"""
import os
import random
import subprocess
import threading
import time

import nbd

from chain_lib import (MiB, Fleece, chain_files, check_image, depth_map, flat, log, main, qemu_io,
                       qemu_nbd_depth_map, same_content, scratch)

SIZE = 16 * MiB
WRITTEN = 8 * MiB  # the writer's region: the rest keeps its old depths


def writer(uri, model, stop, counts):
    h = nbd.NBD()
    h.connect_uri(uri)
    rng = random.Random(7)
    try:
        while not stop.is_set():
            n = rng.randrange(1, 33) * 2048
            off = rng.randrange(0, (WRITTEN - n) // 512) * 512
            data = rng.randbytes(n)
            h.pwrite(data, off)
            model[off:off + n] = data
            counts[0] += 1
        h.flush()
    finally:
        h.shutdown()


def test():
    d = scratch()
    base, top, snap = (os.path.join(d, n) for n in ("base.img", "top.qcow2", "snap.qcow2"))
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", base, "16M"], check=True, timeout=30)
    qemu_io(base, "raw", "write -P 0x11 0 6M", "write -P 0x12 10M 2M")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.img", "-F", "raw", "top.qcow2"],
                   cwd=d, check=True, timeout=30)
    qemu_io(top, "qcow2", "write -P 0x21 4M 4M", "write -z 12M 1M")
    model = bytearray(flat(d, top))

    srv = Fleece(d, [("vm", top, "qcow2", False)])
    m = srv.monitor()
    stop, counts = threading.Event(), [0]
    t = threading.Thread(target=writer, args=(srv.uri("vm"), model, stop, counts))
    t.start()
    try:
        time.sleep(1.0)
        n0 = counts[0]
        assert m.ok("blockdev-snapshot-sync", device="vm", snapshot_file=snap, format="qcow2",
                    snapshot_node_name="vm-snap1") == {}
        n1 = counts[0]
        time.sleep(1.0)
        n2 = counts[0]
    finally:
        stop.set()
        t.join(30)
    log("writes: %d before, %d during, %d after the snapshot" % (n0, n1 - n0, n2 - n1))
    assert n0 > 0 and n2 > n1, "the writer did not write around the snapshot"

    ins = m.ok("query-block")[0]["inserted"]
    assert ins["file"] == snap and ins["backing_file"] == "top.qcow2" and ins["backing_file_depth"] == 2, ins
    assert ins["image"]["backing-image"]["backing-image"]["filename"] == base, ins["image"]
    assert srv.read("vm") == model, "the export does not serve what was written"

    cls, desc = m.error("blockdev-snapshot-sync", device="vm", snapshot_file=snap)
    assert cls == "GenericError" and "File exists" in desc, desc
    assert m.ok("query-block")[0]["inserted"]["file"] == snap
    assert srv.read("vm") == model, "serving changed after a refused snapshot"

    live_map = depth_map(srv.uri("vm"))
    assert max(v for _, _, v in live_map) == 3 and min(v for _, _, v in live_map) == 1, live_map
    srv.stop()

    assert chain_files(snap) == ["snap.qcow2", "top.qcow2", "base.img"], chain_files(snap)
    check_image(snap)
    check_image(top)
    with open(os.path.join(d, "model.raw"), "wb") as f:
        f.write(model)
    assert same_content(snap, os.path.join(d, "model.raw")), "the files do not hold the model"
    assert live_map == qemu_nbd_depth_map(d, snap), (live_map, qemu_nbd_depth_map(d, snap))


if __name__ == "__main__":
    main(test)
