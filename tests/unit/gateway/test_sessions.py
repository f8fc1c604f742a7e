"""What the relay reads of its sessions: their bytes as ss counts them."""

from __future__ import annotations

from tether.gateway.sessions import parse_ss

SS = (
    "0      0      127.0.0.1:40775 127.0.0.1:45272\n"
    "\t bbr wscale:10,10 rto:204 mss:32768 bytes_sent:300 bytes_acked:300 "
    "bytes_received:5000 segs_out:2 segs_in:4\n"
    "0      0      [::ffff:127.0.0.1]:40775 [::ffff:10.0.0.7]:50000\n"
    "\t cubic bytes_acked:1 bytes_received:2\n"
    "0      0      [::1]:40775 [::1]:50001\n"
    "\t cubic rto:204\n"
)


def test_each_connection_by_its_peer() -> None:
    assert parse_ss(SS) == {
        ("127.0.0.1", 45272): (5000, 300),
        ("10.0.0.7", 50000): (2, 1),
        ("::1", 50001): (0, 0),
    }


def test_nothing_readable_is_nothing() -> None:
    assert parse_ss("") == {}
    assert parse_ss("garbage\n\tbytes_acked:5\n") == {}
