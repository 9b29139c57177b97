"""docpipe's logic; app.py holds only the Chalice decorators that hand each event to it.

The packages, from the edge inwards::

    entry/      adapters for AWS's events: REST routes, the SQS worker, dead letters, S3 uploads, keep-warm
    jobs/       the job: model, DynamoDB store, SQS queue, the lifecycle that moves it, heartbeat, intake
    pipeline/   one job run to its outcome: extract → chunk → map ∥ → reduce → store
    tasks/      what a client may ask (checked at submit) and one module per task type
    documents/  bytes to normalised text with pages (the guarded PDF reader, quality gate, OCR), tokens, chunks
    llm/        the chat client, its endpoint and key, circuit breaker, rate limits, budget, usage, prompts
    aws/        boto3 clients and the S3, DynamoDB and Secrets Manager adapters

and beside them ``config`` (every setting, validated), ``errors`` (docpipe's errors: a code and a message),
``observability`` (Powertools Logger and Metrics), ``jsontext`` (JSON from outside, parsed safely) and
``bootstrap`` (the composition point: every client built and passed in).
"""
