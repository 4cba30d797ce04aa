"""One run of a resumable task: its step order, its checkpoint and lease, its progress.

Nothing here hooks Celery: the task class (``celery_resumable.task``) creates a run per
execution and the step functions call it.
"""
