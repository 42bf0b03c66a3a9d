"""The one exception family for expected, user-fixable failures.

Entry points print the message of any CnnbenchError, without a traceback, and exit with status 2;
anything else is a bug and may show its traceback.
"""


class CnnbenchError(Exception):
    """A failure the user can fix (bad params, missing credentials, a broken archive...)."""


class ConfigError(CnnbenchError):
    """params.yaml (or a `dvc exp run -S` override) holds a value cnnbench cannot use."""


class DataError(CnnbenchError):
    """A raw source or a prepared dataset is not in the format its params say."""


class FetchError(CnnbenchError):
    """A source could not be fetched (network, credentials, checksum, missing path)."""


def one_line(err: BaseException) -> str:
    """An exception's message on one line: entry points print an error as a single line."""
    return " ".join(str(err).split())
