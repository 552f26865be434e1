"""The fork server: a clean process that forks one fresh worker per task.

The coordinator (``harness.executor``) starts it with ``python -m
harness.forkserver`` in a scrubbed environment, its own session, stdin from
/dev/null and stdout/stderr to a log file: it holds none of the coordinator's
memory, secrets or terminal. It imports the heavy modules once (``preload``),
then for every task forks a child that runs ``harness.worker.child_main`` and
exits, so every check starts from the same state and none sees another's.

Protocol on one AF_UNIX SOCK_SEQPACKET socket (one message per packet):
coordinator -> server, pickled (the coordinator is trusted):
  ``("run", task_id, pickled_task)`` with the task's result socket and the write ends
  of its stdout and stderr pipes passed as SCM_RIGHTS (the server never unpickles the
  task: the worker does, so the server's heap, which every fork shares, stays still),
  ``("kill", pid)``, ``("stop",)``;
server -> coordinator, JSON: ``{"op": "ready", ...}``,
  ``{"op": "started", "id": task_id, "pid": pid}``,
  ``{"op": "exited", "pid": pid, "status": wait_status, "cpu": seconds}`` (the
  worker's user + system time and that of the processes it waited for, from ``wait4``).
The server dies with the coordinator (parent-death signal, and EOF on the
socket), and kills every worker and every process a worker left behind: it is a
child subreaper, so orphans of a killed worker come back to it and are killed.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import pickle
import select
import signal
import socket
import sys
import time
from typing import Any

from harness import procs

MAX_PACKET = 4 * 1024 * 1024


def _send(sock: socket.socket, msg: dict[str, Any]) -> None:
    try:
        sock.send(json.dumps(msg).encode())
    except OSError:
        pass


def _kill_everything() -> None:
    procs.kill_tree(os.getpid(), include_self=False)
    procs.reap_children()


def serve(fd: int, coordinator: int, config: dict[str, Any]) -> None:
    sock = socket.socket(fileno=fd)
    procs.make_undumpable()  # no worker may read or write our memory (workers inherit it)
    procs.set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != coordinator:  # it died before the signal was armed
        return
    procs.become_subreaper()

    def on_term(signum: int, frame: Any) -> None:
        _kill_everything()
        os._exit(0)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    root = config.get("root")
    if root and root not in sys.path:
        sys.path.insert(0, root)
    if root:
        os.chdir(root)
    loaded, failed, absent = [], {}, []
    for name in ["harness.worker", *config.get("preload", [])]:
        module, _, function = name.partition(":")
        try:
            imported = importlib.import_module(module)
            if function:  # "module:function": called once, e.g. to load JIT caches
                getattr(imported, function)()
            loaded.append(name)
        except ModuleNotFoundError as exc:  # an optional extra not installed: skipped
            if exc.name == module.partition(".")[0] and not function:
                absent.append(name)
            else:  # a module of an installed package that is not there: a typo, say
                failed[name] = f"{type(exc).__name__}: {exc}"
        except BaseException as exc:  # noqa: BLE001 - a preload is an optimisation only
            failed[name] = f"{type(exc).__name__}: {exc}"
    from harness.sources import warm
    from harness.worker import child_main

    if root:
        warm(root)  # the preloads' source names, computed once for every worker
    gc.collect()
    gc.freeze()  # the preloaded heap is never scanned again: forks copy fewer pages

    _send(
        sock,
        {
            "op": "ready",
            "pid": os.getpid(),
            "preloaded": loaded,
            "failed": failed,
            "absent": absent,
        },
    )
    workers: set[int] = set()
    scanned = time.monotonic()
    # a worker's end wakes the loop at once (SIGCHLD through a self-pipe), so its exit
    # and CPU time reach the coordinator while it is still collecting the record
    woken, wake = os.pipe()
    os.set_blocking(woken, False)
    os.set_blocking(wake, False)
    signal.set_wakeup_fd(wake, warn_on_full_buffer=False)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    while True:
        ready, _, _ = select.select([sock.fileno(), woken], [], [], 0.2)
        timed_out = not ready
        if woken in ready:
            with contextlib.suppress(OSError):
                os.read(woken, 4096)
        unclean = False
        for pid, status, cpu in procs.reap_children():
            if pid in workers:
                workers.discard(pid)
                _send(sock, {"op": "exited", "pid": pid, "status": status, "cpu": cpu})
                # child_main ends what the check started before it exits; a worker that
                # was killed (its record sent, or timed out) may have left processes
                unclean |= not os.WIFEXITED(status)
            else:
                unclean = True  # an orphan ended: its children are ours now
        # a process becomes ours only when its parent ends: reading /proc for orphans
        # costs, so look when one may have come back, and every 0.2 s (a check that
        # called os._exit itself left its children without a word)
        if unclean or timed_out or time.monotonic() - scanned >= 0.2:
            scanned = time.monotonic()
            for orphan in procs.children(os.getpid()):
                if orphan not in workers:  # left behind by a worker that was killed
                    procs.kill_tree(orphan)
        if sock.fileno() not in ready:
            continue
        try:
            data, fds, _, _ = socket.recv_fds(sock, MAX_PACKET, 4)
        except OSError:
            data, fds = b"", []
        if not data:  # the coordinator is gone
            _kill_everything()
            return
        msg = pickle.loads(data)
        op = msg[0]
        if op == "stop":
            _kill_everything()
            return
        if op == "kill":
            if msg[1] in workers:
                procs.kill_tree(msg[1])
            continue
        if op == "run":
            _, task_id, task = msg
            result_fd = fds[0]
            server = os.getpid()
            pid = os.fork()
            if pid == 0:  # the worker
                log_fds = (fds[1], fds[2]) if len(fds) >= 3 else None  # stdout, stderr pipes
                try:
                    signal.set_wakeup_fd(-1)
                    os.close(woken)
                    os.close(wake)
                    sock.close()
                    for extra in fds[3:]:
                        os.close(extra)
                finally:
                    child_main(task, result_fd, server, log_fds)
            for f in fds:
                os.close(f)
            workers.add(pid)
            _send(sock, {"op": "started", "id": task_id, "pid": pid, "t": time.time()})


def main() -> None:
    fd, coordinator, config = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
    serve(fd, coordinator, config)
    os._exit(0)


if __name__ == "__main__":
    main()
