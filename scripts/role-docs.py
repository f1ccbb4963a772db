#!/usr/bin/env python3
"""Write each role's variable table into README.md from its argument specs.

    scripts/role-docs.py           rewrite the tables in README.md
    scripts/role-docs.py --check   fail if README.md is out of date

The tables sit between `<!-- role-vars:NAME -->` and `<!-- /role-vars:NAME -->`
markers, one pair per role, so the README documents exactly the variables
that meta/argument_specs.yml validates.
"""

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
MARKERS = re.compile(r"(<!-- role-vars:(?P<role>[\w-]+) -->\n).*?(<!-- /role-vars:(?P=role) -->)", re.S)


def cell(value: object) -> str:
    text = value if isinstance(value, str) and value else json.dumps(value)
    return text.replace("|", "\\|").replace("\n", " ")


def role_table(role: str) -> str:
    specs = yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]
    rows = ["| Variable | Type | Default | What it does |", "| --- | --- | --- | --- |"]
    for name, spec in options.items():
        kind = spec.get("type", "str")
        if kind == "list" and "elements" in spec:
            kind = f"list of {spec['elements']}"
        default = "*required*" if spec.get("required") else f"`{cell(spec.get('default'))}`"
        description = spec.get("description", "")
        if isinstance(description, list):
            description = " ".join(description)
        if "options" in spec:
            fields = ", ".join(f"`{key}`" for key in spec["options"])
            description = f"{description} Fields: {fields}."
        if "choices" in spec:
            description = f"{description} One of: {', '.join(f'`{c}`' for c in spec['choices'])}."
        rows.append(f"| `{name}` | {kind} | {default} | {cell(description)} |")
    return "\n".join(rows) + "\n"


def render(text: str) -> str:
    return MARKERS.sub(lambda m: m.group(1) + role_table(m.group("role")) + m.group(3), text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if README.md is out of date")
    check = parser.parse_args().check
    current = README.read_text()
    documented = {m.group("role") for m in MARKERS.finditer(current)}
    roles = {path.parent.parent.name for path in REPO.glob("roles/*/meta/argument_specs.yml")}
    if missing := sorted(roles - documented):
        print(f"README.md has no variable table for: {', '.join(missing)}", file=sys.stderr)
        return 1
    wanted = render(current)
    if check:
        if wanted != current:
            print("README.md's variable tables are out of date: run scripts/role-docs.py", file=sys.stderr)
            return 1
        print(f"README.md documents every variable of: {', '.join(sorted(roles))}")
        return 0
    README.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
