"""The one error type for user mistakes.

Every message names the fix; the CLI prints it as a single line instead of a traceback.
"""


class HeadscopeError(Exception):
    """A mistake the user can fix (bad model name, bad atlas file, bad parameter)."""
