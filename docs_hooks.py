"""mkdocs hook: the site's home page is the README (one source, so the two cannot drift apart).

``docs/index.md`` holds the line ``<!-- README -->`` where the README goes, followed by what only
the site needs. The README's links point into ``docs/``; on the site they are relative to it.
"""

from __future__ import annotations

from pathlib import Path

MARKER = "<!-- README -->"


def on_page_markdown(markdown: str, page, config, files) -> str:
    if page.file.src_uri != "index.md" or MARKER not in markdown:
        return markdown
    readme = Path(config["config_file_path"]).parent / "README.md"
    text = readme.read_text(encoding="utf-8").replace("](docs/", "](")
    # The README's own table of documentation pages is replaced by the site's navigation.
    head, _, _ = text.partition("\n## Documentation")
    return markdown.replace(MARKER, head.rstrip() + "\n")
