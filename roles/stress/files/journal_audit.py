"""Audit one CYNIC journal (judgments.jsonl): every line parsed, not only counted.

Usage: journal_audit.py PATH

Prints one JSON object: lines, unparseable, without_judgment_id, duplicate_ids, torn_tail (the
file does not end with a newline), up to 20 examples of bad lines, and passed (the verdict: at
least one line, and every line a JSON object with a judgment_id of its own, newline included).
Exits 1 when the file cannot be read. Runs on the app hosts with their own python3 (standard library only).
"""

from __future__ import annotations

import json
import sys

MAX_EXAMPLES = 20


def audit(path: str) -> dict:
    out: dict = {
        "lines": 0,
        "unparseable": 0,
        "without_judgment_id": 0,
        "duplicate_ids": 0,
        "torn_tail": False,
        "examples": [],
    }
    seen: set[str] = set()
    with open(path, "rb") as journal:
        for number, raw in enumerate(journal, 1):
            out["lines"], problem = number, None
            try:
                entry = json.loads(raw)
            except ValueError:
                out["unparseable"] += 1
                problem = "unparseable"
            else:
                jid = entry.get("judgment_id") if isinstance(entry, dict) else None
                if not isinstance(jid, str) or not jid:
                    out["without_judgment_id"] += 1
                    problem = "no judgment_id"
                elif jid in seen:
                    out["duplicate_ids"] += 1
                    problem = "duplicate " + jid
                else:
                    seen.add(jid)
            if not raw.endswith(b"\n"):
                out["torn_tail"] = True
                problem = problem or "no newline at the end"
            if problem and len(out["examples"]) < MAX_EXAMPLES:
                text = raw[:200].decode("utf-8", "replace")
                out["examples"].append({"line": number, "problem": problem, "text": text})
    bad = out["unparseable"] + out["without_judgment_id"] + out["duplicate_ids"]
    out["passed"] = out["lines"] > 0 and bad == 0 and not out["torn_tail"]
    return out


def main() -> int:
    try:
        result = audit(sys.argv[1])
    except OSError as exc:
        print(json.dumps({"error": str(exc)}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
