"""Checkpoints of a `ClipLoader`'s place in an epoch: the state it saves,
the checks a state passes before it is trusted, and the merge that moves an
interrupted epoch onto another number of ranks.

A clip depends only on (seed, epoch, index), so a place in an epoch is a
count: the items of this rank's order for the epoch that are behind the
last batch handed to the caller (`position`). Resuming walks the order
again (indices only, nothing opened) and starts batching at `position`.

Re-sharding. An epoch's global order `G` is its ranks' orders interleaved
(item k of rank r at `k * world + r`, as `DistributedSampler` deals them
out). `merge_states` marks the items every rank has consumed in a bitset;
the epoch's remaining items are `G` without them (each once, in `G`'s
order), and rank r of a new world of w takes `remaining[r::w]`. Each new
rank's state carries that bitset, so a re-sharded epoch can be interrupted,
merged and re-sharded again; nothing in a state grows with the number of
resumes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Mapping, Sequence, Sized
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import Tensor
from torch.utils.data import DistributedSampler

from framefeed.data._order import EpochOrder

FORMAT = "framefeed.data.ClipLoader"
VERSION = 1


@dataclass
class Reshard:
    """A re-sharded epoch: `base` (an order description) dealt the epoch's
    items before the interruption, `consumed` (bool, one per dataset item)
    marks what the old ranks consumed, and this loader is `rank` of `world_size`."""

    base: dict[str, Any]
    consumed: np.ndarray
    rank: int
    world_size: int


@dataclass
class EpochCursor:
    """Where one iteration of a `ClipLoader` stands (or a loaded state says it stood).

    Attributes:
        epoch: the epoch.
        position: items of this rank's order for the epoch behind the last
            batch handed out (items of batches skipped entirely count too).
        batches: batches handed to the caller in this epoch.
        skipped: dataset indices skipped (`on_error="skip"`) in this epoch.
        finished: every batch of the epoch has been handed out.
        reshard: set when the epoch's remaining items were re-dealt over new ranks.
        covered: items the epoch's batches cover (its order's length, less a
            tail `drop_last` drops), None while unknown.
    """

    epoch: int
    position: int = 0
    batches: int = 0
    skipped: list[int] = field(default_factory=list)
    finished: bool = False
    reshard: Reshard | None = None
    covered: int | None = None

    @property
    def done(self) -> bool:
        return self.finished or (self.covered is not None and self.position >= self.covered)


# -- what identifies a dataset ------------------------------------------------------------------------


def dataset_identity(dataset: Any) -> dict[str, Any]:
    """The item count and digests of the sources, the labels and the
    sampling settings of a `ClipDataset`: what must be equal for a state to
    mean the same items and clips. (`on_error`, the device and FFmpeg
    threads may change between runs: they do not change which clips an item
    holds.)"""
    sampling = {
        "sampler": dataset.sampler_name,
        "arguments": {name: repr(value) for name, value in sorted(dataset.sampler_args.items())},
        "seek_mode": dataset.seek_mode,
        "dimension_order": dataset.dimension_order,
        "transforms": [repr(transform) for transform in dataset.transforms],
        "stream_index": dataset.stream_index,
    }
    labels = None if dataset.labels is None else [_label_token(label) for label in dataset.labels]
    return {
        "length": len(dataset.sources),
        "sources": _digest([_source_token(source) for source in dataset.sources]),
        "labels": _digest(labels),
        "sampling": _digest(sampling),
    }


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _content_digest(data: Any) -> str:
    return hashlib.blake2b(memoryview(data).cast("B"), digest_size=16).hexdigest()


def _source_token(source: Any) -> str:
    """A path by its name, bytes and tensors by their content, anything else
    (a file object) by its name or kind."""
    if isinstance(source, (str, os.PathLike)):
        return "path:" + os.fspath(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "bytes:" + _content_digest(source)
    if isinstance(source, Tensor):
        return "tensor:" + _content_digest(source.detach().cpu().contiguous().numpy())
    name = getattr(source, "name", None)
    return f"object:{type(source).__name__}:{name if isinstance(name, str) else ''}"


def _label_token(label: Any) -> str:
    if isinstance(label, Tensor):
        array = label.detach().cpu().contiguous()
        return f"tensor:{array.dtype}:{tuple(array.shape)}:{_content_digest(array.numpy())}"
    return f"{type(label).__name__}:{label!r}"


# -- orders: which items a rank visits in an epoch ----------------------------------------------------


def describe_order(sampler: Any) -> dict[str, Any]:
    """A JSON description of `sampler` from which any rank's order in any
    epoch can be recomputed: the loader's own `EpochOrder`, or torch's
    `DistributedSampler` (exactly that class: a subclass may deal items its
    own way). Any other sampler is "custom": resumable on its own rank only,
    by position, if it gives the same order for the same epoch in a new process."""
    if isinstance(sampler, EpochOrder):
        return {"kind": "epoch_order", "length": sampler.length, "shuffle": sampler.shuffle,
                "rank": 0, "world_size": 1}
    if type(sampler) is DistributedSampler:
        return {"kind": "distributed", "length": len(sampler.dataset), "shuffle": bool(sampler.shuffle),  # type: ignore[arg-type]
                "seed": int(sampler.seed), "drop_last": bool(sampler.drop_last),
                "rank": int(sampler.rank), "world_size": int(sampler.num_replicas)}
    kind = type(sampler)
    return {"kind": "custom", "type": f"{kind.__module__}.{kind.__qualname__}",
            "length": len(sampler) if isinstance(sampler, Sized) else None, "rank": 0, "world_size": 1}


def describe_for_humans(order: Mapping[str, Any]) -> str:
    kind = order.get("kind")
    if kind == "epoch_order":
        return f"the loader's own order (shuffle={order.get('shuffle')}) over {order.get('length')} items"
    if kind == "distributed":
        return (f"DistributedSampler rank {order.get('rank')} of {order.get('world_size')} (shuffle="
                f"{order.get('shuffle')}, seed={order.get('seed')}, drop_last={order.get('drop_last')}) "
                f"over {order.get('length')} items")
    return f"a {order.get('type')} sampler"


def rank_order(order: Mapping[str, Any], seed: int, epoch: int, rank: int) -> list[int]:
    """The indices rank `rank` visits in `epoch` under `order` (a description
    from `describe_order`, whose world size counts; `seed` is the loader's).

    Raises:
        ValueError: a custom sampler, whose order cannot be recomputed.
    """
    kind = order.get("kind")
    if kind == "epoch_order":
        epoch_order = EpochOrder(int(order["length"]), bool(order["shuffle"]), seed)
        epoch_order.set_epoch(epoch)
        return list(epoch_order)
    if kind == "distributed":
        sampler = DistributedSampler(range(int(order["length"])), num_replicas=int(order["world_size"]),  # type: ignore[arg-type]
                                     rank=rank, shuffle=bool(order["shuffle"]), seed=int(order["seed"]),
                                     drop_last=bool(order["drop_last"]))
        sampler.set_epoch(epoch)
        return [int(index) for index in sampler]
    raise ValueError(f"the order of {describe_for_humans(order)} cannot be recomputed for other ranks: "
                     "re-sharding needs the loader's own order (shuffle=) or a torch DistributedSampler")


def remaining_items(base: Mapping[str, Any], seed: int, epoch: int, consumed: np.ndarray) -> list[int]:
    """The epoch's items under `base` that `consumed` does not mark, each
    once, in the order of the ranks' orders interleaved (see module docstring)."""
    world = int(base["world_size"])
    orders = [rank_order(base, seed, epoch, rank) for rank in range(world)]
    seen = consumed.copy()
    remaining = []
    for position in range(max((len(order) for order in orders), default=0)):
        for order in orders:
            if position < len(order) and not seen[order[position]]:
                seen[order[position]] = True
                remaining.append(order[position])
    return remaining


def current_order(cursor: EpochCursor, seed: int) -> list[int] | None:
    """The indices of this rank's epoch when they differ from its sampler's
    (a re-sharded epoch), else None (iterate the sampler)."""
    reshard = cursor.reshard
    if reshard is None:
        return None
    remaining = remaining_items(reshard.base, seed, cursor.epoch, reshard.consumed)
    return remaining[reshard.rank::reshard.world_size]


# -- states ----------------------------------------------------------------------------------------------


def encode_bits(mask: np.ndarray) -> str:
    return base64.b64encode(np.packbits(mask.astype(bool), bitorder="little").tobytes()).decode("ascii")


def decode_bits(text: Any, length: int) -> np.ndarray:
    try:
        packed = np.frombuffer(base64.b64decode(str(text), validate=True), dtype=np.uint8)
    except ValueError as error:
        raise ValueError(f"the state's consumed-items bitset is not valid base64: {error}") from error
    if len(packed) != (length + 7) // 8:
        raise ValueError(f"the state's consumed-items bitset holds {len(packed) * 8} bits for {length} items")
    return np.unpackbits(packed, count=length, bitorder="little").astype(bool)


def rank_state(cursor: EpochCursor, identity: Mapping[str, Any], seed: int, order: Mapping[str, Any],
               batch_size: int, drop_last: bool) -> dict[str, Any]:
    """The plain (JSON-serialisable) state of one rank's loader at `cursor`."""
    reshard = None
    if cursor.reshard is not None:
        reshard = {"base": dict(cursor.reshard.base), "consumed": encode_bits(cursor.reshard.consumed),
                   "rank": cursor.reshard.rank, "world_size": cursor.reshard.world_size}
    return {
        "format": FORMAT,
        "version": VERSION,
        "scope": "rank",
        "dataset": dict(identity),
        "seed": seed,
        "epoch": cursor.epoch,
        "position": cursor.position,
        "batches": cursor.batches,
        "finished": cursor.done,
        "skipped": list(cursor.skipped),
        "order": dict(order),
        "reshard": reshard,
        "batch_size": batch_size,
        "drop_last": drop_last,
    }


def check_header(state: Any, what: str = "state") -> None:
    """Raises ValueError unless `state` is a `ClipLoader` state of a known version."""
    if not isinstance(state, Mapping) or state.get("format") != FORMAT:
        kind = type(state).__name__ if not isinstance(state, Mapping) else f"a dict without format={FORMAT!r}"
        raise ValueError(f"the {what} is not a ClipLoader state ({kind}); give what ClipLoader.state_dict() "
                         "or framefeed.data.merge_states() returned")
    if state.get("version") != VERSION:
        raise ValueError(f"the {what} has format version {state.get('version')!r}; this framefeed reads "
                         f"version {VERSION} only")
    if state.get("scope") not in ("rank", "global"):
        raise ValueError(f"the {what} has an unknown scope {state.get('scope')!r} (expected 'rank' or 'global')")


def check_same_data(state: Mapping[str, Any], identity: Mapping[str, Any], seed: int) -> None:
    """Raises ValueError naming what differs when `state` was saved for
    another dataset (length, sources, labels, sampling settings) or seed."""
    saved = state.get("dataset")
    if not isinstance(saved, Mapping):
        raise ValueError("the state has no dataset identity")
    if saved.get("length") != identity["length"]:
        raise ValueError(f"the state is for a dataset of {saved.get('length')} items, this loader's has "
                         f"{identity['length']}")
    for key, words in (("sources", "its sources (paths or contents) differ"),
                       ("labels", "its labels differ"),
                       ("sampling", "its sampling settings (sampler, its arguments, seek mode, dimension "
                                    "order, transforms or stream) differ")):
        if saved.get(key) != identity[key]:
            raise ValueError(f"the state is for another dataset: {words} from this loader's dataset")
    if state.get("seed") != seed:
        raise ValueError(f"the state was saved with seed {state.get('seed')!r}, this loader's seed is {seed}: "
                         f"make the loader with seed={state.get('seed')!r} to resume it")


def _int_field(state: Mapping[str, Any], key: str, minimum: int) -> int:
    value = state.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"the state's {key} is {value!r}: expected an int >= {minimum}")
    return value


