"""Lambda memory sizes, measured: each function's duration and peak memory at 512, 1024, 1769 and 3008 MB (and,
modelled only, at 128 and 256 MB, where the small functions used to be configured), and what 1,000 jobs cost at each.

Lambda gives a function CPU in proportion to its memory: 1,769 MB is one vCPU, 512 MB about 29 % of one, 3,008 MB
1.7 vCPUs. Each function runs here in a process of its own, as Lambda's Python runtime runs it (``app.py``
imported once, then the handler called with a real event shape and a Lambda context), against the local AWS emulator
and a fake OpenAI-compatible provider that answers each call after ``LATENCY_SECONDS``. The emulator and the provider
run on the other core, as AWS and the provider run on other machines. Two ways to give each size its CPU:

* modelled: the function runs pinned to one core, unthrottled (one vCPU, what 1,769 MB has). Its CPU time C (its own
  and its children's: the worker reads PDFs in a forked reader process) and its wall time W give the time it waits
  on others, max(W - C, 0). At a size with v vCPUs the model is wait + C / v, except that above one vCPU no single
  process runs faster than one core: wait + max(C / v, C of the busiest process). It assumes the function never
  computes while it waits, so where it overlaps the two (the async map phase) it is an upper bound.
* throttled: where a cgroup CPU controller is writable (root, cgroup v1 ``cpu`` or v2 ``cpu.max``), the function
  runs in a cgroup whose CFS quota is v cores per 100 ms period, pinned to one core up to one vCPU and to two above
  it. This is how Linux enforces a CPU share, and it needs no model; it is one run, noisier on a shared machine.

Limits: this machine's core is not Lambda's (Lambda's x86 cores may be faster or slower, by tens of per cent); the
emulator answers in 2-6 ms where AWS takes 5-20 ms; the provider's latency is a fixed figure; Lambda's own start of
the runtime (about 100 ms before ``import app``) is not in the init figures. Lambda does not publish its CFS period:
a burst shorter than the quota of one period runs at full speed under the kernel's 100 ms, which is why short
invocations measure faster throttled than modelled; with a shorter period they would come closer to the model. Peak
memory is the function's peak resident set plus its reader's (VmHWM, an upper bound: the pages they share count
twice); Lambda's "Max Memory Used" adds the runtime's own, counted here as ``RUNTIME_MB``.

Cost per 1,000 jobs uses Lambda's x86 prices in us-east-1 (``PRICE_*``; the free tier left out) and what one job
costs each function: a submission and five status polls for the API, one invocation of the worker, the upload
handler or the dead-letter handler. Initialisation is billed too but once per instance, not per job: it is listed
apart.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.documents import PROJECT, book_pdf

SIZES_MB = (512, 1024, 1769, 3008)
# Smaller sizes, modelled only: the dead-letter, upload and keep-warm functions are configured below the grid.
ALL_SIZES_MB = (128, 256, *SIZES_MB)
ONE_VCPU_MB = 1769
# What Lambda's Python runtime itself holds beside the function's own memory.
RUNTIME_MB = 40
# AWS Lambda, x86, us-east-1, first pricing tier (aws.amazon.com/lambda/pricing).
PRICE_GB_SECOND = 0.0000166667
PRICE_REQUEST = 0.20 / 1_000_000
PRICE_PROVISIONED_GB_SECOND = 0.0000041667
PRICE_PROVISIONED_DURATION_GB_SECOND = 0.0000097222
LATENCY_SECONDS = 1.0
RUNS = 3
STAGE = "benchsize"
BUCKET = "docpipe-benchsize-documents"
SAMPLE_PDF = PROJECT / "samples" / "lighthouse-keeping.pdf"
TEXT = ("Lighthouses guide ships at night. Keepers trimmed the wicks and wound the clockwork that turned the lens. "
        "Fog signals sounded when the light could not be seen. ") * 20
# Status polls a client makes per job, besides its submission.
POLLS_PER_JOB = 5


@dataclass(frozen=True)
class Scenario:
    key: str
    name: str
    function: str  # the Chalice name, as in .chalice/config.json
    invocations_per_job: float
    warm_up: str  # the scenario whose run warms the instance first (loads what the function loads lazily)


SCENARIOS = [
    Scenario("api_submit", "API: POST /jobs (text, 3 kB)", "api_handler", 1, "api_submit"),
    Scenario("api_status", "API: GET /jobs/{id}", "api_handler", POLLS_PER_JOB, "api_status"),
    Scenario("worker_small", "worker: 4-page PDF (samples/lighthouse-keeping.pdf)", "process_jobs", 1,
             "worker_small"),
    # Warmed by the small PDF: the tokenizer, pypdf and the reader process are loaded, as in a warm worker.
    Scenario("worker_book", "worker: 350-page PDF (bench/documents.py book)", "process_jobs", 1, "worker_small"),
    Scenario("upload", "upload: incoming/ PDF to job", "start_job_from_upload", 1, "upload"),
    Scenario("dead_letters", "dead letters: a job's last message", "fail_dead_letters", 1, "dead_letters"),
]


# --- the runner: one Lambda instance, in a process of its own -------------------------------------------------------

def _process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a live process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found + [grandchild for child in found for grandchild in _children(child)]


def _cpu_now() -> tuple[float, float]:
    """(this process's CPU, its children's: the live ones from /proc, the ended ones from rusage)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    ended = resource.getrusage(resource.RUSAGE_CHILDREN)
    live = 0.0
    for child in _children(os.getpid()):
        try:
            live += _process_cpu(child)
        except OSError:
            continue
    return own.ru_utime + own.ru_stime, ended.ru_utime + ended.ru_stime + live


