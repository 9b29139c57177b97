import json


def test_health_answers_ok(client):
    response = client.http.get("/health")
    assert response.status_code == 200
    assert response.json_body["status"] == "ok"


def test_text_job_is_accepted_and_processed_by_the_worker(client, services, sqs, drain_queue):
    response = client.http.post("/jobs", headers={"content-type": "application/json"},
                                body=json.dumps({"document": {"text": "Lighthouses guide ships at night. " * 40},
                                                 "task": {"type": "summarize"}}))
    assert response.status_code == 202, response.body
    job_id = response.json_body["job_id"]
    messages = sqs.receive_message(QueueUrl=drain_queue, MaxNumberOfMessages=10,
                                   MessageSystemAttributeNames=["All"])["Messages"]
    from tests.events import sqs_event_of_bodies as sqs_event

    event = sqs_event([m["Body"] for m in messages])
    result = client.lambda_.invoke("process_jobs", event).payload
    assert result == {"batchItemFailures": []}
    assert services.jobs.get(job_id).status == "SUCCEEDED"
