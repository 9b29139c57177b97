"""docpipe's benchmarks: each module measures one stage side by side with the alternatives, in one run.

Numbers, never assertions: timing checks in tests flake on shared machines, so speed and memory are measured
here (``make bench``) and the latest figures go into the README.
"""