class _Runner:
    """Prepares each scenario's event through the app's own code, then calls the handler as Lambda would."""

    def __init__(self, app_module: Any) -> None:
        import boto3

        from tests.support.lambdahost import LambdaContext

        self.app = app_module
        self._context = LambdaContext
        self.sqs = boto3.client("sqs")
        self.s3 = boto3.client("s3")
        self.jobs_url = self.sqs.get_queue_url(QueueName=f"docpipe-{STAGE}-jobs")["QueueUrl"]
        self.dead_url = self.sqs.get_queue_url(QueueName=f"docpipe-{STAGE}-jobs-dlq")["QueueUrl"]

    def context(self, function: str) -> Any:
        return self._context(f"docpipe-{STAGE}-{function}", 1769, 900, "us-east-1", "123456789012")

    def _api(self, method: str, resource: str, **request: Any) -> dict[str, Any]:
        from tests.events import api_gateway_event

        return api_gateway_event(method, resource, **request)

    def _submit(self, **request: Any) -> str:
        response = self.app.app(self._api("POST", "/jobs", **request), self.context("api_handler"))
        assert response["statusCode"] == 202, response
        return json.loads(response["body"])["job_id"]

    def _receive(self, url: str, job_id: str) -> dict[str, Any]:
        from tests.events import sqs_event

        arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        for _ in range(20):
            for message in self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                                    MessageSystemAttributeNames=["All"]).get("Messages", []):
                if job_id in message["Body"]:
                    return sqs_event([message], arn)
                self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        raise RuntimeError(f"no message for job {job_id}")

    def _clear_map_cache(self) -> None:
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="cache/"):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                self.s3.delete_objects(Bucket=BUCKET, Delete={"Objects": keys})

    def prepare(self, key: str) -> tuple[Callable[..., Any], dict[str, Any], str]:
        """(handler, event, function) of one invocation of scenario ``key``; what it needs is in place."""
        json_body = {"headers": {"Content-Type": "application/json"},
                     "body": json.dumps({"document": {"text": TEXT}, "task": {"type": "summarize"}}).encode()}
        if key == "api_submit":
            return self.app.app, self._api("POST", "/jobs", **json_body), "api_handler"
        if key == "api_status":
            job_id = self._submit(**json_body)
            return self.app.app, self._api("GET", "/jobs/{job_id}", path_parameters={"job_id": job_id}), "api_handler"
        if key in ("worker_small", "worker_book"):
            self._clear_map_cache()
            if key == "worker_small":
                job_id = self._submit(headers={"Content-Type": "application/pdf"}, body=SAMPLE_PDF.read_bytes(),
                                      binary=True, query={"task": "summarize"})
            else:
                self.s3.put_object(Bucket=BUCKET, Key="uploads/local/book.pdf", Body=book_pdf())
                job_id = self._submit(headers={"Content-Type": "application/json"}, body=json.dumps(
                    {"document": {"s3_key": "uploads/book.pdf"}, "task": {"type": "summarize"}}).encode())
            return self.app.process_jobs, self._receive(self.jobs_url, job_id), "process_jobs"
        if key == "upload":
            from tests.events import s3_event

            object_key = f"incoming/local/{uuid.uuid4().hex}.pdf"
            self.s3.put_object(Bucket=BUCKET, Key=object_key, Body=SAMPLE_PDF.read_bytes(),
                               ContentType="application/pdf", Metadata={"task": "summarize"})
            head = self.s3.head_object(Bucket=BUCKET, Key=object_key)
            event = s3_event(BUCKET, object_key, size=head["ContentLength"], etag=head["ETag"],
                             account="123456789012")
            return self.app.start_job_from_upload, event, "start_job_from_upload"
        if key == "dead_letters":
            job_id = self._submit(**json_body)
            moved = self._receive(self.jobs_url, job_id)["Records"][0]
            self.sqs.delete_message(QueueUrl=self.jobs_url, ReceiptHandle=moved["receiptHandle"])
            self.sqs.send_message(QueueUrl=self.dead_url, MessageBody=moved["body"])
            return self.app.fail_dead_letters, self._receive(self.dead_url, job_id), "fail_dead_letters"
        raise ValueError(key)

    def invoke(self, key: str) -> dict[str, float]:
        handler, event, function = self.prepare(key)
        context = self.context(function)
        own, children = _cpu_now()
        started = time.perf_counter()
        answer = handler(event, context)
        wall = time.perf_counter() - started
        own_after, children_after = _cpu_now()
        if function == "process_jobs":
            assert answer == {"batchItemFailures": []}, answer
            record = event["Records"][0]
            self.sqs.delete_message(QueueUrl=self.jobs_url, ReceiptHandle=record["receiptHandle"])
        elif function == "fail_dead_letters":
            self.sqs.delete_message(QueueUrl=self.dead_url, ReceiptHandle=event["Records"][0]["receiptHandle"])
        elif function == "api_handler":
            assert answer["statusCode"] in (200, 202), answer
        return {"wall": wall, "cpu_own": own_after - own, "cpu_children": children_after - children}


