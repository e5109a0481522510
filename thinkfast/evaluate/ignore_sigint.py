"""Imported first by the grading forkserver (:class:`~thinkfast.evaluate.equivalence.EquivalencePool`),
never by the main process: from here on the server ignores SIGINT, and so do the workers it forks.

Ctrl-C in a terminal signals every process of the foreground group. Without this, one arriving
while the server imports math-verify (a second or so) would kill it with a traceback; the main
process, which does stop on Ctrl-C, shuts the pool down itself.
"""

import signal

signal.signal(signal.SIGINT, signal.SIG_IGN)
