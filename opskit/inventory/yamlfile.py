"""YAML read strictly: a duplicate key is an error with its line (never "the last one wins"),
aliases are refused (an alias bomb cannot grow), and a syntax error names file, line and column.

`read(text, source, strings=True)` takes every scalar as the text written (`0123` stays "0123",
`yes` stays "yes"): what a secrets file holds is never coerced.
"""

from __future__ import annotations

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode

from ..errors import InventoryError
from ..values import shown

def _strict(base):
    class Strict(base):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise ConstructorError(None, None, f"alias *{event.anchor} is not allowed: write the value out "
                                       "(aliases are refused so that no document can grow past its text)",
                                       event.start_mark)
            return super().compose_node(parent, index)

        def construct_mapping(self, node: MappingNode, deep=False):
            seen: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    hash(key)
                except TypeError:
                    raise ConstructorError(None, None, "a mapping key must be a plain value", key_node.start_mark)
                if key in seen:
                    raise ConstructorError(None, None, f"duplicate key {shown(key)} (first at line {seen[key]}): "
                                           "keep one", key_node.start_mark)
                seen[key] = key_node.start_mark.line + 1
            return super().construct_mapping(node, deep=deep)
    return Strict


_TYPED = _strict(yaml.SafeLoader)
_STRINGS = _strict(yaml.BaseLoader)
# BaseLoader's mappings go through construct_mapping too; its scalars all stay str
_STRINGS.add_constructor("tag:yaml.org,2002:map", _STRINGS.construct_mapping)


def read(text: str, source: str, strings: bool = False):
    """The document in `text`, or InventoryError naming `source`, line and column."""
    try:
        return yaml.load(text, Loader=_STRINGS if strings else _TYPED)  # noqa: S506 (safe and strict loaders)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise InventoryError([f"{where}: {exc.problem or exc.context}"], source) from None
    except yaml.YAMLError as exc:
        raise InventoryError([f"{source}: not valid YAML ({type(exc).__name__})"], source) from None
