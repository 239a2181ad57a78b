#!/usr/bin/python3
"""Chain commands that must refuse, and block-job control, on a live server.

Refusals (each answered with QEMU's class and words, while the export keeps
serving the same bytes): block-commit of the active layer, an unknown
device, a top not in the chain, a base not below top, top == base, a
negative speed, a second job on the chain, a read-only disk; snapshot of an
unknown device, onto an existing file, of a read-only disk; job control of
an unknown job. Then a slow commit is paused, resumed, re-speeded and
cancelled, each observable in query-block-jobs, and BLOCK_JOB_CANCELLED
leaves the chain as it was. A disk with a job cannot be deleted. Finally a
commit still running at SIGTERM is cancelled by the shutdown: the server
exits 0 and the chain is intact.
"""
import os
import time

from chain_lib import (MiB, Fleece, chain_files, check_image, flat, main, make_issue_chain, run, same_content,
                       scratch, wait_for)

SIZE = 32 * MiB


def test():
    d = scratch()
    master, cow, newcow = make_issue_chain(d, SIZE // MiB)
    ro_img = os.path.join(d, "ro.img")
    run("qemu-img", "create", "-q", "-f", "raw", ro_img, "1M")
    before = flat(d, newcow)
    with open(os.path.join(d, "before.raw"), "wb") as f:
        f.write(before)
    srv = Fleece(d, [("vm", newcow, "qcow2", False), ("ro", ro_img, "raw", True)])
    m = srv.monitor()

    def depth():
        return next(b for b in m.ok("query-block") if b["device"] == "vm")["inserted"]["backing_file_depth"]

    def refused(expected_class, expected_desc, command, **args):
        cls, desc = m.error(command, **args)
        assert cls == expected_class, (command, args, cls, desc)
        assert desc.startswith(expected_desc), (command, args, desc)

    commit = "block-commit"
    refused("DeviceNotFound", "Device 'nosuch' not found", commit, device="nosuch", top="cow.qcow2")
    refused("GenericError", "Top image as the active layer is currently unsupported", commit, device="vm")
    refused("GenericError", "Top image as the active layer is currently unsupported", commit, device="vm",
            top="newcow.qcow2")
    refused("GenericError", "Top image file nosuch.qcow2 not found", commit, device="vm", top="nosuch.qcow2")
    refused("GenericError", "Can't find 'nosuch.img' in the backing chain", commit, device="vm",
            top="cow.qcow2", base="nosuch.img")
    refused("GenericError", "Can't find 'newcow.qcow2' in the backing chain", commit, device="vm",
            top="cow.qcow2", base="newcow.qcow2")
    refused("GenericError", "cannot commit an image into itself", commit, device="vm", top="cow.qcow2",
            base=cow)
    refused("GenericError", "Invalid parameter 'speed'", commit, device="vm", top="cow.qcow2", speed=-1)
    refused("GenericError", "Invalid job ID '1x'", commit, device="vm", top="cow.qcow2", job_id="1x")
    refused("GenericError", "Parameter 'on-error' does not accept value 'stop'", commit, device="vm",
            top="cow.qcow2", on_error="stop")
    refused("GenericError", "Node 'ro' is read-only", commit, device="ro")

    snap = "blockdev-snapshot-sync"
    refused("GenericError", "Cannot find device='nosuch' nor node-name=''", snap, device="nosuch",
            snapshot_file=os.path.join(d, "s.qcow2"))
    refused("GenericError", "Cannot find device='' nor node-name=''", snap, snapshot_file=os.path.join(d, "s.qcow2"))
    refused("GenericError", "Node 'ro' is read-only", snap, device="ro", snapshot_file=os.path.join(d, "s.qcow2"))
    cls, desc = m.error(snap, device="vm", snapshot_file=cow)  # an existing file, a member of the chain even
    assert cls == "GenericError" and "File exists" in desc and "choose another name" in desc, desc
    cls, desc = m.error(snap, device="vm", snapshot_file=os.path.join(d, "s.vmdk"), format="vmdk")
    assert "vmdk" in desc and "not supported" in desc, desc
    assert not os.path.exists(os.path.join(d, "s.qcow2")) and not os.path.exists(os.path.join(d, "s.vmdk"))

    for command in ("block-job-pause", "block-job-resume", "block-job-cancel"):
        refused("DeviceNotActive", "Block job 'nojob' not found", command, device="nojob")
    refused("DeviceNotActive", "Block job 'nojob' not found", "block-job-set-speed", device="nojob", speed=1)
    assert m.ok("query-block-jobs") == []
    assert depth() == 2
    assert srv.read("vm") == before, "serving changed after the refusals"

    # A slow job, steered.
    def job():
        jobs = m.ok("query-block-jobs")
        assert len(jobs) == 1 and jobs[0]["device"] == "j1" and jobs[0]["type"] == "commit", jobs
        return jobs[0]

    assert m.ok(commit, job_id="j1", device="vm", top="cow.qcow2", speed=1 * MiB) == {}
    refused("GenericError", "Node 'vm' is busy: block device is in use by block job: commit", commit,
            job_id="j2", device="vm", top="cow.qcow2")
    j = job()
    assert j["speed"] == MiB and j["len"] == SIZE and j["io-status"] == "ok" and j["auto-dismiss"] is True, j
    assert m.ok("block-job-set-speed", device="j1", speed=2 * MiB) == {}
    assert job()["speed"] == 2 * MiB
    wait_for(lambda: job()["offset"] > 0, 20, what="progress")
    assert m.ok("block-job-pause", device="j1") == {}
    refused("GenericError", "Job is already paused", "block-job-pause", device="j1")
    wait_for(lambda: job()["status"] == "paused", 10, what="status paused")
    j = job()
    assert j["paused"] is True and j["busy"] is False, j
    time.sleep(0.6)
    assert job()["offset"] == j["offset"], "a paused job made progress"
    assert m.ok("block-job-resume", device="j1") == {}
    refused("GenericError", "Can't resume a job that was not paused", "block-job-resume", device="j1")
    wait_for(lambda: job()["offset"] > j["offset"], 10, what="progress after resume")
    assert job()["paused"] is False
    assert srv.read("vm") == before, "content changed during the job"
    assert m.ok("block-job-cancel", device="j1") == {}
    ev = m.event("BLOCK_JOB_CANCELLED")["data"]
    assert ev["device"] == "j1" and ev["type"] == "commit" and 0 < ev["offset"] < ev["len"] == SIZE, ev
    assert ev["speed"] == 2 * MiB, ev
    assert m.ok("query-block-jobs") == []
    assert depth() == 2
    assert srv.read("vm") == before, "content changed after the cancel"

    # A disk with a job on its chain cannot be deleted (one added by QMP: no export).
    d2 = os.path.join(d, "second")
    os.mkdir(d2)
    newcow2 = make_issue_chain(d2)[2]
    assert m.ok("blockdev-add", node_name="vm2", driver="qcow2", filename=newcow2) == {}
    assert m.ok(commit, job_id="k1", device="vm2", top="cow.qcow2", speed=MiB // 4) == {}
    refused("GenericError", "Node 'vm2' is busy: block device is in use by block job: commit", "blockdev-del",
            node_name="vm2")
    assert m.ok("block-job-cancel", device="k1") == {}
    assert m.event("BLOCK_JOB_CANCELLED")["data"]["device"] == "k1"
    assert m.ok("blockdev-del", node_name="vm2") == {}

    # Shutdown with a job running: it is cancelled, the server exits 0.
    assert m.ok(commit, job_id="j3", device="vm", top="cow.qcow2", speed=MiB) == {}
    wait_for(lambda: m.ok("query-block-jobs")[0]["offset"] > 0, 20, what="j3 progress")
    srv.stop()
    assert chain_files(newcow) == ["newcow.qcow2", "cow.qcow2", "master.img"], chain_files(newcow)
    check_image(newcow)
    check_image(cow)
    assert same_content(newcow, os.path.join(d, "before.raw")), "the chain's content changed"


if __name__ == "__main__":
    main(test)
