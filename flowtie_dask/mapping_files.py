"""Reading a small JSON or YAML file of settings (a microscope log, an optics range), by its extension."""

from __future__ import annotations

import json
import os

__all__ = ["parse_mapping_text", "syntax_name"]


def syntax_name(path) -> str:
    """"YAML" for a ``.yaml``/``.yml`` path, else "JSON"."""
    return "YAML" if os.fspath(path).lower().endswith((".yaml", ".yml")) else "JSON"


def parse_mapping_text(text: str, path):
    """The data in ``text``, parsed as YAML or JSON by the extension of ``path``.

    Raises
    ------
    ValueError
        The parser's first line (or its exception's name), for the caller to put in its own one-line message.
    """
    try:
        if syntax_name(path) == "YAML":
            import yaml  # a dependency of dask

            return yaml.safe_load(text)
        return json.loads(text)
    except Exception as exc:  # json.JSONDecodeError, yaml.YAMLError
        raise ValueError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
