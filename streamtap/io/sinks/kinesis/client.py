"""boto3 for the Kinesis sink: building a client, listing shards, telling errors apart.

Credentials and region come from the standard AWS chain (environment variables, the shared
config and credentials files with AWS_PROFILE, container and instance roles); streamtap never
reads, stores or logs them. An endpoint on loopback (`streamtap services up kinesis`) gets
placeholder credentials when the chain has none, since the moto server does not check them.

botocore's own retries are off (one attempt per call): the writer retries by itself, record by
record, so that it counts what it retried and keeps each stream in order.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any
from urllib.parse import urlparse

__all__ = [
    "RETRIABLE_CODES",
    "THROTTLE_CODES",
    "describe_error",
    "error_code",
    "is_open",
    "is_retriable",
    "is_throttle",
    "list_shards",
    "make_client",
]

# Error codes (of a whole call, or of one record in a PutRecords answer) that mean "too fast".
THROTTLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "LimitExceededException",
        "ThrottlingException",
        "KMSThrottlingException",
        "SlowDown",
    }
)
# Codes worth retrying besides throttling: the service's own transient failures.
RETRIABLE_CODES = THROTTLE_CODES | {
    "InternalFailure",
    "InternalFailureException",
    "InternalServerError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "RequestTimeout",
    "RequestTimeoutException",
    "ExpiredIteratorException",
}

_LOCAL_CREDENTIALS = "streamtap-local"


def make_client(region: str | None, endpoint_url: str | None, read_timeout: float = 30.0):
    """A boto3 Kinesis client from the standard AWS chain (no I/O until its first call).

    Raises ValueError with the fix when no region is configured anywhere.
    """
    import boto3
    from botocore.config import Config
    from botocore.exceptions import NoRegionError

    session = boto3.session.Session()
    credentials: dict[str, str] = {}
    if endpoint_url and _is_loopback(endpoint_url) and not _has_configured_credentials(session):
        credentials = {
            "aws_access_key_id": _LOCAL_CREDENTIALS,
            "aws_secret_access_key": _LOCAL_CREDENTIALS,
        }
    if (
        region is None
        and session.region_name is None
        and endpoint_url
        and _is_loopback(endpoint_url)
    ):
        region = "us-east-1"  # a local endpoint serves any region
    config = Config(
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=10,
        read_timeout=read_timeout,
        max_pool_connections=8,
        user_agent_extra="streamtap",
    )
    try:
        return session.client(
            "kinesis", region_name=region, endpoint_url=endpoint_url, config=config, **credentials
        )
    except NoRegionError:
        raise ValueError(
            "no AWS region: set the sink's region (e.g. region: us-east-1), or AWS_REGION, or a "
            "region in the AWS profile"
        ) from None


def _has_configured_credentials(session) -> bool:
    """True if the environment or a profile holds credentials.

    Checked without resolving the whole chain, whose last step asks the EC2 instance metadata
    service over the network: a loopback endpoint must not make streamtap reach out there.
    """
    if os.environ.get("AWS_ACCESS_KEY_ID") or os.environ.get("AWS_PROFILE"):
        return True
    return bool(session.available_profiles)


def _is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def error_code(error: BaseException) -> str:
    """The AWS error code of a botocore ClientError ('' for other errors)."""
    response = getattr(error, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))


def _http_status(error: BaseException) -> int:
    response = getattr(error, "response", None)
    if not isinstance(response, dict):
        return 0
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def is_throttle(error: BaseException) -> bool:
    return error_code(error) in THROTTLE_CODES


def is_retriable(error: BaseException) -> bool:
    """True for throttling, the service's transient failures and a network that fails."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    if isinstance(error, ClientError):
        return error_code(error) in RETRIABLE_CODES or _http_status(error) >= 500
    if isinstance(error, NoCredentialsError):
        return False
    # EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError, ...
    return isinstance(error, (BotoCoreError, OSError))


def describe_error(error: BaseException, stream: str, endpoint: str) -> str:
    """What went wrong, in words a user can act on (never with credentials)."""
    from botocore.exceptions import ClientError, NoCredentialsError

    where = f"Kinesis stream {stream!r} at {endpoint}"
    if isinstance(error, NoCredentialsError):
        return (
            f"no AWS credentials for {where}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            "or AWS_PROFILE, or run where an instance or container role applies"
        )
    code = error_code(error)
    if code == "ResourceNotFoundException":
        return f"{where} does not exist: create it, or set the sink's create_stream: true"
    if code in (
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
    ):
        return f"{where} refused the credentials of the AWS chain ({code}): check their permissions"
    if isinstance(error, ClientError):
        message = error.response.get("Error", {}).get("Message", "")
        return f"{where}: {code or 'error'}: {message}".rstrip(": ")
    return f"cannot reach {where}: {error}"


def list_shards(client, stream: str) -> list[dict[str, Any]]:
    """Every shard of the stream, open and closed (parents of a reshard), in ListShards order."""
    shards: list[dict[str, Any]] = []
    response = client.list_shards(StreamName=stream)
    shards += response.get("Shards", [])
    while response.get("NextToken"):
        response = client.list_shards(NextToken=response["NextToken"])
        shards += response.get("Shards", [])
    return shards


def is_open(shard: dict[str, Any]) -> bool:
    """A shard still takes records until a reshard closes it (it then has an ending sequence)."""
    return "EndingSequenceNumber" not in shard.get("SequenceNumberRange", {})
