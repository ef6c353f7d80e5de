"""`uvidm serve`: the backend as a local HTTP service (docs/API.md).

app.create_app builds the FastAPI application around an injected runner (the pipeline),
jobs.JobStore keeps the queue and the jobs folder, worker.Worker runs one job at a time.
"""
