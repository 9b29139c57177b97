"""``make demo``: one real job on a throwaway local stack, submitted over HTTP exactly as curl would."""

from __future__ import annotations

import json
import textwrap
import time

from devstack.appserver import PROJECT
from devstack.emulator import free_port
from devstack.http import request
from devstack.stack import LOCAL_DIR, LocalStack

SAMPLE = PROJECT / "samples" / "lighthouse-keeping.pdf"
TIMEOUT_SECONDS = 180


def run_demo() -> int:
    LOCAL_DIR.mkdir(exist_ok=True)
    print("Starting the local stack (AWS emulator + docpipe app) …", flush=True)
    with LocalStack(api_port=free_port(), emulator_port=free_port(), app_log=LOCAL_DIR / "demo-app.log") as stack:
        url = f"{stack.api_url}/jobs?task=summarize"
        print(f"\n$ curl -X POST '{url}' -H 'Content-Type: application/pdf' "
              f"--data-binary @{SAMPLE.relative_to(PROJECT)}")
        status, job = request("POST", url, SAMPLE.read_bytes(), {"Content-Type": "application/pdf"})
        print(f"HTTP {status} {json.dumps({k: job.get(k) for k in ('job_id', 'status')})}")
        if status != 202:
            print(json.dumps(job, indent=2))
            return 1
        job_id = job["job_id"]
        deadline = time.monotonic() + TIMEOUT_SECONDS
        seen = None
        while True:
            _, job = request("GET", f"{stack.api_url}/jobs/{job_id}")
            progress = (job["status"], job["progress"]["chunks_done"], job["progress"]["chunks_total"])
            if progress != seen:
                print(f"  {job['status']:<9} chunks {progress[1]}/{progress[2] if progress[2] is not None else '?'}",
                      flush=True)
                seen = progress
            if job["status"] in ("SUCCEEDED", "FAILED") or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        if job["status"] != "SUCCEEDED":
            print(f"\nThe job did not succeed: {json.dumps(job.get('error') or job, indent=2)}")
            print(f"App log: {LOCAL_DIR / 'demo-app.log'}")
            return 1
        _, result = request("GET", f"{stack.api_url}/jobs/{job_id}/result")
    _print_result(result)
    return 0


def _print_result(result: dict) -> None:
    usage, document = result["usage"], result["document"]
    print(f"\nSummary ({result['provider']}{', ' + result['model'] if result.get('model') else ''}):")
    print(textwrap.indent(textwrap.fill(result["summary"], 100), "  "))
    print(f"\nPages cited: {', '.join(map(str, result['pages_cited'])) or 'none'} "
          f"of {document['pages']} · {document['chunks']} chunks · {document['tokens']} document tokens")
    print(f"LLM usage: {usage['calls']} calls, {usage['prompt_tokens']} prompt + {usage['completion_tokens']} "
          f"completion tokens, cost ${usage['cost_usd'] or 0:.6f}")
    print("Timings: " + ", ".join(f"{k.replace('_seconds', '')} {v:.3f}s" for k, v in result["timings"].items()))
    if result.get("note"):
        print(f"\nNote: {result['note']}")
    if result.get("warnings"):
        print(f"Warnings: {'; '.join(result['warnings'])}")
