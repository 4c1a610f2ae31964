"""free_port picks listening ports outside the kernel's ephemeral range, so an outgoing connection made
between the pick and the child's bind cannot take it."""

from __future__ import annotations

import socket

from apphost.embedded import ephemeral_range, free_port


def test_a_free_port_is_below_the_ephemeral_range_and_can_be_listened_on():
    low, high = ephemeral_range()
    assert 1024 <= low < high
    ports = {free_port() for _ in range(20)}
    assert all(p < low for p in ports)
    assert len(ports) > 1  # random, so two stacks starting together do not pick the same ports
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", ports.pop()))
        s.listen()
