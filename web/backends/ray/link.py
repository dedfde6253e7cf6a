"""The protocol between the service and its Ray driver process: one JSON object a line over a socket pair."""

from __future__ import annotations

import json
import socket
import threading
from enum import Enum
from typing import Any, Iterator


class Op(str, Enum):
    """What a message is; each carries `op` and, for a job's messages, `job`."""

    # service -> driver
    # job, request (TaskRequest fields), input (the photo's path), mask (the repair mask's path or null), result_temp,
    # nodes (the ids of the nodes that have the job's model when some live nodes lack it, else null)
    SUBMIT = "submit"
    CANCEL = "cancel"  # job, force
    RECOVER = "recover"  # jobs: ids of jobs a previous service left running
    PING = "ping"
    STOP = "stop"
    # driver -> service
    HEALTH = "health"  # ok, reason: sent on every change of the connection to the cluster
    SUBMITTED = "submitted"  # job: the task is submitted
    REFUSED = "refused"  # job, reason: it could not be submitted
    ITEM = "item"  # job, item: a dict the task yielded (PLACED, a worker event, EXITED)
    RESULT = "result"  # job, path: the result's bytes are in result_temp, written and fsynced
    END = "end"  # job, lost (None, "node_lost", "cluster_lost"), detail: the task's stream has ended
    RECOVERED = "recovered"  # jobs
    # node: a worker node's id, folder: its models folder, names: the files in it, models: ModelReport JSON each
    MODELS = "models"
    # seconds: {kind: node-seconds since the last}, alive: {kind: count}, ids: worker nodes alive,
    # autoscaler: an autoscaling.Autoscaler value
    NODES = "nodes"
    PONG = "pong"


# Longest line accepted (an EXITED item carries up to 256 KiB of the worker's stderr, escaped).
MAX_LINE = 4 * 1024 * 1024


class LinkClosed(Exception):
    """The other end has gone (its process exited, or closed the socket)."""


class Link:
    """One end of the socket pair: send() from any thread, messages() from one reader thread."""

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._reader = sock.makefile("rb")
        self._send_lock = threading.Lock()

    def send(self, op: Op, **fields: Any) -> None:
        line = json.dumps({"op": op.value, **fields}, separators=(",", ":")).encode() + b"\n"
        with self._send_lock:
            try:
                self._sock.sendall(line)
            except OSError as err:
                raise LinkClosed(str(err)) from err

    def messages(self) -> Iterator[dict[str, Any]]:
        """Each message as it arrives, until the other end closes (then the iteration ends)."""
        while True:
            try:
                line = self._reader.readline(MAX_LINE)
            except OSError:
                return
            if not line:
                return
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict) and isinstance(message.get("op"), str):
                yield message

    def close(self) -> None:
        for close in (self._reader.close, lambda: self._sock.shutdown(socket.SHUT_RDWR), self._sock.close):
            try:
                close()
            except OSError:
                pass
