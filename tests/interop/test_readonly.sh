#!/bin/bash
# A read-only export refuses WRITE, WRITE_ZEROES and TRIM with EPERM (sent to
# the server even though the client knows better), keeps serving reads, and
# the file is unchanged.
. "$(dirname "$0")/lib.sh"

make_image "$T/ro.img" 8 9
want=$(sha "$T/ro.img")
serve_start --disk ro="$T/ro.img",readonly --listen unix:"$T/s"

$PY - "$T/s" "$T/ro.img" <<'PYEOF'
import errno, sys, nbd
sock, img = sys.argv[1], sys.argv[2]
h = nbd.NBD()
h.set_export_name("ro")
h.set_strict_mode(0)          # let the server judge, not libnbd
h.connect_unix(sock)
assert h.is_read_only(), "export not advertised read-only"
expect = open(img, "rb").read()

def refused(what, fn):
    try:
        fn()
    except nbd.Error as e:
        assert e.errno in ("EPERM", errno.EPERM), f"{what}: errno {e.errno} ({e.string}), want EPERM"
        return
    raise AssertionError(f"{what} succeeded on a read-only export")

refused("pwrite", lambda: h.pwrite(b"x" * 4096, 0))
refused("pwrite FUA", lambda: h.pwrite(b"x" * 512, 4096, nbd.CMD_FLAG_FUA))
refused("zero", lambda: h.zero(65536, 0))
refused("trim", lambda: h.trim(65536, 0))
# The connection is still in sync and reads are right.
assert h.pread(1 << 20, 0) == expect[: 1 << 20], "read after refused writes differs"
assert h.pread(4096, len(expect) - 4096) == expect[-4096:], "tail read differs"
h.flush()   # allowed (harmless) on a read-only export
h.shutdown()
print("readonly ok")
PYEOF
qemu-io -f raw -c 'write -P 1 0 4k' "nbd+unix:///ro?socket=$T/s" >"$T/q.out" 2>&1 && fail "qemu-io write succeeded"
serve_stop
[[ $(sha "$T/ro.img") == "$want" ]] || fail "read-only file changed"
echo "test_readonly: ok"
