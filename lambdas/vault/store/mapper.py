"""One mapping between the vault's records and DynamoDB items, for every item kind.

Values go through boto3's `TypeSerializer` / `TypeDeserializer` (strings and integers, most
attributes, are written and a string read directly: `attribute_value`); what differs between
kinds (keys, indexes, TTL, attribute names) is the kind's spec in `schema.py`. A record's
fields are stored as attributes of the same name, a nested record (the user) as
`<field>_<name>`; a field with a default is left out while it holds nothing (None, False or "")
and reads back as its default.
Reading ignores the attributes a kind does not know (keys, TTL, index keys, newer attributes).
"""

from __future__ import annotations

import dataclasses
import json
import re
import string
import types
import typing
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, Generic, TypeVar

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from vault.store import schema
from vault.store.schema import Index, Kind

R = TypeVar("R")
AttributeValue = dict[str, Any]
Item = dict[str, AttributeValue]

_serialize = typing.cast(Callable[[Any], AttributeValue], TypeSerializer().serialize)
_deserialize = typing.cast(Callable[[AttributeValue], Any], TypeDeserializer().deserialize)
_formatter = string.Formatter()


_INT_LIMIT = 10**38
"""DynamoDB numbers have at most 38 significant digits; beyond, `TypeSerializer` raises."""


def attribute_value(value: Any) -> AttributeValue:
    """A Python value as a DynamoDB attribute value (a float as its exact decimal).

    A string and an integer within DynamoDB's 38 digits are written directly (what
    `TypeSerializer` makes of them, without its type probing and decimal context: most
    attributes are keys and identifiers); anything else goes through `TypeSerializer`."""
    kind = type(value)
    if kind is str:
        return {"S": value}
    if kind is int and -_INT_LIMIT < value < _INT_LIMIT:
        return {"N": str(value)}
    if isinstance(value, float):
        value = int(value) if value.is_integer() else Decimal(repr(value))
    return _serialize(value)


def attribute_values(values: Mapping[str, Any]) -> dict[str, AttributeValue]:
    """Expression attribute values (`{":now": 1700000000}`) as DynamoDB attribute values."""
    return {name: attribute_value(value) for name, value in values.items()}


class _Names(dict[str, Any]):
    """What key patterns are formatted from: fields, and the kind's computed names on demand."""

    def __init__(
        self, fields: Mapping[str, Any], computed: Mapping[str, Callable[[Mapping[str, Any]], str]]
    ) -> None:
        super().__init__(fields)
        self._computed = computed

    def __missing__(self, name: str) -> Any:
        if name not in self._computed:
            raise KeyError(name)
        return self._computed[name](self)


def _reader(hint: Any) -> Callable[[Any], Any]:
    """Turns a deserialized value (Decimal, Binary, list...) into the field's Python type."""
    if isinstance(hint, types.UnionType):
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
    base = typing.get_origin(hint) or hint
    if base in (str, int, float, bool, bytes, tuple):
        return typing.cast(Callable[[Any], Any], base)
    raise TypeError(f"the mapper has no rule for fields of type {hint!r}")


@dataclasses.dataclass(frozen=True)
class _Field:
    name: str
    attribute: str
    read: Callable[..., Any]
    """Builds the field's value: from the deserialized attribute, or for a nested record from
    its fields (keywords)."""
    optional: bool
    json: bool = False
    nested: tuple[tuple[str, Callable[[Any], Any]], ...] = ()
    """A nested record's fields and their readers: stored as `<attribute>_<name>`."""


def _key_regex(pattern: str) -> re.Pattern[str]:
    parts = []
    for literal, name, _, _ in _formatter.parse(pattern):
        parts.append(re.escape(literal))
        if name is not None:
            parts.append(f"(?P<{name}>.*)")
    return re.compile("".join(parts))


