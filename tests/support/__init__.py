"""One home for what tests share: fakes of external services and helpers, never in chalicelib.

``fake_openai`` (an OpenAI-compatible server on 127.0.0.1), ``pdfs`` (PDFs written byte by byte), ``languages``
(text in many scripts, good and broken), ``corpus`` (the real third-party files in ../shared/corpus, skipping when
absent), ``taskflow`` (a job's way through the API, the queue and the worker, for integration tests), ``faults``
(fault injection on the local stack, also ``make soak``) and the deploy rehearsal's parts (``rehearsal``,
``lambdahost``, ``deploy_emulator``). AWS's event payloads are in ``tests/events``.
"""

from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
