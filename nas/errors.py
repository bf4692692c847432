"""The one exception type that reaches users: its message is a single line that names the culprit."""


class PoseNASError(Exception):
    """Bad input or an unmet precondition; the CLI prints it as one line and exits non-zero."""


class FolderInUse(PoseNASError):
    """Another process writes the folder: a job of many parts may go on with the others."""