class ItemMapper(Generic[R]):
    """Maps one kind's records to items and back, and formats its keys."""

    def __init__(self, kind: Kind[R]) -> None:
        self.kind = kind
        self.table = kind.table
        hints = typing.get_type_hints(kind.record)
        self._stored: list[_Field] = []
        self._from_key: list[tuple[str, str, re.Pattern[str]]] = []
        self._from_ttl: str | None = None
        self._omitted: dict[str, Any] = {}
        for f in dataclasses.fields(typing.cast(Any, kind.record)):
            optional = not (
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            )
            if f.name in kind.transient:
                continue
            if f.name in kind.omitted_defaults:
                self._omitted[f.name] = f.default
            if f.name in kind.in_keys_only:
                self._plan_key_only(f.name)
                continue
            hint = hints[f.name]
            attribute = kind.attributes.get(f.name, f.name)
            if dataclasses.is_dataclass(hint):
                nested_hints = typing.get_type_hints(hint)
                nested = tuple(
                    (n.name, _reader(nested_hints[n.name])) for n in dataclasses.fields(hint)
                )
                field = _Field(
                    f.name, attribute, typing.cast(type[Any], hint), optional, nested=nested
                )
            elif f.name in kind.json:
                field = _Field(f.name, attribute, json.loads, optional, json=True)
            else:
                field = _Field(f.name, attribute, _reader(hint), optional)
            self._stored.append(field)

    def _plan_key_only(self, name: str) -> None:
        if self.kind.ttl is not None and self.kind.ttl[0] == name:
            self._from_ttl = name
            return
        for attribute, pattern in (
            (self.table.partition_key, self.kind.pk),
            (self.table.sort_key, self.kind.sk),
        ):
            if attribute is not None and pattern is not None and "{" + name + "}" in pattern:
                self._from_key.append((name, attribute, _key_regex(pattern)))
                return
        raise TypeError(f"{self.kind.type}: {name} is neither in a key pattern nor the TTL")

    # --- keys ---------------------------------------------------------------------------------

    def key(self, **ids: Any) -> Item:
        """The primary key of the item with these fields."""
        names = _Names(ids, self.kind.names)
        key = {self.table.partition_key: self.kind.pk.format_map(names)}
        if self.kind.sk is not None and self.table.sort_key is not None:
            key[self.table.sort_key] = self.kind.sk.format_map(names)
        return {name: {schema.KEY_TYPE: value} for name, value in key.items()}

    def key_of(self, record: R) -> Item:
        return self.key(**vars(record))

    def partition(self, index: Index | None = None, **ids: Any) -> str:
        """The partition key value (of the table, or of `index`) of the items with these ids."""
        pattern = self.kind.pk if index is None else self.kind.indexes[index][0]
        return pattern.format_map(_Names(ids, self.kind.names))

    def sort_key(self, index: Index | None = None, **ids: Any) -> str:
        """The sort key value (of the table, or of `index`) formatted up to the first field that
        `ids` lacks (or holds None): a prefix for `begins_with`."""
        pattern = self.kind.sk if index is None else self.kind.indexes[index][1]
        if pattern is None:
            raise TypeError(f"{self.kind.type} items have no sort key")
        names = _Names(ids, self.kind.names)
        text = []
        for literal, name, spec, _ in _formatter.parse(pattern):
            text.append(literal)
            if name is None:
                continue
            try:
                value, _ = _formatter.get_field(name, (), names)
            except KeyError:
                break
            if value is None:
                break
            text.append(format(value, spec or ""))
        return "".join(text)

    # --- items --------------------------------------------------------------------------------

    def to_item(self, record: R) -> Item:
        kind, table = self.kind, self.table
        names = _Names(vars(record), kind.names)
        item: dict[str, Any] = {table.partition_key: kind.pk.format_map(names)}
        if kind.sk is not None and table.sort_key is not None:
            item[table.sort_key] = kind.sk.format_map(names)
        if kind.type is not None:
            item[schema.TYPE_ATTRIBUTE] = kind.type
        for field in self._stored:
            value = names[field.name]
            if field.optional and (value is None or value is False or value == ""):
                continue
            if field.name in self._omitted and value == self._omitted[field.name]:
                continue
            if field.nested:
                for sub, _ in field.nested:
                    item[f"{field.attribute}_{sub}"] = getattr(value, sub)
                continue
            item[field.attribute] = json.dumps(value, sort_keys=True) if field.json else value
        for attribute, pattern in kind.derived.items():
            item[attribute] = pattern.format_map(names)
        if kind.ttl is not None:
            ttl_field, seconds = kind.ttl
            item[table.ttl_attribute] = names[ttl_field] + seconds
        if kind.indexes and (kind.indexed_while is None or kind.indexed_while(record)):
            for index, (pk, sk) in kind.indexes.items():
                item[index.pk] = pk.format_map(names)
                item[index.sk] = sk.format_map(names)
        return {name: attribute_value(value) for name, value in item.items()}

    def from_item(self, item: Item) -> R:
        values: dict[str, Any] = {}
        for field in self._stored:
            if field.nested:
                values[field.name] = field.read(
                    **{
                        sub: read(_deserialize(item[f"{field.attribute}_{sub}"]))
                        for sub, read in field.nested
                    }
                )
                continue
            raw = item.get(field.attribute)
            # a string attribute (most of them) is its value; the rest go through the library
            value = None if raw is None else raw["S"] if "S" in raw else _deserialize(raw)
            if value is None:
                if field.optional:
                    continue
                raise KeyError(f"{self.kind.type} item without {field.attribute!r}")
            values[field.name] = field.read(value)
        for name, attribute, regex in self._from_key:
            match = regex.fullmatch(item[attribute]["S"])
            if match is None:
                raise KeyError(f"{self.kind.type} item with a foreign {attribute!r}")
            values[name] = match[name]
        if self._from_ttl is not None and self.kind.ttl is not None:
            ttl = _deserialize(item[self.table.ttl_attribute])
            values[self._from_ttl] = int(ttl) - self.kind.ttl[1]
        return self.kind.record(**values)


SESSIONS = ItemMapper(schema.SESSION)
TOKENS = ItemMapper(schema.TOKEN)
PENDING_FLOWS = ItemMapper(schema.PENDING_FLOW)
FLOWS = ItemMapper(schema.FLOW)
GRANTS = ItemMapper(schema.GRANT)
MACHINE_TOKENS = ItemMapper(schema.MACHINE_TOKEN)
TASK_SESSIONS = ItemMapper(schema.TASK_SESSION)
TASK_STOPS = ItemMapper(schema.TASK_STOPPED)
PROOF_JTIS = ItemMapper(schema.PROOF_JTI)
DELEGATIONS = ItemMapper(schema.DELEGATION)
SESSION_CHILDREN = ItemMapper(schema.SESSION_CHILD)
