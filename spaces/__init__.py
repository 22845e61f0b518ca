"""Search spaces as data: ``default.yaml`` plus the loader that turns a file into a Ray Tune param space."""

from spaces.loader import DEFAULT_SPACE, SpaceError, load_space, searched_keys

__all__ = ["DEFAULT_SPACE", "SpaceError", "load_space", "searched_keys"]
