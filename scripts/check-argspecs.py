"""Fail when a role's meta/argument_specs.yml keys differ from its defaults/main.yml keys."""
from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    problems = []
    for role in sorted((ROOT / "roles").iterdir()):
        defaults_file = role / "defaults" / "main.yml"
        specs_file = role / "meta" / "argument_specs.yml"
        if not specs_file.exists():
            problems.append(f"{role.name}: no meta/argument_specs.yml")
            continue
        defaults = (yaml.safe_load(defaults_file.read_text()) or {}) if defaults_file.exists() else {}
        specs = yaml.safe_load(specs_file.read_text())["argument_specs"]["main"].get("options", {})
        missing_spec = sorted(set(defaults) - set(specs))
        missing_default = sorted(set(specs) - set(defaults))
        if missing_spec:
            problems.append(f"{role.name}: defaults without an argument spec: {', '.join(missing_spec)}")
        if missing_default:
            problems.append(f"{role.name}: argument specs without a default: {', '.join(missing_default)}")
        print(f"{role.name}: {len(specs)} options, {len(defaults)} defaults")
    for p in problems:
        print(f"ERROR {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
