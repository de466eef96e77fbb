"""IAM set-up for tests/replication_iam.rs, against a moto server started with
INITIAL_NO_AUTH_ACTION_COUNT (moto enforces signatures and IAM policies only after that
many requests, so this script's own set-up requests must be the first ones).

    moto_iam.py setup ENDPOINT BUCKET   -> prints JSON: {"admin": [id, secret], "reader": [id, secret]}
    moto_iam.py probe ENDPOINT BUCKET KEY_ID SECRET KEY
                                        -> prints JSON: HTTP status of a PUT and a DELETE of KEY

`setup` makes exactly SETUP_REQUESTS requests: two users, their access keys and inline
policies (admin: everything; reader: s3:GetObject and s3:ListBucket on BUCKET only).

"""

import json
import sys

import boto3
from botocore.exceptions import ClientError

SETUP_REQUESTS = 6


def client(service, endpoint, key_id="unused", secret="unused"):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
    )


def user(iam, name, statements):
    iam.create_user(UserName=name)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    policy = {"Version": "2012-10-17", "Statement": statements}
    iam.put_user_policy(UserName=name, PolicyName=name, PolicyDocument=json.dumps(policy))
    return [key["AccessKeyId"], key["SecretAccessKey"]]


def setup(endpoint, bucket):
    iam = client("iam", endpoint)
    admin = user(iam, "site-admin", [{"Effect": "Allow", "Action": "*", "Resource": "*"}])
    reader = user(
        iam,
        "replica-pull",
        [
            # moto checks HEAD of a bucket as "s3:HeadBucket"; AWS as s3:ListBucket.
            {
                "Effect": "Allow",
                "Action": ["s3:ListBucket", "s3:HeadBucket"],
                "Resource": f"arn:aws:s3:::{bucket}",
            },
            {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": f"arn:aws:s3:::{bucket}/*"},
        ],
    )
    print(json.dumps({"admin": admin, "reader": reader}))


def status(call):
    try:
        return call()["ResponseMetadata"]["HTTPStatusCode"]
    except ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"]


def probe(endpoint, bucket, key_id, secret, key):
    s3 = client("s3", endpoint, key_id, secret)
    put = status(lambda: s3.put_object(Bucket=bucket, Key=key, Body=b"not allowed"))
    delete = status(lambda: s3.delete_object(Bucket=bucket, Key=key))
    get = status(lambda: s3.list_objects_v2(Bucket=bucket, MaxKeys=1))
    print(json.dumps({"put": put, "delete": delete, "list": get}))


if __name__ == "__main__":
    {"setup": setup, "probe": probe}[sys.argv[1]](*sys.argv[2:])