def _skipped_field(state: Mapping[str, Any], length: int) -> list[int]:
    skipped = state.get("skipped", [])
    if not isinstance(skipped, list) or not all(isinstance(i, int) and 0 <= i < length for i in skipped):
        raise ValueError(f"the state's skipped items must be a list of dataset indices in [0, {length})")
    return list(skipped)


def _reshard_field(raw: Any, length: int) -> Reshard | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or not isinstance(raw.get("base"), Mapping):
        raise ValueError(f"the state's reshard entry is malformed: {raw!r}")
    return Reshard(dict(raw["base"]), decode_bits(raw.get("consumed"), length), _int_field(raw, "rank", 0),
                   _int_field(raw, "world_size", 1))


def cursor_from_state(state: Any, identity: Mapping[str, Any], seed: int, order: Mapping[str, Any]) -> EpochCursor:
    """The cursor a loader (dataset `identity`, `seed`, its sampler's
    `order`) resumes from `state`: a rank's state, or a global one from
    `merge_states`, which this loader's rank then shares.

    Raises:
        ValueError: not a state, an unknown version, another dataset or
            seed, a rank state of another rank or sampler, a global state
            for a sampler whose rank is unknown.
    """
    check_header(state)
    check_same_data(state, identity, seed)
    length = int(identity["length"])
    epoch = _int_field(state, "epoch", 0)
    skipped = _skipped_field(state, length)
    if state["scope"] == "global":
        if order["kind"] == "custom":
            raise ValueError(f"a merged (global) state is shared out by rank, but this loader's sampler is "
                             f"{describe_for_humans(order)}, whose rank is unknown: use the loader's own order "
                             "or a torch DistributedSampler")
        base = state.get("base")
        if not isinstance(base, Mapping):
            raise ValueError("the global state has no base order")
        consumed = decode_bits(state.get("consumed"), length)
        reshard = Reshard(dict(base), consumed, int(order["rank"]), int(order["world_size"]))
        return EpochCursor(epoch, skipped=skipped, finished=bool(state.get("finished")), reshard=reshard)
    saved_order = state.get("order")
    if saved_order != dict(order):
        saved = describe_for_humans(saved_order) if isinstance(saved_order, Mapping) else repr(saved_order)
        raise ValueError(f"the state was saved by a loader visiting {saved}; this loader visits "
                         f"{describe_for_humans(order)}. To resume on another number of ranks, merge every "
                         "rank's state with framefeed.data.merge_states() and load the result on each new rank")
    position = _int_field(state, "position", 0)
    if order.get("length") is not None and state.get("reshard") is None and position > int(order["length"]):
        raise ValueError(f"the state's position ({position}) lies past the {order['length']} items of this "
                         "rank's epoch")
    reshard = _reshard_field(state.get("reshard"), length)
    if reshard is not None and (reshard.rank, reshard.world_size) != (order["rank"], order["world_size"]):
        raise ValueError(f"the state is rank {reshard.rank} of {reshard.world_size} of a re-sharded epoch, this "
                         f"loader is rank {order['rank']} of {order['world_size']}")
    return EpochCursor(epoch, position, _int_field(state, "batches", 0), skipped, bool(state.get("finished")),
                       reshard)


