"""A small bounded pool of SQLite connections, shared by every thread of the service."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class ConnectionPool:
    """At most `size` connections, opened on demand and kept; a thread borrows one per operation.

    Per-thread connections would hold the database's files open once per request thread (gunicorn
    keeps 32 alive, the development server one per request), and SQLite keeps a closed connection's file
    descriptor open while others hold locks on the file, so closing them after each request does not
    bound them either. A nested borrow in the same thread gets the connection it already holds.
    """

    def __init__(self, connect: Callable[[], sqlite3.Connection], size: int = 4):
        if size < 1:
            raise ValueError("a pool needs at least one connection")
        self._connect = connect
        self._size = size
        self._idle: list[sqlite3.Connection] = []
        self._opened = 0
        self._cv = threading.Condition()
        self._held = threading.local()
        self._closed = False

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        held = getattr(self._held, "conn", None)
        if held is not None:
            yield held
            return
        conn = self._take()
        self._held.conn = conn
        try:
            yield conn
        finally:
            self._held.conn = None
            self._give(conn)

    def _take(self) -> sqlite3.Connection:
        with self._cv:
            while True:
                if self._closed:
                    raise sqlite3.ProgrammingError("the job store is closed")
                if self._idle:
                    return self._idle.pop()
                if self._opened < self._size:
                    self._opened += 1
                    break
                self._cv.wait()
        try:
            return self._connect()
        except BaseException:
            with self._cv:
                self._opened -= 1
                self._cv.notify()
            raise

    def _give(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:  # never hand on a connection in the middle of a failed transaction
            conn.rollback()
        with self._cv:
            if self._closed:
                conn.close()
                self._opened -= 1
            else:
                self._idle.append(conn)
            self._cv.notify()

    def open_connections(self) -> int:
        with self._cv:
            return self._opened

    def close(self) -> None:
        """Closes the idle connections now and the borrowed ones when they come back."""
        with self._cv:
            self._closed = True
            idle, self._idle = self._idle, []
            self._opened -= len(idle)
            self._cv.notify_all()
        for conn in idle:
            conn.close()
