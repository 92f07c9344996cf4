"""The one base class for failures a user can fix (a bad input, a run that had to stop).

Commands print such an error as one line `lm COMMAND: error: MESSAGE` with no traceback
(lm/cli/_errors.py); the message names the problem and the way out. ValueError (ConfigError)
and OSError are treated the same way; LmError is for the rest (a diverged run, a locked
workdir, a preempted run). `exit_code` is the process's exit status.
"""


class LmError(Exception):
    exit_code = 1
