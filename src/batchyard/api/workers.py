"""``serve --workers N``: N API processes on one port, under a small supervisor.

The supervisor binds the port, then forks the workers; each runs the whole app on the
inherited socket (the kernel spreads connections across them). Roles:

* PostgreSQL: every worker runs an engine (they share the database's queue as any number
  of ``worker`` processes do).
* SQLite: one engine per file. Every worker tries the file's engine lock once at start; the
  one that gets it runs the engine, the others serve the API only. A worker that dies is
  started again, and a new engine worker takes the lock its predecessor's death freed.
* ``--no-engine``: none.

Across the workers of one SQLite file, rate-limit buckets live in the database (one bucket
per key, as on PostgreSQL) and notices (a batch created, canceled, a key changed) travel
through the supervisor: each worker holds one end of a datagram socket pair, and the
supervisor passes what one worker sends on to the others. SIGTERM or SIGINT to the
supervisor stops every worker gracefully (each finishes or releases its work) and exits 0.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("batchyard.workers")

RESPAWN_DELAY = 1.0  # seconds before a worker that died is started again


@dataclass
class Worker:
    slot: int
    pid: int
    relay: socket.socket  # the supervisor's end of this worker's notice channel


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class Supervisor:
    """Forks ``count`` workers running ``run_worker(slot, listener, relay_fd)`` (which must
    not return normally except after a clean stop) and keeps them running."""

    def __init__(self, count: int, listener: socket.socket, run_worker: Callable[[int, socket.socket, int], int]) -> None:
        self.count = count
        self.listener = listener
        self.run_worker = run_worker
        self.workers: dict[int, Worker] = {}  # by pid
        self.stopping = False
        self.selector = selectors.DefaultSelector()
        self._wakeup_r, self._wakeup_w = os.pipe()
        os.set_blocking(self._wakeup_r, False)
        os.set_blocking(self._wakeup_w, False)

    def _spawn(self, slot: int) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                ours.close()
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.set_wakeup_fd(-1)
                code = self.run_worker(slot, self.listener, theirs.detach())
            except BaseException:  # noqa: BLE001 - whatever happened, the child must not return into the parent's loop
                logging.getLogger("batchyard.workers").exception("worker failed")
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        theirs.close()
        ours.setblocking(False)
        self.workers[pid] = Worker(slot, pid, ours)
        self.selector.register(ours, selectors.EVENT_READ, pid)
        log.info("worker started", extra={"slot": slot, "pid": pid})

    def _relay(self, source: socket.socket) -> None:
        while True:
            try:
                payload = source.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            for worker in self.workers.values():
                if worker.relay is not source:
                    try:
                        worker.relay.send(payload)
                    except OSError:
                        pass  # a full or gone worker: a hint lost is a poll later

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            self.selector.unregister(worker.relay)
            worker.relay.close()
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                log.info("worker stopped", extra={"slot": worker.slot, "pid": pid, "code": code})
                continue
            log.warning("worker died; starting it again", extra={"slot": worker.slot, "pid": pid, "code": code})
            time.sleep(RESPAWN_DELAY)
            self._spawn(worker.slot)

    def _stop(self, signum: int) -> None:
        if not self.stopping:
            self.stopping = True
            log.info("stopping workers", extra={"signal": signal.Signals(signum).name})
        for worker in self.workers.values():
            try:
                os.kill(worker.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def run(self) -> int:
        signals: list[int] = []
        for handled in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(handled, lambda s, _frame: signals.append(s))
        signal.set_wakeup_fd(self._wakeup_w)
        self.selector.register(self._wakeup_r, selectors.EVENT_READ, None)
        for slot in range(self.count):
            self._spawn(slot)
        while self.workers:
            for key, _ in self.selector.select(timeout=1.0):
                if key.data is None:
                    try:
                        os.read(self._wakeup_r, 512)
                    except BlockingIOError:
                        pass
                else:
                    worker = self.workers.get(key.data)
                    if worker is not None:
                        self._relay(worker.relay)
            while signals:
                signum = signals.pop(0)
                if signum in (signal.SIGTERM, signal.SIGINT):
                    self._stop(signum)
            self._reap()
        self.listener.close()
        return 0
