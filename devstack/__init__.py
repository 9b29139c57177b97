"""docpipe's local stack: an embedded AWS emulator plus the app with its event sources, for offline work.

Development tooling only: nothing in chalicelib knows it exists.
"""
