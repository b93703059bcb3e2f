"""How every benchmark leaves its result: `<name>.json` for the report, `<name>.md` to read."""

import json
import os

from kdkeras.files import write_text_atomic


def save_result(result, out_dir, name, markdown):
    """Writes `<name>.json` (the result) and `<name>.md` (`markdown`) into `out_dir`, atomically.

    Args:
        result: A JSON-ready dict.
        out_dir: Folder, created if needed.
        name: File stem, e.g. "recipes".
        markdown: The result as markdown.

    Returns:
        The path of the markdown file.
    """
    os.makedirs(out_dir, exist_ok=True)
    write_text_atomic(os.path.join(out_dir, f"{name}.json"), json.dumps(result, indent=2) + "\n")
    path = os.path.join(out_dir, f"{name}.md")
    write_text_atomic(path, markdown)
    return path
