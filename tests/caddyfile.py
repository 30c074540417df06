"""A small Caddyfile reader for tests: blocks become nested nodes, so tests assert structure
(which site proxies where, with which options) rather than matching strings."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field


@dataclass
class Node:
    words: list
    children: list = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.words[0] if self.words else ""

    def find(self, *path) -> "Node | None":
        """The first descendant following directive names, e.g. find("reverse_proxy", "transport")."""
        node = self
        for name in path:
            node = next((c for c in node.children if c.name == name), None)
            if node is None:
                return None
        return node

    def all(self, name) -> list["Node"]:
        out = []
        for child in self.children:
            if child.name == name:
                out.append(child)
            out.extend(child.all(name))
        return out


def parse(text: str) -> Node:
    root = Node(["<root>"])
    stack = [root]
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        words = shlex.split(line, comments=True)
        if words and words[-1] == "{":
            node = Node(words[:-1])
            stack[-1].children.append(node)
            stack.append(node)
        elif words == ["}"]:
            stack.pop()
        else:
            stack[-1].children.append(Node(words))
    assert len(stack) == 1, "unbalanced braces"
    return root


def site(root: Node, address: str) -> Node:
    """A site block, with its `import`ed snippets expanded in place."""
    snippets = {c.name[1:-1]: c for c in root.children if c.name.startswith("(")}
    for child in root.children:
        if child.words == [address]:
            expanded = []
            for c in child.children:
                expanded.extend(snippets[c.words[1]].children if c.name == "import" else [c])
            return Node(child.words, expanded)
    raise KeyError(address)
