"""Blind pooled relevance judging of a run in the browser (``embedforge judge RUN``).

:mod:`embedforge.judge.session` holds the session (pools, grades, files, scores);
:mod:`embedforge.judge.app` serves it as one self-contained page (no external assets).
"""
