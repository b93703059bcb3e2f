"""Refuses every network access but loopback, in the test process and its children.

`install()` replaces the socket functions through which Python code reaches
another machine: name resolution (`getaddrinfo`, `gethostbyname`, ...) as
well as `connect`, so a test that would download MedMNIST files or ImageNet
weights fails at once with the host it tried, instead of waiting on DNS.
Code in C++ (TensorFlow's gRPC) is not covered; no test gives it a remote host.
"""

import ipaddress
import socket

ENV = "KDKERAS_TESTS_OFFLINE"

_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback", ""}
_real = {}


def _is_loopback(host):
    if host is None:
        return True  # getaddrinfo(None, port): the local wildcard or loopback address
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = str(host).split("%")[0]
    if host.lower() in _LOCAL_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def _refuse(what, host):
    raise OSError(f"tests must not reach the network ({what} {host!r}); use a local file or file:// URL")


def _getaddrinfo(host, *args, **kwargs):
    if not _is_loopback(host):
        _refuse("tried to resolve", host)
    return _real["getaddrinfo"](host, *args, **kwargs)


def _by_name(name):
    def guarded(host, *args):
        if not _is_loopback(host):
            _refuse("tried to resolve", host)
        return _real[name](host, *args)

    return guarded


def _connect(name):
    def guarded(self, address):
        if self.family != getattr(socket, "AF_UNIX", None):
            host = address[0] if isinstance(address, tuple) else address
            if not _is_loopback(host):
                _refuse("tried to connect to", address)
        return _real[name](self, address)

    return guarded


def install():
    """Installs the guard (idempotent)."""
    if _real:
        return
    for name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr"):
        _real[name] = getattr(socket, name)
    for name in ("connect", "connect_ex"):
        _real[name] = getattr(socket.socket, name)
    socket.getaddrinfo = _getaddrinfo
    for name in ("gethostbyname", "gethostbyname_ex", "gethostbyaddr"):
        setattr(socket, name, _by_name(name))
    socket.socket.connect = _connect("connect")
    socket.socket.connect_ex = _connect("connect_ex")
