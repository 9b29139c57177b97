"""AWS's event payloads, one JSON file per event source, in the shape each service delivers them to Lambda.

Every test that hands a handler an event starts from one of these files and changes only what its case needs, so
handlers are fed what AWS sends rather than dicts that drift from it (``tests/unit/test_events.py`` checks the
files against the recordings of other projects in ``../shared/corpus/events`` where present)::

    event = load("api-gateway-rest", body="not base64!", isBase64Encoded=True)
    event = sqs_event_of_bodies(['{"job_id": "…"}'], receive_count=2)
"""

from __future__ import annotations

import base64
import copy
import json
import time
import urllib.parse
import uuid
from functools import cache
from pathlib import Path
from typing import Any

FOLDER = Path(__file__).resolve().parent
REGION = "us-east-1"
ACCOUNT = "123456789012"


@cache
def _read(name: str) -> dict[str, Any]:
    return json.loads((FOLDER / f"{name}.json").read_text())


def load(name: str, **top_level: Any) -> dict[str, Any]:
    """A fresh copy of the event ``name`` (``api-gateway-rest``, ``sqs-jobs``, ``s3-object-created``, ``scheduled``),
    with ``top_level`` keys replaced."""
    event = copy.deepcopy(_read(name))
    event.update(top_level)
    return event


def api_gateway_event(method: str, resource: str, *, path_parameters: dict[str, str] | None = None,
                      body: bytes | None = None, binary: bool = False, headers: dict[str, str] | None = None,
                      query: dict[str, str] | None = None, api_id: str = "rehearsal", api_key_id: str = "",
                      account: str = ACCOUNT, region: str = REGION) -> dict[str, Any]:
    """An API Gateway REST API proxy request (payload 1.0), as API Gateway sends it after checking the API key.

    A ``binary`` body (a media type the API lists as binary, like application/pdf) arrives base64-encoded.
    """
    event = load("api-gateway-rest")
    path = resource
    for name, value in (path_parameters or {}).items():
        path = path.replace("{" + name + "}", urllib.parse.quote(value, safe=""))
    host = f"{api_id}.execute-api.{region}.amazonaws.com"
    headers = {"Host": host, "User-Agent": "docpipe-rehearsal", "X-Forwarded-Proto": "https", **(headers or {})}
    now = time.time()
    context = event["requestContext"]
    context.update(accountId=account, apiId=api_id, resourcePath=resource, httpMethod=method, path=f"/api{path}",
                   requestId=str(uuid.uuid4()), extendedRequestId=uuid.uuid4().hex[:16],
                   requestTime=time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
                   requestTimeEpoch=int(now * 1000), domainName=host, domainPrefix=api_id)
    context["identity"].update(userAgent=headers["User-Agent"], apiKeyId=api_key_id)
    event.update(
        resource=resource, path=path, httpMethod=method, headers=headers,
        multiValueHeaders={k: [v] for k, v in headers.items()}, queryStringParameters=query or None,
        multiValueQueryStringParameters={k: [v] for k, v in query.items()} if query else None,
        pathParameters=path_parameters or None,
        body=None if body is None else base64.b64encode(body).decode() if binary else body.decode(),
        isBase64Encoded=body is not None and binary)
    return event


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """Lambda's SQS event for messages received from the queue (``ReceiveMessage`` with all attributes)."""
    template = _read("sqs-jobs")["Records"][0]
    return {"Records": [{
        **copy.deepcopy(template), "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
        "attributes": m.get("Attributes", {}), "messageAttributes": m.get("MessageAttributes", {}),
        "md5OfBody": m["MD5OfBody"], "eventSourceARN": queue_arn, "awsRegion": queue_arn.split(":")[3],
    } for m in messages]}


def sqs_event_of_bodies(bodies: list[str], *, receive_count: int = 1,
                        queue: str = "docpipe-test-jobs") -> dict[str, Any]:
    """An SQS event for messages with these bodies, each with its own message id (Chalice's generator repeats one) and
    a receipt handle ``handle-N`` that stands for no real message."""
    template = _read("sqs-jobs")["Records"][0]
    now = str(int(time.time() * 1000))
    records = []
    for i, body in enumerate(bodies):
        record = copy.deepcopy(template)
        record.update(messageId=str(uuid.uuid4()), receiptHandle=f"handle-{i}", body=body,
                      eventSourceARN=f"arn:aws:sqs:{REGION}:{ACCOUNT}:{queue}")
        record["attributes"].update(ApproximateReceiveCount=str(receive_count), SentTimestamp=now,
                                    ApproximateFirstReceiveTimestamp=now)
        records.append(record)
    return {"Records": records}


def s3_event(bucket: str, key: str, *, size: int, etag: str, account: str = ACCOUNT,
             region: str = REGION) -> dict[str, Any]:
    """S3's ``ObjectCreated:Put`` notification to Lambda (the key URL-encoded, as S3 sends it)."""
    event = load("s3-object-created")
    record = event["Records"][0]
    record.update(awsRegion=region, eventTime=time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                  userIdentity={"principalId": f"AWS:{account}"})
    record["responseElements"].update({"x-amz-request-id": uuid.uuid4().hex[:16].upper(),
                                       "x-amz-id-2": uuid.uuid4().hex})
    record["s3"]["bucket"].update(name=bucket, ownerIdentity={"principalId": account}, arn=f"arn:aws:s3:::{bucket}")
    record["s3"]["object"].update(key=urllib.parse.quote_plus(key, safe="/"), size=size, eTag=etag.strip('"'),
                                  sequencer=f"{int(time.time() * 1000):016X}")
    return event


def scheduled_event(rule_arn: str, account: str = ACCOUNT, region: str = REGION) -> dict[str, Any]:
    """EventBridge's event for a schedule rule's target."""
    return load("scheduled", id=str(uuid.uuid4()), account=account, region=region, resources=[rule_arn],
                time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
