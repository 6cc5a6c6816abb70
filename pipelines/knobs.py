"""List every knob of params.yaml with its type, default and description (markdown table)."""

from __future__ import annotations

from star.config import describe_knobs


def knob_table() -> str:
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    for key, type_name, default, description in describe_knobs():
        type_name = type_name.replace("|", "\\|")
        lines.append(f"| `{key}` | {type_name} | `{default}` | {description} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(knob_table())
