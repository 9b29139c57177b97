"""The adapters between AWS's events and docpipe: each turns one kind of event into calls and its result into what
the event's source expects.

``api`` (the REST routes: requests in, JSON or docpipe's error shape out), ``identity`` (which client a request acts
for), ``worker`` (SQS job batches, partial failures), ``deadletters`` (the DLQ backstop), ``uploads`` (an S3 upload
becomes a job), ``keepwarm`` (the schedule pings the API). app.py imports each on its own, inside the handler that
uses it, so no function loads another's adapter; nothing is re-exported here for the same reason.
"""
