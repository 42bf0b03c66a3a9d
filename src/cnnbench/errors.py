"""The one exception type for expected, user-fixable failures."""


class CnnbenchError(Exception):
    """A failure the user can fix (bad params, missing credentials, a broken archive...).

    Entry points print its message, without a traceback, and exit with status 2.
    """
