"""Reading the YAML files people write (model cards, lineups, scenarios): one error whose
message says what is wrong and on which line, for a one-line report that names the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

# libyaml's loader, where PyYAML was built with it, reads cards and scenarios about ten
# times faster than the pure-Python one, which matters for start-up.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlFileError(ValueError):
    """The file cannot be read or is not valid YAML; the message says which (and where), not the file's name."""


def read_yaml(path: Path) -> Any:
    """The data in a YAML file (with safe types only); raises YamlFileError."""
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_SAFE_LOADER)  # a safe loader: plain data types only
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        raise YamlFileError("is not valid YAML" + (f" at line {mark.line + 1}" if mark else "")) from None
    except (OSError, UnicodeDecodeError) as error:
        raise YamlFileError(f"cannot be read: {error}") from None
