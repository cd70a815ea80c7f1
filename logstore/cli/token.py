"""``logstore token``: make bearer tokens and the hashes the broker's security file stores."""

from __future__ import annotations

import argparse
import secrets
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "token",
        help="make tokens and token hashes for the security file",
        description="Bearer tokens: the client sends the token, the broker stores only its SHA-256.",
    )
    commands = parser.add_subparsers(dest="token_command", metavar="COMMAND")
    commands.required = True
    new = commands.add_parser("new", help="print a new random token and its sha256",
                              description="Print a new random token and the line for the security file.")
    new.add_argument("principal", help="the principal the token identifies")
    new.set_defaults(func=run_new)
    hashed = commands.add_parser("hash", help="print the sha256 of a token read from stdin",
                                 description="Read a token from stdin and print its sha256.")
    hashed.set_defaults(func=run_hash)


def run_new(args: argparse.Namespace) -> int:
    from logstore.server.auth import hash_token

    token = secrets.token_urlsafe(32)
    print(f"token: {token}")
    print(f"\n[principals.{args.principal}]\ntoken_sha256 = \"{hash_token(token)}\"")
    return 0


def run_hash(args: argparse.Namespace) -> int:
    from logstore.server.auth import hash_token

    token = sys.stdin.readline().strip()
    if not token:
        print("logstore: error: no token on stdin (INVALID_REQUEST)", file=sys.stderr)
        return 1
    print(hash_token(token))
    return 0
