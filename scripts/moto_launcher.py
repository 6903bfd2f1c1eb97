#!/usr/bin/env python3
"""Start moto's server (pinned moto[server]==5.2.1) with SNS HTTP deliveries that look like AWS's.

moto 5.2.1 as shipped signs each Notification with a per-subscription random key and mints
a new SigningCertURL plus a new self-signed certificate for every message, so a service
that pins a certificate URL (as it should) can never verify it. This launcher patches
`moto.sns.models.Subscription` before serving:

* `private_key()` returns one fixed RSA key, loaded from --sign-key (PKCS#8 PEM);
* `get_post_data()` sets SigningCertURL to the fixed --cert-url (not covered by the
  signature), signs the correct SNS string to sign (moto leaves Subject out of it), and
  uses the subscription's real ARN in UnsubscribeURL;
* the HTTP(S) branch of `publish()` sends the body as JSON text with the headers real SNS
  sends: x-amz-sns-message-type, -message-id, -topic-arn, -subscription-arn, and
  Content-Type text/plain; charset=UTF-8 (moto sends none of the x-amz-sns-* headers).

It also patches one Secrets Manager fidelity gap the oracle test met
(`moto.secretsmanager.models.SecretsManagerBackend.update_secret_version_stage`): moto
5.2.1 moves the AWSCURRENT label but leaves the secret's default version on the newest one,
so BatchGetSecretValue (what ESO's `find` by path and by tags calls) keeps answering the old
AWSCURRENT, and the next PutSecretValue leaves two versions labelled AWSCURRENT (AWS moves
the label, and AWSPREVIOUS with it). The patch makes the version AWSCURRENT moved to the
default, as AWS answers.

With --cert-file, moto also serves that certificate at /<file name of --cert-url>
(moto only answers that path for a request carrying an AWS4 Authorization header).

Usage: moto_launcher.py --host 127.0.0.1 --port 15000 --sign-key key.pem --cert-url URL
"""

import argparse
import base64
import contextvars
import json
import signal
import sys
from typing import Any
from urllib.parse import urlsplit

import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

import moto
import moto.secretsmanager.models as sm_models
import moto.sns.models as sns_models
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server

MOTO_VERSION = "5.2.1"

# Keys a Notification's signature covers, in the order SNS signs them: the string to sign is
# each key present (Subject only when set) and its value, each followed by a newline. moto
# only ever builds Notifications.
NOTIFICATION_SIGNED_KEYS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")

# The subscription whose publish() is running, for the headers of its HTTP POST.
_delivering = contextvars.ContextVar("_delivering", default=None)


def string_to_sign(body: dict[str, Any]) -> str:
    return "".join(f"{k}\n{body[k]}\n" for k in NOTIFICATION_SIGNED_KEYS if k in body)


def patch_moto(sign_key_pem: bytes, cert_url: str, cert_pem: bytes | None) -> None:
    key = serialization.load_pem_private_key(sign_key_pem, password=None)
    cert_name = urlsplit(cert_url).path.rsplit("/", 1)[-1]
    Subscription = sns_models.Subscription
    original_get_post_data = Subscription.get_post_data
    original_publish = Subscription.publish

    def private_key(self: Any) -> Any:
        return key

    def get_post_data(self: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        data = original_get_post_data(self, *args, **kwargs)
        # moto stored a fresh certificate per message under its random name: drop it
        # (it would pile up) and serve ours under the fixed name instead.
        keys = sns_models.sns_backends[sns_models.DEFAULT_ACCOUNT_ID][
            self.topic.sns_backend.region_name
        ]._message_public_keys
        keys.pop(data["SigningCertURL"].rsplit("/", 1)[-1], None)
        if cert_pem is not None:
            keys[cert_name] = cert_pem
        data["SigningCertURL"] = cert_url
        data["Signature"] = base64.b64encode(
            key.sign(string_to_sign(data).encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
        ).decode("ascii")
        region = self.topic.sns_backend.region_name
        data["UnsubscribeURL"] = (
            f"https://sns.{region}.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={self.arn}"
        )
        return data

    def publish(self: Any, *args: Any, **kwargs: Any) -> None:
        token = _delivering.set(self)
        try:
            return original_publish(self, *args, **kwargs)
        finally:
            _delivering.reset(token)

    class RequestsWithSnsHeaders:
        """Stands in for `requests` inside moto.sns.models; only publish()'s http branch posts."""

        def __getattr__(self, name: str) -> Any:
            return getattr(requests, name)

        @staticmethod
        def post(url: str, **kw: Any) -> Any:
            sub = _delivering.get()
            if sub is None or not isinstance(kw.get("json"), dict):
                return requests.post(url, **kw)
            body = kw.pop("json")
            kw["headers"] = {
                "Content-Type": "text/plain; charset=UTF-8",
                "x-amz-sns-message-type": body["Type"],
                "x-amz-sns-message-id": body["MessageId"],
                "x-amz-sns-topic-arn": body["TopicArn"],
                "x-amz-sns-subscription-arn": sub.arn,
                "User-Agent": "Amazon Simple Notification Service Agent",
            }
            return requests.post(url, data=json.dumps(body, ensure_ascii=False).encode("utf-8"), **kw)

    Subscription.private_key = private_key
    Subscription.get_post_data = get_post_data
    Subscription.publish = publish
    sns_models.requests = RequestsWithSnsHeaders()


def patch_secrets_manager() -> None:
    Backend = sm_models.SecretsManagerBackend
    original = Backend.update_secret_version_stage

    def update_secret_version_stage(
        self: Any, secret_id: str, version_stage: str, remove_from_version_id: str, move_to_version_id: str
    ) -> tuple[str, str]:
        out = original(self, secret_id, version_stage, remove_from_version_id, move_to_version_id)
        if version_stage == "AWSCURRENT" and move_to_version_id:
            self.secrets[secret_id].set_default_version_id(move_to_version_id)
        return out

    Backend.update_secret_version_stage = update_secret_version_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--sign-key", required=True, help="RSA private key, PKCS#8 PEM")
    parser.add_argument("--cert-url", required=True, help="SigningCertURL put on every message")
    parser.add_argument("--cert-file", help="certificate PEM moto serves under the URL's name")
    args = parser.parse_args()

    if moto.__version__ != MOTO_VERSION:
        sys.exit(f"moto_launcher: needs moto {MOTO_VERSION} (patches its internals), found {moto.__version__}")

    with open(args.sign_key, "rb") as f:
        sign_key = f.read()
    cert_pem = None
    if args.cert_file:
        with open(args.cert_file, "rb") as f:
            cert_pem = f.read()
    patch_moto(sign_key, args.cert_url, cert_pem)
    patch_secrets_manager()

    def stop(signum: int, frame: Any) -> None:
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(args.host, args.port, app, threaded=True)
    print(f"moto_launcher: moto {moto.__version__} listening on http://{args.host}:{args.port}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
