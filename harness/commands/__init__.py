"""One module per ``wsibench`` command (as asv's ``commands/``): each holds its parser (``add``) and its printing
(``run``); the work itself is a keyword API below (pipeline, matrix, feed, sizing, report, ...).

``COMMANDS`` lists them in the order ``wsibench --help`` shows them.
"""
from . import calibrate, feed, fio, matrix, report, run, runs, size, synth, validate

COMMANDS = (synth, validate, run, fio, matrix, report, feed, calibrate, size, runs)
