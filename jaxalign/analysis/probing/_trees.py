"""Penn Treebank bracketed trees: a small reader and the tree walks the
property labels need.

No treebank library is a dependency of jaxalign (nltk is not installed on the
project machines, and its ``Tree.fromstring`` would be the only thing used):
the bracketed format is a plain s-expression, ``(LABEL child child ...)``
with a leaf ``(TAG word)``, which the ~30 lines of :func:`read_trees` parse
with line numbers in every error.

Conventions of the Penn Treebank handled here:

- a label carries function tags and indices after its category:
  ``NP-SBJ-1``, ``WHNP-1``, ``SBAR-TMP``, ``NP=2``; :func:`category` keeps
  the category (``NP``, ``WHNP``, ``SBAR``). Labels that start with a dash
  (``-NONE-``, ``-LRB-``, ``-RRB-``) are categories themselves.
- ``(-NONE- *T*-1)`` and ``(-NONE- *)`` are empty elements (traces), not
  words: :func:`prune_empty` removes them and every phrase left without a
  word, before any property is computed.
- a file may wrap a sentence in an unlabelled bracket, ``( (S ...) )``, or a
  ``(ROOT ...)`` node; both are kept as the tree's root.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Tree", "category", "prune_empty", "read_trees", "parse_trees"]

_TOKEN = re.compile(r"\(|\)|[^\s()]+")


@dataclass(frozen=True)
class Tree:
    """A node of a bracketed tree: ``label`` and ``children`` (trees or, for a
    preterminal, one word string)."""

    label: str
    children: tuple

    @property
    def is_preterminal(self) -> bool:
        """A ``(TAG word)`` node: one child, a string."""
        return len(self.children) == 1 and isinstance(self.children[0], str)

    @property
    def category(self) -> str:
        return category(self.label)

    def subtrees(self):
        """Child trees (not words)."""
        return [c for c in self.children if isinstance(c, Tree)]

    def preterminals(self):
        """The ``(TAG word)`` nodes in left-to-right order."""
        if self.is_preterminal:
            return [self]
        out = []
        for c in self.subtrees():
            out.extend(c.preterminals())
        return out

    def __str__(self) -> str:  # bracketed, one line
        inner = " ".join(str(c) for c in self.children)
        return f"({self.label} {inner})" if self.label else f"({inner})"


def category(label: str) -> str:
    """The syntactic category of a Penn label, without function tags or indices.

    >>> [category(x) for x in ("NP-SBJ-1", "WHNP-", "NP=2", "-NONE-", "-LRB-", "S")]
    ['NP', 'WHNP', 'NP', '-NONE-', '-LRB-', 'S']
    """
    if label.startswith("-"):
        return label
    return re.split(r"[-=]", label, maxsplit=1)[0]


def parse_trees(text: str, source: str = "<string>") -> list[Tree]:
    """Every top-level bracketed tree in ``text``, in order.

    ValueError (naming ``source`` and the line) for an unbalanced bracket, a
    word outside any bracket, or an empty ``()``.

    >>> t, = parse_trees("(ROOT (S (NP (PRP He)) (VP (VBD left)) (. .)))")
    >>> t.label, [p.children[0] for p in t.preterminals()]
    ('ROOT', ['He', 'left', '.'])
    """
    trees: list[Tree] = []
    stack: list[tuple[str | None, list, int]] = []  # (label, children, line of "(")
    line, last = 1, 0
    for m in _TOKEN.finditer(text):
        line += text.count("\n", last, m.start())
        last = m.start()
        tok = m.group()
        if tok == "(":
            stack.append((None, [], line))
        elif tok == ")":
            if not stack:
                raise ValueError(f"{source}, line {line}: ')' closes no bracket")
            label, children, _ = stack.pop()
            if label is None and not children:
                raise ValueError(f"{source}, line {line}: empty brackets '()'")
            node = Tree(label or "", tuple(children))
            if stack:
                stack[-1][1].append(node)
            else:
                trees.append(node)
        else:
            if not stack:
                raise ValueError(f"{source}, line {line}: {tok!r} outside any bracket")
            label, children, start = stack[-1]
            if label is None and not children:
                stack[-1] = (tok, children, start)  # the first token names the node
            else:
                children.append(tok)
    if stack:
        raise ValueError(f"{source}, line {stack[-1][2]}: bracket opened here is never closed")
    return trees


def read_trees(path) -> list[Tree]:
    """The trees of a bracketed (Penn Treebank ``.mrg``/``.penn``) file."""
    p = Path(os.fspath(path)).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"Penn Treebank file not found: {p}")
    return parse_trees(p.read_text(encoding="utf-8"), source=str(p))


def prune_empty(tree: Tree) -> Tree | None:
    """``tree`` without empty elements (``-NONE-`` leaves) and the phrases
    left without a word; None when nothing is left.

    >>> t, = parse_trees("(S (NP (-NONE- *)) (VP (TO to) (VP (VB go))))")
    >>> str(prune_empty(t))
    '(S (VP (TO to) (VP (VB go))))'
    """
    if tree.is_preterminal:
        return None if tree.label == "-NONE-" else tree
    kept = []
    for c in tree.children:
        if isinstance(c, Tree):
            c = prune_empty(c)
            if c is not None:
                kept.append(c)
        else:  # a bare word inside a phrase: keep it (malformed but harmless)
            kept.append(c)
    return Tree(tree.label, tuple(kept)) if kept else None
