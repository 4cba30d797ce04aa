"""The checkpoint table: its SQL, the statements run against it, and its records.

Every statement is in ``statements``; ``store`` runs a run's statements and the
operators' verbs; ``faults`` turns database errors into ``CheckpointStoreError``.
"""
