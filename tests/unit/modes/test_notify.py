"""sd_notify: addresses, the watchdog's interval, messages on real sockets, failures swallowed."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.support.systemd import NotifySocket, abstract_name
from tether.modes.notify import NOTIFY_VARIABLES, Notifier, notify_address, watchdog_interval


@pytest.mark.parametrize(
    ("value", "address"),
    [
        ("/run/systemd/notify", "/run/systemd/notify"),
        ("@systemd-notify", "\0systemd-notify"),
        ("@", None),
        ("relative/path", None),
        ("vsock:2:1234", None),
    ],
)
def test_notify_address(value: str, address: str | None) -> None:
    assert notify_address(value) == address


@pytest.mark.parametrize(
    ("usec", "watchdog_pid", "interval"),
    [
        ("200000", None, 0.1),
        ("30000000", "4242", 15.0),  # WATCHDOG_PID names us
        ("200000", "1", None),  # it names another process: not ours to feed
        ("0", None, None),
        ("-5", None, None),
        ("2e5", None, None),
        ("", None, None),
        (None, None, None),
    ],
)
def test_watchdog_interval(
    usec: str | None, watchdog_pid: str | None, interval: float | None
) -> None:
    assert watchdog_interval(usec, watchdog_pid, 4242) == interval


def test_from_environ_takes_the_variables_out() -> None:
    environ = {
        "NOTIFY_SOCKET": "@tether",
        "WATCHDOG_USEC": "1000000",
        "WATCHDOG_PID": "7",
        "HOME": "/home/u",
    }
    notifier = Notifier.from_environ(environ, pid=7)
    assert notifier is not None
    assert (notifier.address, notifier.watchdog, notifier.shown) == ("\0tether", 0.5, "@tether")
    assert environ == {"HOME": "/home/u"}


def test_from_environ_without_a_socket() -> None:
    environ = {"WATCHDOG_USEC": "1000000"}
    assert Notifier.from_environ(environ, pid=7) is None
    assert not set(environ) & set(NOTIFY_VARIABLES)


def test_unusable_address_is_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    assert Notifier.from_environ({"NOTIFY_SOCKET": "vsock:2:9"}, pid=7) is None
    assert "ignoring NOTIFY_SOCKET=vsock:2:9" in caplog.text


def test_message_to_a_path_socket(tmp_path: Path) -> None:
    with NotifySocket(str(tmp_path / "notify")) as manager:
        notifier = Notifier(str(tmp_path / "notify"))
        assert notifier.send("READY=1", "STATUS=ready on 127.0.0.1:5")
        assert manager.next().text == "READY=1\nSTATUS=ready on 127.0.0.1:5"
        notifier.close()


def test_a_status_text_cannot_add_fields(tmp_path: Path) -> None:
    # A reconnect's STATUS= carries the last error, which may quote what a server said.
    with NotifySocket(str(tmp_path / "notify")) as manager:
        notifier = Notifier(str(tmp_path / "notify"))
        assert notifier.send("STATUS=lost: refused\nMAINPID=1\nREADY=1\x1b[2J")
        assert manager.next().text.split("\n") == [
            "STATUS=lost: refused\\nMAINPID=1\\nREADY=1\\x1b[2J"
        ]
        notifier.close()


def test_message_to_an_abstract_socket() -> None:
    name = abstract_name()
    with NotifySocket(name) as manager:
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": manager.env})
        assert notifier is not None
        notifier.send("STATUS=connecting")
        notifier.send("WATCHDOG=1")
        assert [manager.next().text, manager.next().text] == ["STATUS=connecting", "WATCHDOG=1"]
        notifier.close()


def test_send_errors_are_swallowed_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier(str(tmp_path / "gone"))
    with caplog.at_level(logging.DEBUG, logger="tether"):
        assert not notifier.send("READY=1")
        assert not notifier.send("WATCHDOG=1")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        f"cannot notify the service manager at {tmp_path / 'gone'}: No such file or directory "
        "(further failures are not reported)"
    ]
    assert len(caplog.records) == 2  # the second only under --debug
    notifier.close()


def test_a_full_queue_never_blocks(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A manager that does not read: sends fail at once instead of freezing the tunnel."""
    with NotifySocket(str(tmp_path / "notify")):
        notifier = Notifier(str(tmp_path / "notify"))
        sent = 0
        while notifier.send("WATCHDOG=1"):
            sent += 1
            assert sent < 100_000, "the queue never filled"
        assert "Resource temporarily unavailable" in caplog.text
        notifier.close()
