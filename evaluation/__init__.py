"""Batch evaluation: simulated dialogs over the orchestrator, ChatIR-protocol metrics, reports.

runner.py drives dialogs (gRPC RunDialog or the Engine in-process) and keeps dialogs.jsonl;
metrics.py holds the pure metric functions; outputs.py/report.py/export.py write the results;
cli.py, merge.py and compare.py are the `genir eval` commands.
"""
