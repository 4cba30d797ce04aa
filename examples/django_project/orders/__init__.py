"""The example's app: orders, and a task that marks each of them exactly once."""
