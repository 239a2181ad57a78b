#!/usr/bin/python3
"""readiness.py MODE SCRATCH FLEECE IMAGE

Starts `fleece serve` itself and checks what an integrator relies on:
  ready-line  the listening sockets accept connections when "fleece: ready" is printed
  notify      READY=1 arrives on $NOTIFY_SOCKET, and the sockets exist by then
  activation  systemd socket activation: an inherited listening socket
              (LISTEN_FDS=1, LISTEN_PID) is served, without any --listen
Each mode ends with SIGTERM and requires exit status 0."""
import os
import select
import signal
import socket
import subprocess
import sys
import time

import nbd

mode, scratch, fleece, image = sys.argv[1:5]
sock_path = os.path.join(scratch, "r.sock")
qmp = ["--qmp", "unix:" + os.path.join(scratch, "r.qmp")]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def connects_unix(path):
    h = nbd.NBD()
    h.set_export_name("d")
    h.connect_unix(path)
    size = h.get_size()
    h.shutdown()
    return size


def connects_tcp(port):
    h = nbd.NBD()
    h.connect_uri(f"nbd://127.0.0.1:{port}/d")
    size = h.get_size()
    h.shutdown()
    return size


def wait_ready_line(proc, seconds=30):
    deadline = time.monotonic() + seconds
    buf = b""
    while time.monotonic() < deadline:
        r, _, _ = select.select([proc.stdout], [], [], 0.2)
        if r:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise AssertionError(f"stdout closed before ready; exit {proc.wait()}")
            buf += chunk
            if b"fleece: ready\n" in buf:
                return
    raise AssertionError("no ready line within 30 s")


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(30)
    assert rc == 0, f"exit status {rc} after SIGTERM"


size = os.path.getsize(image)
disk = ["--disk", f"d={image}"]

if mode == "ready-line":
    port = free_port()
    proc = subprocess.Popen([fleece, "serve", *disk, "--listen", f"unix:{sock_path}",
                             "--listen", f"tcp:127.0.0.1:{port}", *qmp],
                            stdout=subprocess.PIPE, cwd=scratch)
    wait_ready_line(proc)
    assert os.path.exists(sock_path), "unix socket missing at the ready line"
    assert connects_unix(sock_path) == size
    assert connects_tcp(port) == size
    stop(proc)
    assert not os.path.exists(sock_path), "unix socket left behind after a clean exit"

elif mode == "notify":
    note = os.path.join(scratch, "notify")
    n = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    n.bind(note)
    n.settimeout(30)
    env = dict(os.environ, NOTIFY_SOCKET=note)
    proc = subprocess.Popen([fleece, "serve", *disk, "--listen", f"unix:{sock_path}", *qmp],
                            stdout=subprocess.DEVNULL, env=env, cwd=scratch)
    msgs = []
    while True:
        msg = n.recv(4096).decode()
        msgs.append(msg)
        if "READY=1" in msg.split("\n"):
            break
    assert os.path.exists(sock_path), "socket missing when READY=1 arrived"
    assert connects_unix(sock_path) == size
    stop(proc)
    print("notify messages:", msgs)

elif mode == "activation":
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock_path)
    listener.listen(16)
    fd = listener.fileno()

    # The launcher's job, as systemd does it: the socket becomes fd 3, and
    # LISTEN_PID names the process that execs the server (so it is set in
    # that process, just before exec).
    launcher = [sys.executable, "-c",
                "import os,sys; os.environ['LISTEN_PID']=str(os.getpid()); "
                "os.environ['LISTEN_FDS']='1'; os.execv(sys.argv[1], sys.argv[1:])",
                fleece, "serve", *disk, *qmp]
    if fd != 3:
        os.dup2(fd, 3)
    os.set_inheritable(3, True)
    proc = subprocess.Popen(launcher, stdout=subprocess.PIPE, pass_fds=(3,), cwd=scratch)
    if fd != 3:
        os.close(3)
    listener.close()  # only the server holds it now
    wait_ready_line(proc)
    assert connects_unix(sock_path) == size
    # Several connections through the inherited socket.
    for _ in range(3):
        assert connects_unix(sock_path) == size
    stop(proc)
else:
    sys.exit(f"unknown mode {mode}")
print(f"{mode}: ok")
