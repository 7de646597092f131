"""The one base class of errors a user can fix (bad file, bad config, missing step).

Scripts print these as one clear line instead of a traceback; anything else is a bug
and keeps its traceback.
"""


class PipelineError(ValueError):
    """A problem with the user's input; the message names the file or key and what is wrong."""
