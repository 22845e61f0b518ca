"""The one exception type for user mistakes inside ``nsm``."""


class ConfigError(ValueError):
    """A user mistake (bad config value, bad file, bad path); its message is one line naming what is wrong."""
