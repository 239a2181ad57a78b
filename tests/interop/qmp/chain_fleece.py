#!/usr/bin/python3
"""A fleece taken before a block-commit stays exact through it: the issue's
chain served as a qcow2 disk, fleece-start, then fio writes the live disk
while cow.qcow2 is committed into master.img; the frozen view vm@b1 reads the
content from before the fleece during the commit, after it, and after the
writes; the fleece is not broken; afterwards the chain is newcow.qcow2 ->
master.img and qemu-img check passes.
"""
import os
import subprocess

from chain_lib import MiB, Fleece, chain_files, check_image, flat, log, main, make_issue_chain, scratch

SIZE = 32 * MiB


def test():
    d = scratch()
    master, cow, newcow = make_issue_chain(d, SIZE // MiB)
    before = flat(d, newcow)
    srv = Fleece(d, [("vm", newcow, "qcow2", False)])
    m = srv.monitor()
    assert m.ok("fleece-start", id="b1", devices=["vm"])["exports"] == ["vm@b1"]

    fio = subprocess.Popen(
        ["timeout", "60", "fio", "--name=guest", "--ioengine=nbd", "--uri=" + srv.uri("vm"), "--rw=randwrite",
         "--bs=64k", "--size=%d" % SIZE, "--iodepth=4", "--time_based", "--runtime=60", "--output=/dev/null"],
        cwd=d)
    try:
        assert m.ok("block-commit", job_id="c1", device="vm", top="cow.qcow2", speed=6 * MiB) == {}
        during = srv.read("vm@b1")
        running = m.ok("query-block-jobs")
        ev = m.event("BLOCK_JOB_COMPLETED")["data"]
        assert "error" not in ev and ev["offset"] == ev["len"], ev
        after = srv.read("vm@b1")
    finally:
        fio.terminate()
        fio.wait(30)
    log("the view was read %s the commit" % ("during" if running else "after"))
    assert during == before, "the frozen view changed during the commit"
    assert after == before, "the frozen view changed after the commit"
    assert srv.read("vm@b1") == before, "the frozen view changed after the writes"
    assert srv.read("vm") != before, "the guest's writes did not land"
    fleece = m.ok("query-fleeces")[0]
    assert fleece["id"] == "b1" and not fleece["devices"][0]["broken"], fleece
    assert m.ok("query-block")[0]["inserted"]["backing_file_depth"] == 1
    assert m.ok("fleece-stop", id="b1") == {}
    srv.stop()
    assert chain_files(newcow) == ["newcow.qcow2", "master.img"], chain_files(newcow)
    check_image(newcow)


if __name__ == "__main__":
    main(test)
