"""MkDocs hook: the table of every training setting, made from ``PPOConfig`` at build time.

A page that holds the line ``<!-- settings-table -->`` gets, in its place, one row per field of
:class:`purejaxppo.core.config.PPOConfig`: its flag, default, whether it is traced (an ``HParams``
field: sweepable, no recompilation) and the docstring written under the field, the text that
``purejaxppo train --help`` shows. The table cannot drift from the code.
"""

from __future__ import annotations

import dataclasses

MARKER = "<!-- settings-table -->"


def settings_table() -> str:
    from purejaxppo.core.config import HPARAM_FIELDS, PPOConfig, field_docs

    docs = field_docs(PPOConfig)
    rows = ["| setting | flag | default | traced | meaning |", "|---|---|---|---|---|"]
    for f in dataclasses.fields(PPOConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, bool):
            flag = f"{flag}`, `--no-{flag[2:]}"
        meaning = docs.get(f.name, "").replace("|", "\\|")
        traced = "yes" if f.name in HPARAM_FIELDS else ""
        rows.append(f"| `{f.name}` | `{flag}` | `{default!r}` | {traced} | {meaning} |")
    return "\n".join(rows) + "\n"


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, settings_table())
    return markdown