def runner_main(cgroup: str, core: str) -> int:
    """``python -m bench.lambdasize --runner``: one instance. Reads scenario keys on stdin, answers JSON lines."""
    if core:
        os.sched_setaffinity(0, {int(c) for c in core.split(",")})
    if cgroup:
        Path(cgroup, "cgroup.procs").write_text(str(os.getpid()))
    answers = os.fdopen(os.dup(1), "w")
    # Lambda sends what the function prints (logs, metrics) to CloudWatch; here it goes to the runner's log.
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    sys.path.insert(0, str(PROJECT))
    started, (own, _) = time.perf_counter(), _cpu_now()
    import app as app_module

    init = {"wall": time.perf_counter() - started, "cpu_own": _cpu_now()[0] - own, "cpu_children": 0.0}
    runner = _Runner(app_module)
    answers.write(json.dumps({"init": init}) + "\n")
    answers.flush()
    for line in sys.stdin:
        measured = runner.invoke(line.strip())
        measured["peak_mb"] = _peak_mb(os.getpid()) + sum(_peak_mb(c) for c in _children(os.getpid()))
        answers.write(json.dumps(measured) + "\n")
        answers.flush()
    return 0


# --- the parent: the stack, the instances, the cgroups, the table ---------------------------------------------------

def _pin(pid: int, cores: set[int]) -> None:
    """Pin every thread of ``pid``; threads and processes it starts later inherit the setting."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), cores)
        except OSError:
            continue


class _CpuLimit:
    """A cgroup with a CFS quota of ``vcpus`` cores, or None where no CPU controller is writable."""

    PERIOD_US = 100_000

    def __init__(self, vcpus: float) -> None:
        self.path: Path | None = None
        name = f"docpipe-bench-{os.getpid()}-{int(vcpus * 1000)}"
        quota = max(1000, round(vcpus * self.PERIOD_US))
        v1, v2 = Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup")
        try:
            if (v1 / "cpu.cfs_quota_us").exists():
                self.path = v1 / name
                self.path.mkdir()
                (self.path / "cpu.cfs_period_us").write_text(str(self.PERIOD_US))
                (self.path / "cpu.cfs_quota_us").write_text(str(quota))
            elif "cpu" in (v2 / "cgroup.subtree_control").read_text().split():
                self.path = v2 / name
                self.path.mkdir()
                (self.path / "cpu.max").write_text(f"{quota} {self.PERIOD_US}")
        except OSError:
            self.close()
            self.path = None

    def close(self) -> None:
        if self.path is None:
            return
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


class _Instance:
    """One runner process: a Lambda instance of one function, at one CPU share."""

    def __init__(self, env: dict[str, str], log: Path, *, cores: str, cgroup: Path | None) -> None:
        self._log = open(log, "ab")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.lambdasize", "--runner", "--cgroup", str(cgroup or ""), "--core", cores],
            cwd=PROJECT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True)
        self.init = self._answer()["init"]

    def _answer(self) -> dict[str, Any]:
        assert self._process.stdout is not None  # Popen was given stdout=PIPE
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the runner died (exit {self._process.wait()}); see {self._log.name}")
        return json.loads(line)

    def run(self, key: str) -> dict[str, float]:
        assert self._process.stdin is not None  # Popen was given stdin=PIPE
        self._process.stdin.write(key + "\n")
        self._process.stdin.flush()
        return self._answer()

    def close(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        self._process.wait(timeout=60)
        self._log.close()


@dataclass
class Measured:
    runs: list[dict[str, float]] = field(default_factory=list)
    init: list[dict[str, float]] = field(default_factory=list)
    first: list[dict[str, float]] = field(default_factory=list)
    throttled: dict[int, float] = field(default_factory=dict)
    throttled_init: dict[int, float] = field(default_factory=dict)
    throttled_first: dict[int, float] = field(default_factory=dict)

    def median(self, runs: list[dict[str, float]]) -> dict[str, float]:
        return sorted(runs, key=lambda r: r["wall"])[len(runs) // 2]

    @property
    def peak_mb(self) -> float:
        return max(r.get("peak_mb", 0.0) for r in self.runs)


def modelled(run: dict[str, float], size_mb: int) -> float:
    """Duration at ``size_mb`` from a run on one unthrottled core (see the module docstring)."""
    vcpus = size_mb / ONE_VCPU_MB
    cpu = run["cpu_own"] + run["cpu_children"]
    wait = max(run["wall"] - cpu, 0.0)
    if vcpus <= 1:
        return wait + cpu / vcpus
    return wait + max(cpu / vcpus, run["cpu_own"], run["cpu_children"])


def cost_per_thousand_jobs(seconds: float, size_mb: int, invocations_per_job: float) -> float:
    invocations = 1000 * invocations_per_job
    return invocations * (seconds * size_mb / 1024 * PRICE_GB_SECOND + PRICE_REQUEST)


def _environment(emulator_url: str, llm_url: str) -> dict[str, str]:
    from devstack.emulator import DUMMY_CREDENTIALS

    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "DOCPIPE_", "OPENAI_"))}
    return {**env, **DUMMY_CREDENTIALS, "AWS_ENDPOINT_URL": emulator_url, "DOCPIPE_STAGE": STAGE,
            "DOCPIPE_BUCKET": BUCKET, "DOCPIPE_KEYLESS_CLIENT": "local", "OPENAI_BASE_URL": llm_url,
            "OPENAI_API_KEY": "sk-bench", "POWERTOOLS_SERVICE_NAME": f"docpipe-{STAGE}",
            "POWERTOOLS_METRICS_NAMESPACE": "docpipe", "AWS_LAMBDA_FUNCTION_NAME": f"docpipe-{STAGE}",
            "TIKTOKEN_CACHE_DIR": os.environ.get("TIKTOKEN_CACHE_DIR", str(PROJECT / ".local" / "tiktoken"))}


def _measure_all(env: dict[str, str], logs: Path) -> dict[str, Measured]:
    measured = {s.key: Measured() for s in SCENARIOS}
    limits_work = _CpuLimit(1.0)
    throttling = limits_work.path is not None
    limits_work.close()
    for scenario in SCENARIOS:
        key = scenario.key
        result = measured[key]
        # Modelled: one unthrottled core.
        instance = _Instance(env, logs / f"{key}-model.log", cores="0", cgroup=None)
        try:
            result.first.append(instance.run(scenario.warm_up))
            result.init.append(instance.init)
            result.runs = [instance.run(key) for _ in range(RUNS)]
        finally:
            instance.close()
        if not throttling:
            continue
        for size in SIZES_MB:
            vcpus = size / ONE_VCPU_MB
            limit = _CpuLimit(vcpus)
            instance = _Instance(env, logs / f"{key}-{size}.log", cores="0" if vcpus <= 1 else "0,1",
                                 cgroup=limit.path)
            try:
                result.throttled_first[size] = instance.run(scenario.warm_up)["wall"]
                result.throttled_init[size] = instance.init["wall"]
                result.throttled[size] = instance.run(key)["wall"]
            finally:
                instance.close()
                limit.close()
    return measured


def _configured_sizes() -> dict[str, dict[str, int]]:
    config = json.loads((PROJECT / ".chalice" / "config.json").read_text())
    return {stage: {fn: settings.get("lambda_memory_size", 128) for fn, settings in
                    config["stages"][stage].get("lambda_functions", {}).items()} for stage in ("dev", "prod")}


def run() -> str:
    from bench.mapreduce import FakeProvider
    from devstack.emulator import Emulator, free_port
    from devstack.resources import provision

    logs = PROJECT / ".local" / "bench-lambdasize"
    logs.mkdir(parents=True, exist_ok=True)
    os.environ["MOTO_SQS_ENFORCE_STRICT_QUEUE_PURGE_BEHAVIOUR"] = "false"
    emulator = Emulator(free_port(), logs / "emulator.log").start()
    try:
        _pin(emulator.pid, {1})
        provision(emulator.url, stage=STAGE, bucket=BUCKET, s3_notifications=[], visibility_timeout=900)
        with FakeProvider(LATENCY_SECONDS) as fake:
            assert fake._process.pid is not None  # started by its context manager
            _pin(fake._process.pid, {1})
            measured = _measure_all(_environment(emulator.url, fake.base_url), logs)
    finally:
        emulator.stop()
    return _report(measured)


def _fits(peak_mb: float, size_mb: int) -> bool:
    return peak_mb + RUNTIME_MB <= size_mb


def _duration(m: Measured, size: int) -> float:
    """The throttled measurement where there is one, else the model."""
    return m.throttled.get(size, modelled(m.median(m.runs), size))


def _report(measured: dict[str, Measured]) -> str:
    throttled = any(m.throttled for m in measured.values())
    sizes = " | ".join(f"{s} MB" + ("" if s in SIZES_MB else " *") for s in ALL_SIZES_MB)
    columns = " --- |" * len(ALL_SIZES_MB)
    lines = [f"Duration of one warm invocation at each memory size, modelled from {RUNS} runs on one unthrottled core "
             "(median)" + (", and in parentheses measured once under a CFS quota of the size's CPU share"
                           if throttled else "; no writable cgroup CPU controller, so nothing was throttled")
             + f". * modelled only. \"no\": peak memory + {RUNTIME_MB} MB of runtime does not fit.", "",
             f"| function: invocation | peak MB | CPU s | waits s | {sizes} |", "| --- | --- | --- | --- |" + columns]
    for scenario in SCENARIOS:
        m = measured[scenario.key]
        median = m.median(m.runs)
        cells = []
        for size in ALL_SIZES_MB:
            cell = _seconds(modelled(median, size)) if _fits(m.peak_mb, size) else "no"
            if size in m.throttled:
                cell += f" ({_seconds(m.throttled[size])})"
            cells.append(cell)
        cpu = median["cpu_own"] + median["cpu_children"]
        lines.append(f"| {scenario.name} | {m.peak_mb:.0f} | {cpu:.3f} | {max(median['wall'] - cpu, 0):.3f} | "
                     + " | ".join(cells) + " |")
    lines += ["", "Cold start: `import app` (Lambda's init phase), then the instance's first invocation, which loads "
              "what the function imports lazily; modelled (throttled in parentheses):", "",
              f"| function | {sizes} |", "| --- |" + columns]
    for key, label in (("api_submit", "API"), ("worker_small", "worker (4-page PDF)"), ("upload", "upload"),
                       ("dead_letters", "dead letters")):
        if key not in measured:
            continue
        m = measured[key]
        for phase, runs, throttled_runs in (("import app", m.init, m.throttled_init),
                                            ("first invocation", m.first, m.throttled_first)):
            run = m.median(runs)
            lines.append(f"| {label}: {phase} | " + " | ".join(
                _seconds(modelled(run, s)) + (f" ({_seconds(throttled_runs[s])})" if s in throttled_runs else "")
                for s in ALL_SIZES_MB) + " |")
    lines += ["", f"Cost per 1,000 jobs, USD (x86, us-east-1: ${PRICE_GB_SECOND} per GB-s, "
              f"${PRICE_REQUEST * 1e6:.2f} per million requests; the API serves a submission and {POLLS_PER_JOB} "
              "status polls per job), from the throttled durations where measured, else the modelled ones; the "
              "cheapest size that fits in bold:", "",
              f"| function: invocation | {sizes} | configured (dev / prod) |", "| --- |" + columns + " --- |"]
    configured = _configured_sizes()
    for scenario in SCENARIOS:
        m = measured[scenario.key]
        costs = {s: cost_per_thousand_jobs(_duration(m, s), s, scenario.invocations_per_job)
                 for s in ALL_SIZES_MB if _fits(m.peak_mb, s)}
        cheapest = min(costs.values())
        cells = [("no" if s not in costs else f"**{costs[s]:.4f}**" if costs[s] == cheapest else f"{costs[s]:.4f}")
                 for s in ALL_SIZES_MB]
        lines.append(f"| {scenario.name} | " + " | ".join(cells) + f" | {configured['dev'][scenario.function]} / "
                     f"{configured['prod'][scenario.function]} MB |")
    lines.append(f"\nFake provider latency {LATENCY_SECONDS} s per call, 16 calls at once. Provisioned concurrency "
                 f"costs ${PRICE_PROVISIONED_GB_SECOND} per GB-s provisioned (and "
                 f"${PRICE_PROVISIONED_DURATION_GB_SECOND} per GB-s of duration): one 512 MB API instance, "
                 f"${_monthly_provisioned(512):.2f} a month.")
    return "\n".join(lines)


def _monthly_provisioned(size_mb: int, instances: int = 1) -> float:
    return instances * size_mb / 1024 * 730 * 3600 * PRICE_PROVISIONED_GB_SECOND


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--runner", action="store_true")
    parser.add_argument("--cgroup", default="")
    parser.add_argument("--core", default="")
    arguments = parser.parse_args()
    if arguments.runner:
        sys.exit(runner_main(arguments.cgroup, arguments.core))
    sys.path.insert(0, str(PROJECT))
    print(run())
