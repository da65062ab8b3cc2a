"""The API's listening sockets, bound by pushguard before uvicorn starts (so a taken port is a
one-line error): every address the host names, IPv6 sockets IPv6 only, as asyncio binds."""

from __future__ import annotations

import socket

import pytest

from pushguard.exceptions import PushguardError
from pushguard.runner import _listen


def test_all_interfaces_bind_v4_and_a_v6_socket_that_is_v6_only() -> None:
    socks = _listen("", 0)
    try:
        families = {s.family for s in socks}
        assert socket.AF_INET in families
        for s in socks:
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
            if s.family == socket.AF_INET6:  # `--host ::` must not open IPv4 as well
                assert s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
    finally:
        for s in socks:
            s.close()


def test_a_taken_port_and_an_unknown_host_are_errors_naming_them() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PushguardError, match=f"could not listen on 127.0.0.1:{port}: "
                                                 "Address already in use"):
            _listen("127.0.0.1", port)
    with pytest.raises(PushguardError, match="could not listen on nowhere.invalid:80"):
        _listen("nowhere.invalid", 80)
