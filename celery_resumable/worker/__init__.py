"""What a Celery worker process needs: the shutdown notice, the soft shutdown, the lease keeper."""
