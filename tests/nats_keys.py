"""NATS credentials made for the tests with the nkeys package: a user's nkey seed, and the
operator, account and user JWTs of decentralised auth, with the .creds file that holds a user's.

A JWT here is what nsc makes: a header naming the ed25519-nkey algorithm, the claims (issuer
and subject public keys, ``nats`` with the type and version 2), and the issuer's Ed25519
signature of both, each in unpadded base64url.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time

import nkeys


class Key:
    """An nkey of one role (user, account, operator): its seed and public key."""

    def __init__(self, prefix: int = nkeys.PREFIX_BYTE_USER) -> None:
        self.seed = nkeys.encode_seed(os.urandom(32), prefix).decode()
        self._pair = nkeys.from_seed(bytearray(self.seed.encode()))
        self.public = self._pair.public_key.decode()

    def sign(self, data: bytes) -> bytes:
        return self._pair.sign(data)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(issuer: Key, subject: Key, name: str, nats: dict) -> str:
    """A JWT about ``subject``, signed by ``issuer``."""
    claims = {"iat": int(time.time()), "iss": issuer.public, "name": name, "sub": subject.public}
    claims["nats"] = {**nats, "version": 2}
    digest = hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).digest()
    claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
    signed = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode()) + "."
    signed += _b64(json.dumps(claims).encode())
    return f"{signed}.{_b64(issuer.sign(signed.encode()))}"


UNLIMITED = {"subs": -1, "data": -1, "payload": -1}


def creds_file(user_jwt: str, seed: str) -> str:
    """A .creds file as nsc writes it."""
    return (
        f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n"
        "*************************************************************\n"
    )


class Operator:
    """An operator with one account: nats-server's configuration, and users' .creds files."""

    def __init__(self) -> None:
        self.key = Key(nkeys.PREFIX_BYTE_OPERATOR)
        self.account = Key(nkeys.PREFIX_BYTE_ACCOUNT)
        limits = {**UNLIMITED, "imports": -1, "exports": -1, "wildcards": True, "conn": -1, "leaf": -1}
        self.jwt = jwt(self.key, self.key, "livecam-test", {"type": "operator"})
        self.account_jwt = jwt(
            self.key, self.account, "site", {"type": "account", "limits": limits, "default_permissions": {}}
        )

    def server_config(self) -> str:
        """Trust this operator, with its account's JWT preloaded (no account server)."""
        return (
            f'operator: "{self.jwt}"\nresolver: MEMORY\n'
            f'resolver_preload: {{ {self.account.public}: "{self.account_jwt}" }}\n'
        )

    def user_creds(self, name: str, account: Key | None = None) -> tuple[str, Key]:
        """A new user of the account (or of ``account``, one the server does not know): its
        .creds file's text and its key."""
        user = Key()
        user_jwt = jwt(
            account or self.account, user, name, {"type": "user", **UNLIMITED, "pub": {}, "sub": {}}
        )
        return creds_file(user_jwt, user.seed), user
