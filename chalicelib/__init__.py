"""docpipe's logic. app.py only wires Chalice's event sources to the functions here."""
