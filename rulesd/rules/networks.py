"""IP networks of the `cidr` and `not_cidr` operators: parsed once, looked up by prefix length.

Addresses and networks are read by the standard `ipaddress` module. Both live in one 128-bit
space, IPv4 as its IPv4-mapped IPv6 form (`10.1.2.3` is `::ffff:10.1.2.3`), so that an address
a dual-stack socket logs as `::ffff:10.1.2.3` is inside `10.0.0.0/8`, as the same client over
IPv4 would be. A set of networks keeps, for each prefix length it holds, the set of its
networks' leading bits: an address is looked up once per prefix length present (most sets
have one to three), however many networks the set holds.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Sequence
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_BITS = 128
_MAPPED = 0xFFFF << 32  # ::ffff:0:0/96, where IPv4 addresses live in the IPv6 space
_MAPPED_PREFIX = 96


def parse_network(text: str) -> Network:
    """The network `text` writes (`10.0.0.0/8`, `2001:db8::/32`; an address alone is a network
    of that one address); ValueError saying why it is not one."""
    kind = ipaddress.IPv6Network if ":" in text else ipaddress.IPv4Network
    try:
        return kind(text)
    except ValueError as exc:
        why = str(exc)
        if "has host bits set" in why:
            why += f" (the network is {kind(text, strict=False)})"
        raise ValueError(f"invalid network {text!r}: {why}") from None


# Global state: a cache of the pure function below, bounded, shared by every rule set. The
# same addresses recur from event to event, and parsing one costs ten times a lookup here.
@functools.lru_cache(maxsize=16384)
def address_number(text: str) -> int | None:
    """The address `text` writes as a number in the IPv6 space (IPv4 as `::ffff:a.b.c.d`), or
    None if `text` is not an IPv4 or IPv6 address (a scope such as `%eth0` is ignored)."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return int(address) | _MAPPED if address.version == 4 else int(address)


class Networks:
    """A set of networks, looked up by the prefix lengths present."""

    __slots__ = ("_levels", "lookup", "networks")

    def __init__(self, networks: Sequence[Network]) -> None:
        self.networks = tuple(networks)
        """The networks as written (for showing the operand)."""
        by_shift: dict[int, set[int]] = {}
        for network in ipaddress.collapse_addresses(in_ipv6_space(n) for n in networks):
            shift = _BITS - network.prefixlen
            by_shift.setdefault(shift, set()).add(int(network.network_address) >> shift)
        # The widest networks first: of nested ones only the widest is kept (collapsed above).
        self._levels = tuple((shift, frozenset(found)) for shift, found in sorted(by_shift.items(), reverse=True))
        self.lookup: Callable[[str], bool | None] = _memoised_lookup(self._levels)
        """`lookup(text)`: whether the address `text` is inside the networks, None if `text` is
        not an address; the answer for the last text is remembered (rules that list the same
        networks share one `Networks`, see `networks_of`)."""

    def holds(self, number: int) -> bool:
        """Whether the address `number` (see `address_number`) is inside one of the networks."""
        return any(number >> shift in found for shift, found in self._levels)

    def test(self, *, inside: bool) -> Callable[[Any], bool]:
        """A test of a field's value: an address string inside (with `inside=False`, outside)
        the networks; any other value passes neither."""
        lookup, wanted = self.lookup, inside
        return lambda value: type(value) is str and lookup(value) is wanted


def _memoised_lookup(levels: tuple[tuple[int, frozenset[int]], ...]) -> Callable[[str], bool | None]:
    parse = address_number
    # One tuple, replaced in one assignment: a reader in another thread sees a value with its
    # own answer, never one with another's.
    last: tuple[object, bool | None] = (None, None)

    def lookup(text: str) -> bool | None:
        nonlocal last
        seen, answer = last
        if seen is text:
            return answer
        number = parse(text)
        answer = None if number is None else False
        if number is not None:
            for shift, found in levels:
                if number >> shift in found:
                    answer = True
                    break
        last = (text, answer)
        return answer

    return lookup


# Global state: rules that list the same networks share one compiled set (and its memory of
# the last address), across the rule sets of a process; bounded.
@functools.lru_cache(maxsize=1024)
def networks_of(written: tuple[str, ...]) -> Networks:
    """The compiled set of the networks `written` (each as `parse_network` reads it); ValueError
    names the first that is not a network, with its index in `written`, as `(index, message)`."""
    parsed = []
    for i, text in enumerate(written):
        try:
            parsed.append(parse_network(text))
        except ValueError as exc:
            raise NetworkError(i, str(exc)) from None
    return Networks(parsed)


class NetworkError(ValueError):
    """A text that is not a network: its index among the networks written, and why."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index


def in_ipv6_space(network: Network) -> ipaddress.IPv6Network:
    """`network` in the one 128-bit space addresses are looked up in (IPv4 as IPv4-mapped)."""
    if network.version == 6:
        return network
    return ipaddress.IPv6Network((int(network.network_address) | _MAPPED, network.prefixlen + _MAPPED_PREFIX))
