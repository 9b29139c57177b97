"""``docpipe``: docpipe's command line, a client of its REST API (``main`` parses and runs the commands, ``api``
talks HTTP with retries, ``inputs`` finds the documents and builds the task, ``render`` prints what comes back)."""
