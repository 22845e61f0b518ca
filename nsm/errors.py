"""The one exception type for user mistakes inside ``nsm``, and the one-line form of any error."""


class ConfigError(ValueError):
    """A user mistake (bad config value, bad file, bad path); its message is one line naming what is wrong."""


def first_line(error: BaseException) -> str:
    """The first line of an error's message (libraries often raise multi-line ones), or its type's name."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
