#!/usr/bin/env python3
"""The AWS side of the local demo, against moto (AWS_ENDPOINT_URL from target/stack/env).

  aws_local.py put-parameter NAME VALUE     create or overwrite an SSM parameter
  aws_local.py subscribe URL                subscribe an HTTP endpoint to $SSM_RESYNC_TOPIC_ARN
  aws_local.py unsubscribe URL              remove that subscription again
  aws_local.py publish FILE|-               publish a message (the EventBridge event JSON)
  aws_local.py create-queue NAME            create an SQS queue subscribed to the topic (raw
                                            delivery off, as infra/ subscribes it); print its URL

Real AWS emits the "Parameter Store Change" event itself; moto does not, so the demo
publishes the event JSON to the topic the way the EventBridge rule would.
"""
import os
import sys

import boto3


def client(service):
    return boto3.client(
        service,
        endpoint_url=os.environ["AWS_ENDPOINT_URL"],
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
    )


def topic():
    return os.environ["SSM_RESYNC_TOPIC_ARN"].split(",")[0]


def subscriptions(endpoint):
    sns = client("sns")
    for page in sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=topic()):
        for sub in page["Subscriptions"]:
            if sub["Endpoint"] == endpoint:
                yield sub["SubscriptionArn"]


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "put-parameter" and len(args) == 2:
        out = client("ssm").put_parameter(Name=args[0], Value=args[1], Type="SecureString", Overwrite=True)
        print(f"ssm: {args[0]} is now version {out['Version']}")
    elif cmd == "subscribe" and len(args) == 1:
        if any(True for _ in subscriptions(args[0])):
            print(f"sns: {args[0]} already subscribed to {topic()}")
            return
        out = client("sns").subscribe(TopicArn=topic(), Protocol="http", Endpoint=args[0])
        print(f"sns: subscribed {args[0]} ({out['SubscriptionArn']})")
    elif cmd == "unsubscribe" and len(args) == 1:
        for arn in list(subscriptions(args[0])):
            client("sns").unsubscribe(SubscriptionArn=arn)
            print(f"sns: unsubscribed {arn}")
    elif cmd == "publish" and len(args) == 1:
        message = sys.stdin.read() if args[0] == "-" else open(args[0]).read()
        out = client("sns").publish(TopicArn=topic(), Message=message.strip())
        print(f"sns: published {out['MessageId']} to {topic()}")
    elif cmd == "create-queue" and len(args) == 1:
        sqs = client("sqs")
        url = sqs.create_queue(QueueName=args[0])["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        if not any(True for _ in subscriptions(arn)):
            client("sns").subscribe(TopicArn=topic(), Protocol="sqs", Endpoint=arn)
        print(url)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
