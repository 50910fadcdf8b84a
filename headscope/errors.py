"""The one error type for user mistakes.

Every message names the fix; the CLI prints it as a single line instead of a traceback.
"""

import errno


class HeadscopeError(Exception):
    """A mistake the user can fix (bad model name, bad atlas file, bad parameter)."""


_OS_FIXES = {
    errno.ENOSPC: "no space left on the device: free some space or write to another disk",
    errno.EDQUOT: "disk quota exceeded: free some space or write to another disk",
    errno.EROFS: "the file system is read-only: write to a folder on a writable disk",
    errno.ENAMETOOLONG: "a file name is too long for this file system: use a shorter name",
    errno.EACCES: "permission denied: choose a folder you can write to (or a file you can read)",
    errno.EPERM: "operation not permitted: choose a folder you can write to (or a file you can read)",
}


def os_error_line(err: OSError) -> str:
    """One line for an error of the operating system: what failed, on which file, and the fix."""
    where = f" on '{err.filename}'" if err.filename else ""
    fix = _OS_FIXES.get(err.errno, f"{err.strerror or err}: check the path and the disk")
    return f"{type(err).__name__}{where}: {fix}"
