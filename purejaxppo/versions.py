"""The installed versions of packages: the one lookup behind the result files' records and the
saved programs' keys (importing nothing heavy)."""

from __future__ import annotations

from collections.abc import Iterable
from importlib import metadata


def installed_version(name: str) -> str | None:
    """The installed version of package ``name`` (this package's own ``__version__`` when it is
    imported from a source tree without metadata); None when it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        if name == "purejaxppo":
            import purejaxppo

            return purejaxppo.__version__
        return None


def installed_versions(names: Iterable[str]) -> dict[str, str]:
    """``{name: version}`` of the packages among ``names`` that are installed, in that order."""
    versions = {name: installed_version(name) for name in names}
    return {name: v for name, v in versions.items() if v is not None}
