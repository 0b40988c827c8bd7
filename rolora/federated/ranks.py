"""Client ids and ranks: one int rank for everyone, or a mapping client -> rank (key ``None``: everyone else).

A client id is an ``int`` or a ``str``; anything else is refused by name, because a float ``1.0``
or ``True`` would silently be client 1, and ``None`` would silently get the default rank.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rolora.federated.api import AggregationError

RankMap = dict[int | str | None, int]


def check_client_id(client: object) -> None:
    """Raise unless ``client`` is an int (not a bool) or a str."""
    if isinstance(client, bool) or not isinstance(client, (int, str)):
        raise AggregationError(
            f"client id {client!r} ({type(client).__name__}): client ids must be int or str"
        )


def normalise_ranks(ranks: int | Mapping[int | str | None, int]) -> RankMap:
    """Validate ``ranks`` and return it as a mapping (an int r becomes ``{None: r}``)."""
    rank_map: RankMap = {None: ranks} if not isinstance(ranks, Mapping) else dict(ranks)
    if not rank_map:
        raise AggregationError("ranks: empty mapping; give an int or at least one client's rank")
    for client, r in rank_map.items():
        if client is not None:
            check_client_id(client)
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            who = "default rank" if client is None else f"client {client!r}"
            raise AggregationError(f"ranks: {who} has rank {r!r}; ranks must be integers >= 1")
    return rank_map


def rank_of(ranks: Mapping[int | str | None, int], client: int | str) -> int:
    """The rank of ``client``: its own entry, else the default (key ``None``)."""
    check_client_id(client)
    if client in ranks:
        return ranks[client]
    if None in ranks:
        return ranks[None]
    raise AggregationError(
        f"client {client!r}: no rank known for it (ranks list {sorted(map(repr, ranks))} and no default)"
    )


def max_rank(ranks: Mapping[int | str | None, int]) -> int:
    """The largest rank any client may have (the server keeps factors of this rank)."""
    return max(ranks.values())


def check_uniform_ranks(method_name: str, ranks: Mapping[int | str | None, int]) -> None:
    """Raise if ``ranks`` mixes ranks and the method cannot aggregate that."""
    distinct = sorted(set(ranks.values()))
    if len(distinct) > 1:
        listing = ", ".join(f"{'default' if c is None else repr(c)}: {r}" for c, r in ranks.items())
        raise AggregationError(
            f"{method_name}: clients have different ranks ({listing}) but this method needs one rank "
            "for every client; use flexlora, flora or fed-alora for mixed ranks"
        )


def participant_ranks(
    ranks: Mapping[int | str | None, int] | int, clients: Sequence[int | str] | int
) -> dict[int | str | None, int]:
    """client -> rank for a round's participants (``clients`` an id list, or a count of default-rank clients)."""
    rank_map = normalise_ranks(ranks)
    if isinstance(clients, bool):
        raise AggregationError(f"communication: clients must be a count or a list of ids, got {clients!r}")
    if isinstance(clients, int):
        if clients < 1:
            raise AggregationError(f"communication: need at least one client, got {clients}")
        if None in rank_map:
            r = rank_map[None]
        elif len(set(rank_map.values())) == 1:
            r = next(iter(rank_map.values()))
        else:
            raise AggregationError("communication: mixed ranks need the clients' ids, not a count")
        return {i: r for i in range(clients)}
    if len(clients) == 0:
        raise AggregationError("communication: empty list of clients")
    return {c: rank_of(rank_map, c) for c in clients}
