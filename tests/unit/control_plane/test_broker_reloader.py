"""The broker's reload coalescing: a burst of login changes, few SIGHUPs, one after the last."""

from __future__ import annotations

import threading
import time

from control_plane.transport.broker import Reloader


def test_a_burst_is_coalesced_and_the_last_change_is_always_reloaded() -> None:
    sends: list[float] = []
    done = threading.Event()

    def send() -> None:
        sends.append(time.monotonic())
        done.set()

    reloader = Reloader(send, gap=0.05)
    try:
        for _ in range(200):
            reloader.request()
        last_request = time.monotonic()
        deadline = time.monotonic() + 5
        while (not sends or sends[-1] < last_request) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sends and sends[-1] >= last_request  # the last change is applied
        assert len(sends) < 200  # coalesced
        count = len(sends)
        time.sleep(0.2)
        assert len(sends) == count  # nothing more without a request
        done.clear()
        reloader.request()  # idle again: a single change is sent on its own
        assert done.wait(5) and len(sends) == count + 1
    finally:
        reloader.stop()


def test_a_failing_send_does_not_stop_later_reloads() -> None:
    calls: list[int] = []

    def send() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("mosquitto is restarting")

    reloader = Reloader(send, gap=0.01)
    try:
        reloader.request()
        deadline = time.monotonic() + 5
        while not calls and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
        reloader.request()
        while len(calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(calls) == 2
    finally:
        reloader.stop()
