"""The Ray cluster's address: SR_RAY_ADDRESS taken apart, private networks only (unless allowed), never Ray Client,
reachability; standard library only."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from web.config import ConfigError

if TYPE_CHECKING:
    from web.config import Config

# Where a Ray cluster may be reached without SR_RAY_ALLOW_PUBLIC_ADDRESS: loopback, RFC 1918, shared
# address space (RFC 6598, some VPCs and VPNs), link-local, IPv6 unique-local. Not Python's `is_private`,
# which also counts documentation ranges that are not private networks.
PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16",
              "::1/128", "fc00::/7", "fe80::/10")
)


def is_private_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in PRIVATE_NETWORKS if network.version == address.version)


def literal_host(address: str) -> str | None:
    """The host of SR_RAY_ADDRESS when it is written as an IP address (None for auto or a name)."""
    if address.strip() == "auto":
        return None
    rest = address.split("://", 1)[-1]
    host = rest.rsplit(":", 1)[0].strip("[]") if ":" in rest else rest
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    return host


def public_refusal(address: str, public: list[str]) -> str:
    return (
        f"SR_RAY_ADDRESS={address!r} is a public address ({', '.join(public)}); keep a Ray cluster on a "
        "private network, even with its token (or set SR_RAY_ALLOW_PUBLIC_ADDRESS=1 on purpose)"
    )


def check_settings(config: "Config") -> None:
    """ConfigError for an address the backend must never use; runs at startup, before Ray is imported."""
    address = config.ray_address
    if address.strip().startswith("ray://"):
        raise ConfigError(
            f"SR_RAY_ADDRESS={address!r}: Ray Client (ray://) cannot stream a job's events; connect "
            "to the cluster itself: auto on a machine of the cluster, or the head's GCS address (head:6379)"
        )
    # An address written as a number is checked here, before anything is sent to it; a host name is
    # resolved and checked by the Ray backend before it connects.
    host = literal_host(address)
    if host is not None and not config.ray_allow_public_address and not is_private_address(ipaddress.ip_address(host)):
        raise ConfigError(public_refusal(address, [host]))


@dataclass(frozen=True)
class RayAddress:
    """SR_RAY_ADDRESS taken apart: `auto` (a cluster this machine belongs to) or `host:port` (the head's GCS)."""

    raw: str
    host: str | None  # None for auto
    port: int | None = None

    @classmethod
    def parse(cls, raw: str) -> "RayAddress":
        raw = raw.strip()
        if raw == "auto":
            return cls(raw, None)
        parts = urlsplit(raw if "://" in raw else f"gcs://{raw}")
        if parts.scheme not in ("ray", "gcs") or not parts.hostname:
            raise ConfigError(f"SR_RAY_ADDRESS={raw!r}: use auto or host:port (the head's GCS, e.g. head:6379)")
        try:
            port = parts.port
        except ValueError:
            port = None
        if port is None:
            raise ConfigError(f"SR_RAY_ADDRESS={raw!r} has no port: use host:6379")
        return cls(raw, parts.hostname, port)


def public_addresses(host: str) -> list[str]:
    """The addresses `host` stands for outside loopback and private networks (OSError if unresolvable)."""
    try:
        found = [ipaddress.ip_address(host)]
    except ValueError:
        found = [ipaddress.ip_address(info[4][0]) for info in socket.getaddrinfo(host, None)]
    return sorted({str(a) for a in found if not is_private_address(a)})


def check_reachable(host: str, port: int, timeout: float = 5.0) -> None:
    """Raises OSError unless something accepts TCP connections there (ray.init would wait for minutes)."""
    with socket.create_connection((host, port), timeout=timeout):
        pass
