"""AdGuard's blocked services (import only): ``HostlistsRegistry`` ``services/*.yml`` (and
``*.json``), and the web-services list built from them (``services.json``, the one AdGuard
Home downloads: ``{"blocked_services": [{"id": …, "name": …, "rules": […]}, …]}``).

Each service has an ``id``, a ``name`` and ``rules`` in AdGuard's DNS filter syntax;
``ImportOptions.service`` picks one service by id (every service when None). Each rule is
read as one line of AdGuard syntax (``detector.sigformats.adblock``), so what a signature
cannot express (``||p16-tiktok-*.ibyteimg.com^``: a wildcard inside a label) is skipped
with the reason. JSON is read by the YAML parser (JSON is YAML), which gives every rule its
line. Only the node graph is built (``yaml.compose``), never Python objects, and only two
levels of it are walked (services, their rules), so aliases cannot make a file expand.
"""

from __future__ import annotations

import yaml

from detector.sigformats import adblock
from detector.sigformats.common import Collector, ImportOptions

#: A YAML string (a number or a boolean is not a rule).
_STR = "tag:yaml.org,2002:str"


def parse(text: str, out: Collector, options: ImportOptions) -> None:
    """Every rule of the wanted service(s)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        out.problem(mark.line + 1 if mark else 0, f"not YAML or JSON: {exc.problem or exc}")
        return
    except (yaml.YAMLError, RecursionError) as exc:
        out.problem(0, f"not YAML or JSON: {exc if isinstance(exc, yaml.YAMLError) else 'nested too deeply'}")
        return
    if root is None:
        out.problem(0, "empty file")
        return
    services = _mapping(root).get("blocked_services")
    if services is not None:
        if not isinstance(services, yaml.SequenceNode):
            out.problem(_line(services), "blocked_services must be a list of services")
            return
        items = services.value
    else:
        items = [root]
    wanted = options.service.lower() if options.service else None
    found = False
    for item in items:
        fields = _mapping(item)
        ident = fields.get("id")
        rules = fields.get("rules")
        if not isinstance(item, yaml.MappingNode) or not isinstance(ident, yaml.ScalarNode) \
                or not isinstance(rules, yaml.SequenceNode):
            out.problem(_line(item), "a service needs an id and a list of rules")
            continue
        if wanted is not None and ident.value.lower() != wanted:
            continue
        found = True
        for rule in rules.value:
            if not isinstance(rule, yaml.ScalarNode) or rule.tag != _STR or not rule.value.strip():
                out.problem(_line(rule), f"service {ident.value}: a rule must be a non-empty string")
                continue
            line = rule.value.strip()
            if "\n" in line:
                out.problem(_line(rule), f"service {ident.value}: a rule is one line")
                continue
            adblock.parse_rule(_line(rule), line, {}, out, options)
    if wanted is not None and not found:
        out.problem(0, f"no service with id {options.service!r}")


def _mapping(node: yaml.Node) -> dict[str, yaml.Node]:
    """A mapping node's string keys (the first of a repeated key), else nothing."""
    if not isinstance(node, yaml.MappingNode):
        return {}
    out: dict[str, yaml.Node] = {}
    for key, value in node.value:
        if isinstance(key, yaml.ScalarNode):
            out.setdefault(key.value, value)
    return out


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1
