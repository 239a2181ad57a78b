#!/usr/bin/python3
"""qemu:allocation-depth of a served chain, against qemu-nbd -A and qemu-img
map on the same files: the issue's three-layer chain (raw base with holes,
qcow2 data, zero clusters, unallocated clusters), the context listed by
nbdinfo, one block-status answer per negotiated context (base:allocation
next to it), and the depth following writes live.
"""
import json
import os

import nbd

from chain_lib import (MiB, Fleece, depth_from_qemu_img_map, depth_map, main, make_issue_chain,
                       qemu_nbd_depth_map, run, scratch)

SIZE = 32 * MiB


def test():
    d = scratch()
    master, cow, newcow = make_issue_chain(d, SIZE // MiB)
    reference = qemu_nbd_depth_map(d, newcow)
    assert reference == depth_from_qemu_img_map(newcow), (reference, depth_from_qemu_img_map(newcow))
    assert {v for _, _, v in reference} == {1, 2, 3}, reference

    srv = Fleece(d, [("vm", newcow, "qcow2", False), ("raw", master, "raw", True)])
    uri = srv.uri("vm")
    contexts = json.loads(run("nbdinfo", "--json", uri))["exports"][0]["contexts"]
    assert "base:allocation" in contexts and "qemu:allocation-depth" in contexts, contexts
    assert depth_map(uri) == reference, (depth_map(uri), reference)
    # A raw disk is one layer, allocated everywhere (holes too, as in QEMU).
    assert depth_map(srv.uri("raw")) == [(0, SIZE, 1)], depth_map(srv.uri("raw"))

    # Both contexts at once, in one block-status request.
    h = nbd.NBD()
    h.add_meta_context("base:allocation")
    h.add_meta_context("qemu:allocation-depth")
    h.connect_uri(uri)
    seen = {}

    def extent(metacontext, offset, entries, err):
        seen[metacontext] = entries
        return 0

    h.block_status(4 * MiB, 0, extent)
    assert set(seen) == {"base:allocation", "qemu:allocation-depth"}, seen
    # Live: a write lands in the active layer, depth 1 from then on.
    h.pwrite(b"\x5a" * 65536, 20 * MiB)
    h.flush()
    h.shutdown()
    after = depth_map(uri)
    covering = [v for o, n, v in after if o <= 20 * MiB < o + n]
    assert covering == [1], after
    before = [v for o, n, v in reference if o <= 20 * MiB < o + n]
    assert before != [1], reference
    srv.stop()
    assert after == qemu_nbd_depth_map(d, newcow), (after, qemu_nbd_depth_map(d, newcow))


if __name__ == "__main__":
    main(test)
