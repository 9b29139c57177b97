"""What every test starts from, whichever layer it is in: no real AWS account, no LLM endpoint, no stray settings.

Nothing here starts a server: unit tests (tests/unit) run without the emulator or any socket. The integration
layer starts its emulator in tests/integration/conftest.py; the end-to-end suites start whole stacks of their own.
"""

from __future__ import annotations

import os
import sys

from tests.support import PROJECT

os.environ.update(
    AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
    TIKTOKEN_CACHE_DIR=str(PROJECT / ".local" / "tiktoken"),
    POWERTOOLS_METRICS_DISABLED="true", POWERTOOLS_SERVICE_NAME="docpipe", POWERTOOLS_DEV="false",
)
for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "DOCPIPE_API_URL", "DOCPIPE_LLM_SECRET", "AWS_ENDPOINT_URL",
             "AWS_PROFILE"):
    os.environ.pop(name, None)
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))
