"""The emergence lab: ask every model of a ladder the items of a few tasks, score each reply two
ways (the scenario's exact check, and the probability the model gives the right answer), and
chart the scores against model size.

`tasks` turns scenarios into items and prompts, `results` keeps the rows in a JSON Lines file
that a stopped run resumes from, `stats` sums the rows into cells with their uncertainty.
"""
