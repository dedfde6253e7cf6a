"""Outcomes the reliability tests observed, rendered as the case table of docs/reliability.md."""

from __future__ import annotations

from dataclasses import dataclass, field

MESSAGE_CHARS = 200
# Groups in the order the table shows them; others follow in the order they were seen.
GROUP_ORDER = ["Bad files", "Awkward but valid photos (must succeed)", "Malformed upload requests",
               "Size limits", "Client file names", "Job ids", "Access token (SR_AUTH_TOKEN set)", "Faults"]


@dataclass
class Case:
    """One input or fault, with what each route answered (filled in by the tests as they pass)."""

    group: str
    name: str
    cli: str = ""
    http: str = ""
    left: list[str] = field(default_factory=list)
    answering: str = ""


def _cell(text: str) -> str:
    text = " ".join(text.split())
    if len(text) > MESSAGE_CHARS:
        text = text[: MESSAGE_CHARS - 1] + "…"
    return text.replace("|", "\\|")


def outcome(answer: str, message: str | None) -> str:
    """`exit 3: "…"` or `HTTP 415 unsupported_type: "…"`."""
    return f'{answer}: "{_cell(message)}"' if message else answer


def render(cases: list[Case]) -> str:
    lines: list[str] = []
    group = None
    rank = {name: i for i, name in enumerate(GROUP_ORDER)}
    for case in sorted(cases, key=lambda c: rank.get(c.group, len(rank))):  # stable: keeps the seen order
        if case.group != group:
            group = case.group
            lines += ["", f"### {group}", "",
                      "| case | worker CLI: exit code, message | HTTP API: status, code, message | left on disk "
                      "| service still answering |",
                      "|---|---|---|---|---|"]
        left = "; ".join(dict.fromkeys(case.left)) or "nothing"
        lines.append(f"| {_cell(case.name)} | {case.cli or '–'} | {case.http or '–'} | {left} | "
                     f"{case.answering or '–'} |")
    return "\n".join(lines).lstrip("\n") + "\n"
