"""One run: fetch -> store -> match -> render -> send -> record.

Errors are isolated per feed and per subscriber. Only ``cli`` and ``scheduler`` import
this package; no stage imports it.
"""
