"""Prepares moto's server for tests/aws_sigv4.rs: an IAM user with an access key (made by the
unauthenticated requests the server allows first), then, with that key, an S3 bucket holding
a JSON export of COUNT records (`exports/records.json`).

Usage: setup.py ENDPOINT COUNT. Prints the access key id and secret, one per line.
"""

import json
import sys

import boto3

endpoint, count = sys.argv[1], int(sys.argv[2])
region = "us-east-1"
iam = boto3.client(
    "iam",
    endpoint_url=endpoint,
    region_name=region,
    aws_access_key_id="bootstrap",
    aws_secret_access_key="bootstrap",
)
iam.create_user(UserName="tributary")
iam.put_user_policy(
    UserName="tributary",
    PolicyName="everything",
    PolicyDocument=json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
        }
    ),
)
key = iam.create_access_key(UserName="tributary")["AccessKey"]
s3 = boto3.client(
    "s3",
    endpoint_url=endpoint,
    region_name=region,
    aws_access_key_id=key["AccessKeyId"],
    aws_secret_access_key=key["SecretAccessKey"],
)
s3.create_bucket(Bucket="tributary-test")
records = [{"id": n, "name": f"record-{n}"} for n in range(count)]
s3.put_object(
    Bucket="tributary-test",
    Key="exports/records.json",
    Body=json.dumps(records).encode(),
    ContentType="application/json",
)
print(key["AccessKeyId"])
print(key["SecretAccessKey"])
