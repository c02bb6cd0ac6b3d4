"""Troubleshooting exercises: a lab really broken the way clusters break, a checker that
decides by real traffic, hints, a reference solution and a reset (docs/exercises.md).

    model.py     an exercise folder's exercise.yaml, validated (file, line, field)
    catalog.py   the built-in catalog (catalog/<id>/) and the author's folders
    actions.py   what setup/break/solve/reset steps do to a running lab
    checks.py    checks by traffic and state, with their evidence
    values.py    ${pod.client.ip} and friends, read from the lab when a step runs
    runner.py    one exercise on one lab: start, check, solve, reset, teardown
    progress.py  a learner's progress, per user

The catalog's exercises run on labs/troubleshoot.yaml.
"""