def merge_states(states: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One state for a whole job from the states of all its ranks, to resume
    the interrupted epoch on any number of ranks.

    Give every rank's `ClipLoader.state_dict()` from the same moment (one per
    rank, any order). The result (JSON-serialisable, "scope": "global")
    marks the items any rank consumed; load it into every new rank's loader:
    rank r of w (its `DistributedSampler`'s, or 0 of 1 without one) then
    visits `remaining[r::w]`, where `remaining` is the epoch's items no old
    rank consumed, each once, in a deterministic order (the old ranks'
    orders interleaved). So every remaining item is seen exactly once across
    the new ranks (with `drop_last=False`); their item counts differ by at
    most one. A rank that had handed out its last batch counts its whole
    order as consumed (a tail its `drop_last` dropped included). The epochs
    after it follow the new loaders' samplers.

    Raises:
        ValueError: no states; a state that is not a `ClipLoader` state or
            of an unknown version; states of different datasets, seeds or
            epochs; ranks missing, repeated or of different world sizes;
            samplers whose orders cannot be recomputed (custom samplers).
    """
    if isinstance(states, Mapping) or not isinstance(states, Sequence) or not states:
        raise ValueError("merge_states needs a non-empty list with every rank's state")
    for rank, state in enumerate(states):
        check_header(state, f"state at position {rank}")
    if len(states) == 1 and states[0]["scope"] == "global":
        return dict(states[0])
    if any(state["scope"] == "global" for state in states):
        raise ValueError("a merged (global) state cannot be merged again with others: load it into each rank's "
                         "loader first")
    first = states[0]
    for key in ("dataset", "seed", "epoch"):
        values = [state.get(key) for state in states]
        if any(value != values[0] for value in values):
            raise ValueError(f"the ranks' states disagree on {key}: {values}; merge states taken at the same "
                             "moment of one job")
    identity, seed, epoch = first["dataset"], first["seed"], _int_field(first, "epoch", 0)
    length = _int_field(identity, "length", 0)
    layouts = [_layout(state, length) for state in states]
    worlds = {world for _, world, _ in layouts}
    ranks = sorted(rank for rank, _, _ in layouts)
    if len(worlds) != 1 or ranks != list(range(len(states))):
        raise ValueError(f"merge_states needs exactly one state per rank of one world: got ranks {ranks} of world "
                         f"sizes {sorted(worlds)}")
    bases = [_base(state, reshard) for state, (_, _, reshard) in zip(states, layouts, strict=True)]
    if any(base != bases[0] for base in bases):
        raise ValueError("the ranks' states come from differently configured samplers (or different re-shards): "
                         f"{[describe_for_humans(b) for b in bases]}")
    reshard0 = layouts[0][2]
    consumed = reshard0.consumed.copy() if reshard0 is not None else np.zeros(length, dtype=bool)
    if any((r.consumed != consumed).any() for _, _, r in layouts if r is not None):
        raise ValueError("the ranks' states come from different re-shards of the epoch")
    for state, (rank, _, reshard) in zip(states, layouts, strict=True):
        if reshard is not None:
            cursor = EpochCursor(epoch, reshard=reshard)
            order = current_order(cursor, seed) or []
        else:
            order = rank_order(state["order"], seed, epoch, rank)
        position = _int_field(state, "position", 0)
        taken = order if state.get("finished") else order[:position]
        consumed[np.asarray(taken, dtype=np.int64)] = True
    remaining = remaining_items(bases[0], seed, epoch, consumed)
    skipped = sorted({index for state in states for index in _skipped_field(state, length)})
    return {
        "format": FORMAT,
        "version": VERSION,
        "scope": "global",
        "dataset": dict(identity),
        "seed": seed,
        "epoch": epoch,
        "base": dict(bases[0]),
        "consumed": encode_bits(consumed),
        "remaining": len(remaining),
        "finished": not remaining,
        "skipped": skipped,
    }


def _layout(state: Mapping[str, Any], length: int) -> tuple[int, int, Reshard | None]:
    reshard = _reshard_field(state.get("reshard"), length)
    if reshard is not None:
        return reshard.rank, reshard.world_size, reshard
    order = state.get("order")
    if not isinstance(order, Mapping):
        raise ValueError("a state has no order description")
    return int(order.get("rank", 0)), int(order.get("world_size", 1)), None


def _base(state: Mapping[str, Any], reshard: Reshard | None) -> dict[str, Any]:
    """The order that dealt the epoch out first: a re-shard's base, else
    the state's own sampler with its rank left out (the same on every rank)."""
    if reshard is not None:
        return dict(reshard.base)
    order = dict(state["order"])
    if order.get("kind") == "custom":
        raise ValueError(f"the epoch was dealt out by {describe_for_humans(order)}, whose order cannot be "
                         "recomputed for other ranks: re-sharding needs the loader's own order or a torch "
                         "DistributedSampler")
    order["rank"] = 0
    return order
