"""The data layer: settings, errors, the store and its migrations mechanism, the data contract and ingest, the event
log, reference data (the CSV and YAML files beside this module) and citizen controls.

It is the ground floor: it imports no engine (profiler, taggers, recommender, notifier) and not the app shell
(``yiwang``); ``tests/test_layering.py`` enforces it.
"""
