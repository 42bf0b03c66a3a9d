"""The exceptions for expected, user-fixable failures: one family, so every entry point treats them alike."""


class CnnbenchError(Exception):
    """A failure the user can fix (bad params, missing credentials, a broken archive...).

    Entry points print its message, without a traceback, and exit with status 2.
    """


class FetchError(CnnbenchError):
    """A source could not be fetched (network, credentials, checksum, missing path)."""


class DataError(CnnbenchError):
    """A raw source is not in the format its params say."""


def one_line(err: BaseException) -> str:
    """An exception's message on one line: entry points print an error as a single line."""
    return " ".join(str(err).split())
