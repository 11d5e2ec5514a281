"""User-facing errors. Anything raised as a GenilError is shown by the CLI and the nodes as one line
(no traceback) that names the file, topic, key or joint at fault; everything else is a bug."""


class GenilError(Exception):
    """A problem with the user's input (a file, topic, key, joint...), with a message that says what to fix."""


class DataError(GenilError):
    """A rosbag or dataset that cannot be used as it is."""


class CheckpointError(GenilError):
    """A checkpoint that cannot be loaded (missing, corrupt, other shapes, newer format)."""
