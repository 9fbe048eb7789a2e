"""Network sets of `cidr`: the lookup by prefix length agrees with `ipaddress` network by network."""

from __future__ import annotations

import ipaddress
import random

import pytest

from rulesd.rules.networks import NetworkError, Networks, address_number, networks_of, parse_network


def _random_network(rng: random.Random) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if rng.random() < 0.6:
        prefix = rng.choice((0, 8, 12, 16, 20, 24, 28, 31, 32))
        return ipaddress.IPv4Network((rng.getrandbits(32), prefix), strict=False)
    prefix = rng.choice((0, 10, 32, 48, 64, 96, 104, 120, 128))
    base = rng.choice((0x2001_0DB8 << 96, 0xFE80 << 112, 0xFFFF << 32, 0))
    return ipaddress.IPv6Network((base | rng.getrandbits(96 if prefix < 32 else 32), prefix), strict=False)


def _random_address(rng: random.Random, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> str:
    """An address, often inside or just beside one of `networks`, sometimes IPv4-mapped."""
    roll = rng.random()
    if roll < 0.5 and networks:
        network = rng.choice(networks)
        offset = rng.randrange(network.num_addresses) if rng.random() < 0.7 else network.num_addresses
        number = (int(network.network_address) + offset) % (1 << network.max_prefixlen)
        address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(
            number if network.version == 4 else ipaddress.IPv6Address(number)
        )
    elif roll < 0.8:
        address = ipaddress.IPv4Address(rng.getrandbits(32))
    else:
        address = ipaddress.IPv6Address(rng.getrandbits(128))
    if address.version == 4 and rng.random() < 0.3:
        return f"::ffff:{address}"
    return str(address)


def _reference(networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network], text: str) -> bool:
    """Network by network, as `ipaddress` says, an IPv4 address and its IPv4-mapped IPv6 form
    (`::ffff:a.b.c.d`) being one address."""
    address = ipaddress.ip_address(text)
    forms: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [address]
    if isinstance(address, ipaddress.IPv4Address):
        forms.append(ipaddress.IPv6Address(f"::ffff:{address}"))
    elif address.ipv4_mapped is not None:
        forms.append(address.ipv4_mapped)
    return any(form in n for form in forms for n in networks if n.version == form.version)


@pytest.mark.parametrize("seed", range(5))
def test_lookup_by_prefix_length_agrees_with_ipaddress(seed: int) -> None:
    """Random sets of IPv4 and IPv6 networks (nested, overlapping, mapped) and addresses in
    and around them: the set says what checking every network with `ipaddress` says."""
    rng = random.Random(seed)
    for _ in range(40):
        networks = [_random_network(rng) for _ in range(rng.randint(1, 12))]
        inside, outside = Networks(networks).test(inside=True), Networks(networks).test(inside=False)
        for _ in range(50):
            text = _random_address(rng, networks)
            expected = _reference(networks, text)
            assert (expected, not expected) == (inside(text), outside(text)), (networks, text)


def test_nested_networks_are_looked_up_once_per_prefix_length() -> None:
    """10.1.0.0/16 inside 10.0.0.0/8 adds no lookup; two lengths make two."""
    assert 1 == len(Networks([parse_network("10.0.0.0/8"), parse_network("10.1.0.0/16")])._levels)
    assert 2 == len(Networks([parse_network("10.0.0.0/8"), parse_network("192.168.0.0/16")])._levels)
    many = [parse_network(f"10.{i}.0.0/16") for i in range(0, 256, 2)]
    assert 1 == len(Networks(many)._levels)  # 128 networks, one set lookup


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.1.2.3", 0xFFFF_0A01_0203),
        ("::ffff:10.1.2.3", 0xFFFF_0A01_0203),
        ("::ffff:a01:203", 0xFFFF_0A01_0203),
        ("2001:db8::1", 0x2001_0DB8 << 96 | 1),
        ("fe80::1%eth0", 0xFE80 << 112 | 1),
        ("10.1.2", None),
        ("010.1.2.3", None),
        ("10.1.2.3/32", None),
        ("", None),
        ("::1 ", None),
    ],
)
def test_address_numbers(text: str, expected: int | None) -> None:
    """IPv4 addresses are numbered as their IPv4-mapped IPv6 form; what `ipaddress` does not
    read as an address has no number."""
    assert expected == address_number(text)


def test_an_ipv4_mapped_network_is_the_ipv4_network() -> None:
    """`::ffff:10.0.0.0/104` and `10.0.0.0/8` hold the same addresses, written either way."""
    for written in ("::ffff:10.0.0.0/104", "10.0.0.0/8"):
        test = Networks([parse_network(written)]).test(inside=True)
        assert [True, True, False, False] == [
            test(a) for a in ("10.200.1.1", "::ffff:10.200.1.1", "11.0.0.1", "::10.200.1.1")
        ]


def test_rules_listing_the_same_networks_share_one_set_that_answers_each_address() -> None:
    """One compiled set per list of networks; its memory of the last address never answers
    for another address."""
    shared = networks_of(("10.0.0.0/8", "2001:db8::/32"))
    assert shared is networks_of(("10.0.0.0/8", "2001:db8::/32"))
    inside = shared.test(inside=True)
    answers = [inside(a) for a in ("10.1.2.3", "10.1.2.3", "192.0.2.1", "".join(["10.", "9.9.9"]), "x", "2001:db8::1")]
    assert [True, True, False, True, False, True] == answers


def test_the_first_network_that_is_not_one_is_named_with_its_index() -> None:
    """`networks_of` says which of the written networks it could not read, and why."""
    with pytest.raises(NetworkError, match=r"invalid network '10\.0\.0\.0/33'") as raised:
        networks_of(("10.0.0.0/8", "10.0.0.0/33"))
    assert 1 == raised.value.index
