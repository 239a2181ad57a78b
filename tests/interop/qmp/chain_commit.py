#!/usr/bin/python3
"""The issue's scenario end to end: master.img <- cow.qcow2 <- newcow.qcow2
served as one qcow2 disk; fio writes the live export (random 4k writes,
crc32c verify) while block-commit merges cow.qcow2 into master.img at a set
speed. Then: BLOCK_JOB_COMPLETED, the chain is newcow.qcow2 -> master.img
(query-block, qemu-img info), qemu-img check passes, the bytes outside fio's
region are the ones from before, and the files hold what the server served.
"""
import os
import subprocess
import time

from chain_lib import (MiB, Fleece, chain_files, check_image, depth_map, flat, log, main, make_issue_chain,
                       same_content, scratch, wait_for)

SIZE = 32 * MiB
FIO_OFF, FIO_LEN = 4 * MiB, 8 * MiB  # fio's region: over cow's data and newcow's
SPEED = 4 * MiB  # cow.qcow2 holds ~13 MiB: a few seconds of commit


def names(image_info):
    out = []
    while image_info:
        out.append(os.path.basename(image_info["filename"]))
        image_info = image_info.get("backing-image")
    return out


def test():
    d = scratch()
    master, cow, newcow = make_issue_chain(d, SIZE // MiB)
    before = flat(d, newcow)
    srv = Fleece(d, [("vm", newcow, "qcow2", False)])
    m = srv.monitor()

    blk = m.ok("query-block")[0]
    ins = blk["inserted"]
    assert blk["device"] == "vm" and ins["file"] == newcow and ins["drv"] == "qcow2", blk
    assert ins["backing_file"] == "cow.qcow2" and ins["backing_file_depth"] == 2, ins
    assert names(ins["image"]) == ["newcow.qcow2", "cow.qcow2", "master.img"], ins["image"]
    assert ins["image"]["backing-image"]["backing-image"]["format"] == "raw"
    assert ins["image"]["virtual-size"] == SIZE and ins["image"]["cluster-size"] == 65536
    assert ins["image"]["full-backing-filename"] == cow, ins["image"]
    assert max(v for _, _, v in depth_map(srv.uri("vm"))) == 3

    # The guest: fio random writes with verify in its region, through NBD.
    fio = subprocess.Popen(
        ["timeout", "60", "fio", "--name=guest", "--ioengine=nbd", "--uri=" + srv.uri("vm"), "--rw=randwrite",
         "--bs=4k", "--offset=%d" % FIO_OFF, "--size=%d" % FIO_LEN, "--iodepth=8", "--loops=2",
         "--rate_iops=,700", "--verify=crc32c", "--verify_fatal=1", "--randrepeat=0",
         "--output-format=terse", "--output=" + os.path.join(d, "fio.out")], cwd=d)
    writes = lambda: next(e for e in m.ok("query-stats")["exports"] if e["name"] == "vm")["write-requests"]  # noqa
    wait_for(lambda: writes() > 50, 20, what="fio's first writes")

    w0 = writes()
    t0 = time.monotonic()
    assert m.ok("block-commit", job_id="c1", device="vm", top="cow.qcow2", base="master.img", speed=SPEED) == {}
    jobs = m.ok("query-block-jobs")
    assert len(jobs) <= 1, jobs
    if jobs:  # it may already be done on a fast machine
        j = jobs[0]
        assert j["type"] == "commit" and j["device"] == "c1" and j["speed"] == SPEED, j
        assert j["status"] in ("running", "created") and not j["paused"] and j["ready"] is False, j
    ev = m.event("BLOCK_JOB_COMPLETED")
    took = time.monotonic() - t0
    data = ev["data"]
    assert data["type"] == "commit" and data["device"] == "c1" and "error" not in data, ev
    assert data["len"] == SIZE and data["offset"] == data["len"] and data["speed"] == SPEED, ev
    w1 = writes()
    log("commit took %.2f s; %d guest writes meanwhile" % (took, w1 - w0))
    assert w1 > w0, "fio wrote nothing while the commit ran"
    assert m.ok("query-block-jobs") == []

    ins = m.ok("query-block")[0]["inserted"]
    assert ins["backing_file_depth"] == 1 and ins["backing_file"] == "master.img", ins
    assert names(ins["image"]) == ["newcow.qcow2", "master.img"], ins["image"]
    assert max(v for _, _, v in depth_map(srv.uri("vm"))) == 2

    rc = fio.wait(60)
    if rc != 0:
        with open(os.path.join(d, "fio.out")) as f:
            log(f.read())
    assert rc == 0, "fio failed (verify?)"

    served = srv.read("vm")
    assert len(served) == SIZE
    assert served[:FIO_OFF] == before[:FIO_OFF], "bytes before fio's region changed"
    assert served[FIO_OFF + FIO_LEN:] == before[FIO_OFF + FIO_LEN:], "bytes after fio's region changed"
    with open(os.path.join(d, "served.raw"), "wb") as f:
        f.write(served)
    srv.stop()

    assert chain_files(newcow) == ["newcow.qcow2", "master.img"], chain_files(newcow)
    check_image(newcow)
    check_image(cow)  # left alone: the user deletes it
    assert same_content(newcow, os.path.join(d, "served.raw")), "the files do not hold what was served"


if __name__ == "__main__":
    main(test)
