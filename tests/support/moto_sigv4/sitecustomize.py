"""Loaded (via PYTHONPATH) only by the moto server of tests/replication_iam.rs, which runs
with IAM enforcement on. Fixes how moto checks SigV4 signatures: it rebuilds the request
from the URL its web framework hands it, where `%2F` in the query is already decoded to
`/`, and signs that raw query; clients (boto3 and the AWS SDK for Rust alike) sign the
canonical form, `prefix=a%2Fb%2F`. Every ListObjectsV2 with a prefix would be refused
with SignatureDoesNotMatch. Re-encoding the query as SigV4 prescribes before moto signs
it makes moto check what a real S3 server checks. Nothing else about moto changes.
"""

from urllib.parse import quote, unquote, urlsplit, urlunsplit

import moto.iam.access_control as _access_control

_original = _access_control.IAMRequestBase._create_aws_request


def _canonical(part):
    return quote(unquote(part), safe="-_.~")


def _create_aws_request(self):
    request = _original(self)
    parts = urlsplit(request.url)
    if parts.query:
        pairs = []
        for pair in parts.query.split("&"):
            key, sep, value = pair.partition("=")
            pairs.append(_canonical(key) + sep + _canonical(value))
        request.url = urlunsplit(parts._replace(query="&".join(pairs)))
    return request


_access_control.IAMRequestBase._create_aws_request = _create_aws_request
