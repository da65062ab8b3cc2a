"""Which variables a template reads, found in its syntax tree before anything is rendered.

A *use* is a chain of names from a variable: ``contact.attributes.first_name`` or
``data["order"].total``. A use is *guarded* when the template copes with it missing:
``{{ x | default("there") }}``, ``{% if x is defined %}...{% endif %}``. Lint checks the
unguarded uses of contact attributes against real contacts.
"""

from __future__ import annotations

from dataclasses import dataclass

from jinja2 import meta, nodes

Path = tuple[str | int, ...]

#: what every template may read besides its own variables (jinja's sandbox globals)
GLOBALS = frozenset({"range", "dict", "lipsum", "cycler", "joiner", "namespace", "loop",
                     "super", "self", "varargs", "kwargs", "caller"})
DEFAULT_FILTERS = frozenset({"default", "d"})
DEFINED_TESTS = frozenset({"defined", "undefined"})


@dataclass(frozen=True, slots=True)
class Use:
    path: Path
    line: int
    guarded: bool

    @property
    def dotted(self) -> str:
        return dotted(self.path)


def dotted(path: Path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


def chain(node: nodes.Node) -> Path | None:
    """The names of ``a.b["c"]``, or None if it is not a plain chain from a variable."""
    parts: list[str | int] = []
    while True:
        if isinstance(node, nodes.Getattr):
            parts.append(node.attr)
            node = node.node
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) \
                and isinstance(node.arg.value, str | int):
            parts.append(node.arg.value)
            node = node.node
        elif isinstance(node, nodes.Name) and node.ctx == "load":
            parts.append(node.name)
            return tuple(reversed(parts))
        else:
            return None


def _defined_tests(node: nodes.Node) -> set[Path]:
    found: set[Path] = set()
    tests = [node] if isinstance(node, nodes.Test) else []
    for test in [*tests, *node.find_all(nodes.Test)]:
        assert isinstance(test, nodes.Test)
        if test.name in DEFINED_TESTS:
            c = chain(test.node)
            if c is not None:
                found.add(c)
    return found


def _covered(path: Path, guards: frozenset[Path]) -> bool:
    return any(path[: len(g)] == g for g in guards)


def uses(tree: nodes.Template) -> list[Use]:
    """Every chain read from a variable the template does not define itself."""
    free = free_names(tree)
    out: list[Use] = []

    def walk(node: nodes.Node, guards: frozenset[Path]) -> None:
        c = chain(node) if isinstance(node, nodes.Getattr | nodes.Getitem | nodes.Name) \
            else None
        if c is not None:
            if isinstance(c[0], str) and c[0] in free:
                out.append(Use(c, node.lineno, _covered(c, guards)))
            return
        if isinstance(node, nodes.Filter) and node.name in DEFAULT_FILTERS \
                and node.node is not None:
            inner = chain(node.node)
            if inner is not None:
                guards = guards | {inner}
        if isinstance(node, nodes.Test) and node.name in DEFINED_TESTS:
            inner = chain(node.node)
            if inner is not None:
                guards = guards | {inner}
        if isinstance(node, nodes.If):
            walk(node.test, guards)
            inside = guards | _defined_tests(node.test)
            for child in node.body:
                walk(child, inside)
            for child in [*node.elif_, *node.else_]:
                walk(child, guards)
            return
        if isinstance(node, nodes.CondExpr):
            walk(node.test, guards)
            walk(node.expr1, guards | _defined_tests(node.test))
            if node.expr2 is not None:
                walk(node.expr2, guards)
            return
        for child in node.iter_child_nodes():
            walk(child, guards)

    walk(tree, frozenset())
    return out


def free_names(tree: nodes.Template) -> set[str]:
    """Top-level names a template reads without defining them."""
    return set(meta.find_undeclared_variables(tree))
