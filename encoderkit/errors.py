"""The one base class for errors caused by user input (recipes, files, arguments).

The CLI prints such an error's message as one line on stderr and exits with code 2; any
other exception is a bug and keeps its traceback.
"""


class UserError(ValueError):
    """Bad input: the message says what is wrong, where, and how to fix it.

    `option`, where set, is the command-line option the input came from; the CLI puts it first.
    """

    option: str | None = None


USER_ERRORS = (UserError,)
